package explore

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/cart"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// resolves says whether the engine resolves outcome_unknown by itself
// (contract v1.2, Resolution: processor.Config.ResolveAfter): the checker
// then requires it, and a seed waits for it after the quiesce.
const resolves = true

// resolveAfter is the workers' RESOLVE_AFTER: short, so that a seed's
// unknown outcomes resolve within seconds.
const resolveAfter = 500 * time.Millisecond

// engineConfig is the processor configuration of a seed's workers: the
// contract's engine with short timings.
func engineConfig(s Settings, top messages.Topology, prefix string, failpoint func(processor.Failpoint, string) bool) *processor.Config {
	quick := processor.Backoff{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond,
		MaxElapsedTime: 2 * time.Second, MaxRetries: s.Retries}
	policy := &processor.Policy{Transient: quick, Ambiguous: quick, RateLimited: quick}
	return &processor.Config{
		Topology:     top,
		KeyPrefix:    prefix,
		DedupeWindow: dedupeWindow,
		ResultTTL:    time.Hour,
		AckWait:      ackWait,
		MaxTries:     s.MaxTries,
		Concurrency:  16,
		LockTTL:      lockTTL,
		LockedDelay:  lockedDelay,
		NakDelay:     nakDelay,
		MaxNakDelay:  maxNakDelay,
		// The refund registers a minute-long policy of its own; the
		// explorer's is short for both.
		Retry:            policy,
		RetryOverrides:   map[string]processor.RetryPolicy{messages.KindPaymentRefund: policy},
		DeadLetterMaxAge: time.Hour,
		ResolveAfter:     resolveAfter,
		Logger:           slog.New(slog.DiscardHandler),
		Failpoint:        failpoint,
	}
}

// engine is one worker: a processor with its own connections, which it
// closes when it stops.
type engine struct {
	p   *processor.Processor
	nc  *nats.Conn
	rdb *redis.Client
}

// newEngine connects to NATS at natsURL and to Redis at redisURL (d's, or
// the seed's proxies in front of them) and makes a processor serving
// payment.charge and payment.refund through prov, and cart.add.
func newEngine(natsURL, redisURL, name string, cfg *processor.Config, prov *provider) (testenv.Engine, error) {
	nc, err := nats.Connect(natsURL, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	rdb, err := testenv.ConnectRedis(redisURL)
	if err != nil {
		nc.Close()
		return nil, err
	}
	mux := processor.NewMux()
	charge.Register(mux, prov)
	refund.Register(mux, prov)
	cart.Register(mux, cfg.KeyPrefix)
	p, err := processor.New(nc, rdb, mux, cfg)
	if err != nil {
		nc.Close()
		_ = rdb.Close()
		return nil, err
	}
	return &engine{p: p, nc: nc, rdb: rdb}, nil
}

func (e *engine) Start(ctx context.Context) error {
	if err := e.p.Start(ctx); err != nil {
		e.close()
		return err
	}
	return nil
}

func (e *engine) Stop(ctx context.Context) error {
	err := e.p.Stop(ctx)
	e.close()
	return err
}

func (e *engine) close() {
	e.nc.Close()
	if err := e.rdb.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return
	}
}
