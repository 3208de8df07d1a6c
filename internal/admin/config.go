package admin

import (
	"cmp"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Defaults of Config.
const (
	ScanLimitDefault         = 10_000
	LookupConcurrencyDefault = 16
	ReplayConcurrencyDefault = 8
	ResultTimeoutDefault     = 30 * time.Second
	AuditMaxLenDefault       = 10_000
)

// Config configures an Admin. The zero value works against a deployment
// with the contract's defaults.
type Config struct {
	// Topology names the streams and subjects. Defaults to the contract's.
	Topology messages.Topology
	// KeyPrefix is the workers' Redis key prefix (REDIS_KEY_PREFIX).
	// Defaults to "".
	KeyPrefix string
	// ScanLimit bounds the dead letters one listing or one key's
	// inspection reads: the newest ScanLimit of the stream. Defaults to
	// 10000.
	ScanLimit int
	// LookupConcurrency is how many lookups of keys' states a listing has
	// in flight. Defaults to 16.
	LookupConcurrency int
	// ReplayConcurrency is how many replays of a bulk replay are in flight
	// (each waits for its answer). Defaults to 8.
	ReplayConcurrency int
	// ResultTimeout bounds one replay's wait for its answer. Defaults to
	// 30s.
	ResultTimeout time.Duration
	// AuditMaxLen is about how many entries the audit stream keeps (older
	// ones are trimmed). Defaults to 10000.
	AuditMaxLen int64
	// Logger receives the client's diagnostics. Defaults to none.
	Logger *slog.Logger
}

// WithDefaults returns a copy with every zero field set to its default.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	out := *c
	out.Topology = out.Topology.WithDefaults()
	out.ScanLimit = cmp.Or(out.ScanLimit, ScanLimitDefault)
	out.LookupConcurrency = cmp.Or(out.LookupConcurrency, LookupConcurrencyDefault)
	out.ReplayConcurrency = cmp.Or(out.ReplayConcurrency, ReplayConcurrencyDefault)
	out.ResultTimeout = cmp.Or(out.ResultTimeout, ResultTimeoutDefault)
	out.AuditMaxLen = cmp.Or(out.AuditMaxLen, AuditMaxLenDefault)
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return &out
}

func (c *Config) validate() error {
	switch {
	case c.ScanLimit < 1:
		return errors.New("admin: ScanLimit must be at least 1")
	case c.LookupConcurrency < 1:
		return errors.New("admin: LookupConcurrency must be at least 1")
	case c.ReplayConcurrency < 1:
		return errors.New("admin: ReplayConcurrency must be at least 1")
	case c.AuditMaxLen < 1:
		return errors.New("admin: AuditMaxLen must be at least 1")
	}
	return c.Topology.Validate()
}

// Admin does what an operator does by hand. It is safe for concurrent
// use.
type Admin struct {
	cfg    *Config
	nc     *nats.Conn
	js     jetstream.JetStream
	client *client.Client
	rdb    redis.UniversalClient
}

// ErrNoRedis: the call needs Redis (a key's record, its lock, the
// resolution schedule, the audit log) and the Admin has none.
var ErrNoRedis = errors.New("admin: no Redis: this needs the workers' Redis (--redis-url)")

// New returns an Admin on nc and rdb. rdb may be nil: the dead-letter
// calls need NATS only; Inspect, UnknownKeys, Evict and AuditLog then
// return ErrNoRedis. It does no I/O.
func New(nc *nats.Conn, rdb redis.UniversalClient, cfg *Config) (*Admin, error) {
	if nc == nil {
		return nil, errors.New("admin: nil NATS connection")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(nc, &client.Config{Topology: cfg.Topology, ResultTimeout: cfg.ResultTimeout, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	return &Admin{cfg: cfg, nc: nc, js: js, client: cl, rdb: rdb}, nil
}

// Config returns the Admin's effective configuration.
func (a *Admin) Config() Config { return *a.cfg }

// HasRedis reports whether the Admin has a Redis client.
func (a *Admin) HasRedis() bool { return a.rdb != nil }
