package client

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/pkg/messages"
)

// Defaults of Config and RetryConfig.
const (
	// PublishTimeoutDefault bounds one publish attempt: the wait for its PubAck.
	PublishTimeoutDefault = 5 * time.Second
	// ResultTimeoutDefault bounds the wait for an answer after the publish.
	ResultTimeoutDefault = 30 * time.Second

	RetryInitialIntervalDefault = 100 * time.Millisecond
	RetryMaxIntervalDefault     = 2 * time.Second
	RetryMaxElapsedTimeDefault  = 30 * time.Second
	RetryMaxRetriesDefault      = 5
)

// Config configures a Client. The zero value works against workers started
// with the contract's defaults.
type Config struct {
	// Topology names the subjects commands and answers travel on and the
	// streams: the client publishes on <Subjects.Command>.<kind>, listens on
	// result.<key> and rejected.<key>, and reads a key's outcome from
	// ResultStream (last message per subject) after a duplicate PubAck and
	// in Status. Defaults to the contract's names.
	Topology messages.Topology

	// PublishTimeout bounds one publish attempt. When it passes without a
	// PubAck the outcome of the publish is unknown (the ack may be lost), so
	// the client publishes again with the same key; JetStream drops the copy
	// if the first one was stored. Defaults to 5s.
	PublishTimeout time.Duration

	// ResultTimeout bounds the wait for an answer once the command has been
	// accepted by JetStream. When it passes, Send returns ErrResultTimeout:
	// the command is stored and will still get an answer. Defaults to 30s.
	ResultTimeout time.Duration

	// DuplicateWait bounds the wait for the answer after a duplicate PubAck
	// of the first publish attempt (a later attempt's duplicate may be of
	// this Send's own earlier attempt, and is waited for like any answer)
	// when the result stream holds no outcome for the key yet: the earlier
	// message with the key is then still in flight, or ended without an
	// outcome (rejected, dead-lettered). Zero waits up to ResultTimeout,
	// like any answer. A negative value does not wait: Send returns the
	// Reply at once (Duplicate true, Stream and Sequence naming the earlier
	// message) with ErrResultTimeout, for a caller that decides itself what
	// a key still in flight means (the HTTP gateway answers 409). Defaults
	// to 0.
	DuplicateWait time.Duration

	// Tenant, when set, makes the client act for that tenant of the HTTP
	// gateway (contract v1.2, "Callers and tenants"): Send, Charge,
	// AddToCart, Refund and Status take the tenant's own keys (1-255
	// visible ASCII characters) and use ScopedKey(Tenant, key) as the
	// operation's key, so that the tenant's commands and the gateway's
	// share one key space. 1-64 characters of [A-Za-z0-9_.-]. Defaults to
	// none: keys are operation keys, canonical UUIDs, used as they are.
	Tenant string

	// Retry is the backoff between publish attempts. Defaults to the
	// RetryConfig defaults.
	Retry RetryConfig

	// Logger receives a line per retried publish and per ignored answer. A
	// library stays quiet in its caller's process unless asked: defaults to
	// none.
	Logger *slog.Logger
	// TracerProvider makes a span per Send, "send <subject>", whose W3C
	// traceparent the command carries to the worker's span. Defaults to
	// otel.GetTracerProvider(): no spans until the program installs a
	// provider, though a span already in the caller's context still goes
	// out with the command.
	TracerProvider trace.TracerProvider
}

// RetryConfig is the exponential backoff between publish attempts of one
// command. Every attempt carries the same key, so a retry can never create a
// second command inside JetStream's duplicate window. Keep MaxElapsedTime
// well below the workers' dedupe window (2m by default); past it a retry is
// still safe, because the workers replay the stored outcome, but it costs a
// delivery.
type RetryConfig struct {
	// InitialInterval is the wait before the second attempt. Defaults to 100ms.
	InitialInterval time.Duration
	// MaxInterval caps the wait between two attempts. Defaults to 2s.
	MaxInterval time.Duration
	// MaxElapsedTime stops retrying once this long has passed since the first
	// attempt. Defaults to 30s.
	MaxElapsedTime time.Duration
	// MaxRetries is the number of attempts after the first one; a negative
	// value disables retries. Defaults to 5.
	MaxRetries int
}

// WithDefaults returns a copy of c with every unset field set to its default.
// A nil c gives the defaults.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	out := *c
	out.Topology = out.Topology.WithDefaults()
	out.PublishTimeout = cmp.Or(out.PublishTimeout, PublishTimeoutDefault)
	out.ResultTimeout = cmp.Or(out.ResultTimeout, ResultTimeoutDefault)
	out.Retry = out.Retry.withDefaults()
	if out.TracerProvider == nil {
		out.TracerProvider = otel.GetTracerProvider()
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return &out
}

func (r RetryConfig) withDefaults() RetryConfig {
	r.InitialInterval = cmp.Or(r.InitialInterval, RetryInitialIntervalDefault)
	r.MaxInterval = cmp.Or(r.MaxInterval, RetryMaxIntervalDefault)
	r.MaxElapsedTime = cmp.Or(r.MaxElapsedTime, RetryMaxElapsedTimeDefault)
	r.MaxRetries = cmp.Or(r.MaxRetries, RetryMaxRetriesDefault)
	return r
}

func (c *Config) validate() error {
	if err := c.Topology.Validate(); err != nil {
		return fmt.Errorf("client: Config.%s", strings.TrimPrefix(err.Error(), "messages: "))
	}
	switch {
	case c.Tenant != "" && !ValidTenant(c.Tenant):
		return fmt.Errorf("client: Config.Tenant %q: want 1-64 characters of [A-Za-z0-9_.-]", truncate(c.Tenant, 80))
	case c.PublishTimeout < 0:
		return errors.New("client: Config.PublishTimeout must not be negative")
	case c.ResultTimeout < 0:
		return errors.New("client: Config.ResultTimeout must not be negative")
	case c.Retry.InitialInterval < 0 || c.Retry.MaxInterval < 0 || c.Retry.MaxElapsedTime < 0:
		return errors.New("client: Config.Retry intervals must not be negative")
	case c.Retry.MaxInterval < c.Retry.InitialInterval:
		return errors.New("client: Config.Retry.MaxInterval must not be shorter than Config.Retry.InitialInterval")
	}
	return nil
}

// newBackOff returns a fresh backoff for one command: ExponentialBackOff is
// not safe for concurrent use and keeps per-sequence state.
func (r RetryConfig) newBackOff() backoff.BackOff {
	var b backoff.BackOff = backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.InitialInterval),
		backoff.WithMaxInterval(r.MaxInterval),
		backoff.WithMaxElapsedTime(r.MaxElapsedTime),
	)
	retries := max(r.MaxRetries, 0)
	return backoff.WithMaxRetries(b, uint64(retries))
}
