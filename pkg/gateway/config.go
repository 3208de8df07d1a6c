package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempay/idempay/pkg/messages"
)

// Defaults of Config.
const (
	// WaitDefault is HTTP_WAIT of the contract: how long a request waits
	// for the answer before 202 Accepted.
	WaitDefault = 10 * time.Second
	// PublishTimeoutDefault bounds one publish attempt (pkg/client's).
	PublishTimeoutDefault = 5 * time.Second
	// MaxBodySize is the largest request body accepted (64 KiB, the
	// contract's command limit); a larger one gets 413.
	MaxBodySize = messages.MaxBodySize
)

// Config configures a Gateway. The zero value works against workers
// started with the contract's defaults.
type Config struct {
	// Topology names the subjects and streams, as the workers use them.
	// Defaults to the contract's names.
	Topology messages.Topology

	// Wait bounds how long a POST waits for the command's answer; then the
	// gateway answers 202 Accepted with Location: /v1/results/{key}. The
	// command is stored and still runs. Defaults to 10s.
	Wait time.Duration

	// PublishTimeout bounds one publish attempt; an unconfirmed attempt is
	// repeated with the same key within Wait. Defaults to 5s.
	PublishTimeout time.Duration

	// AllowedOrigins are the web origins (scheme://host[:port]) whose
	// pages may call the API from a browser (CORS). "*" allows every
	// origin. The gateway's own checkout page is same-origin and needs no
	// entry. Defaults to none.
	AllowedOrigins []string

	// Registry receives the gateway's metrics (idempay_gateway_*), served
	// on /metrics. Defaults to a new registry with the Go runtime and
	// process collectors.
	Registry *prometheus.Registry

	// Logger receives a line per unexpected error (NATS trouble, a stored
	// message that cannot be read). Defaults to a text handler on stderr at
	// Warn level.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset field set to its
// default. A nil c gives the defaults.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	out := *c
	out.Topology = out.Topology.WithDefaults()
	out.Wait = cmp.Or(out.Wait, WaitDefault)
	out.PublishTimeout = cmp.Or(out.PublishTimeout, PublishTimeoutDefault)
	if out.Logger == nil {
		out.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return &out
}

func (c *Config) validate() error {
	if err := c.Topology.Validate(); err != nil {
		return fmt.Errorf("gateway: Config.%s", strings.TrimPrefix(err.Error(), "messages: "))
	}
	switch {
	case c.Wait < 0:
		return errors.New("gateway: Config.Wait must not be negative")
	case c.PublishTimeout < 0:
		return errors.New("gateway: Config.PublishTimeout must not be negative")
	}
	for _, o := range c.AllowedOrigins {
		if err := ValidOrigin(o); err != nil {
			return fmt.Errorf("gateway: Config.AllowedOrigins: %w", err)
		}
	}
	return nil
}

// ValidOrigin returns an error unless o is "*" or a web origin as browsers
// send it in the Origin header: scheme://host[:port], no path, no
// trailing slash.
func ValidOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin: want scheme://host[:port], e.g. https://shop.example.com", o)
	}
	return nil
}
