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

// Config configures a Gateway. Auth must be set; every other field has a
// default that works against workers started with the contract's.
type Config struct {
	// Auth tells who sent each /v1/ request, and so its tenant: APIKeys,
	// JWT, several of them in a Chain, or NoAuth() for tenant public
	// without credentials (GATEWAY_AUTH=none, for one's own machine only).
	// Required: a gateway never serves everyone by omission.
	Auth Authenticator

	// DefaultLimits are the limits of tenants without their own: every JWT
	// tenant, and the API-key tenants whose line sets none. A zero field
	// takes RateDefault, BurstDefault or ConcurrencyDefault.
	DefaultLimits Limits

	// SeparateOperations leaves /readyz and /metrics out of Handler: the
	// program serves them on an operator address of their own
	// (METRICS_ADDR), never to the internet. Defaults to false: Handler
	// serves them, as the contract lists them, so a deployment without an
	// operator address still answers them.
	SeparateOperations bool

	// StateBucket is the JetStream key-value bucket where the gateway
	// records accepted commands (202) and refusals, so that any replica,
	// and the same one after a restart, answers for them (see stateStore).
	// The gateway creates it on first use. Defaults to "idempay_gateway".
	StateBucket string
	// StateTTL is how long a record is kept. Defaults to 24h.
	StateTTL time.Duration
	// StateReplicas is the bucket's replicas in a NATS cluster. Defaults
	// to 1.
	StateReplicas int

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

	// Logger receives the audit line of every request (Info: request id,
	// tenant, key, status; never a secret) and a line per unexpected error
	// (NATS trouble, a stored message that cannot be read), with the
	// request's id. Defaults to a text handler on stderr at Warn level.
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
	out.DefaultLimits = out.DefaultLimits.withDefaults(Limits{Rate: RateDefault, Burst: BurstDefault, Concurrency: ConcurrencyDefault})
	out.StateBucket = cmp.Or(out.StateBucket, StateBucketDefault)
	out.StateTTL = cmp.Or(out.StateTTL, StateTTLDefault)
	out.StateReplicas = cmp.Or(out.StateReplicas, 1)
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
	case c.Auth == nil:
		return errors.New("gateway: Config.Auth is required: APIKeys, JWT, a Chain of them, or NoAuth() to serve everyone as tenant public")
	case c.Wait < 0:
		return errors.New("gateway: Config.Wait must not be negative")
	case c.PublishTimeout < 0:
		return errors.New("gateway: Config.PublishTimeout must not be negative")
	case c.StateTTL < time.Second:
		return errors.New("gateway: Config.StateTTL must be at least 1s")
	case c.StateReplicas < 1 || c.StateReplicas > 5:
		return errors.New("gateway: Config.StateReplicas must be 1 to 5")
	case !validBucket(c.StateBucket):
		return fmt.Errorf("gateway: Config.StateBucket %q: want letters, digits, _ and -", truncate(c.StateBucket, 80))
	}
	if err := c.DefaultLimits.validate("DefaultLimits"); err != nil {
		return err
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

// validBucket reports whether name is a JetStream key-value bucket name.
func validBucket(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := range len(name) {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
