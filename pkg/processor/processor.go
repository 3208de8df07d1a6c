package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/dedupe"
)

// ErrStop is the cause of the contexts a Processor cancels when it stops, so
// that work can tell "stopping" from "failed".
var ErrStop = errors.New("processor: stopping")

// Processor is a worker engine: it pulls commands from the shared durable
// consumer and runs each through lock, record check, operation, fenced
// commit, publish and ack. Run one per process; run as many processes as
// you like.
type Processor struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	rdb   redis.UniversalClient
	store *dedupe.Store
	mux   *Mux
	cfg   *Config
	log   logger

	mu         sync.Mutex
	started    bool
	fetchStop  context.CancelCauseFunc
	workCtx    context.Context //nolint:containedctx // the context of in-flight work: it outlives Start's ctx and is cancelled only by an expired Stop
	workCancel context.CancelCauseFunc
	wg         sync.WaitGroup // the fetch loop and every in-flight delivery
	loopDone   chan struct{}
	advisories *nats.Subscription
	stuck      chan stuckCommand // max-deliveries advisories waiting to be handled
	counters   counters
	stopped    chan struct{}
	stopOnce   sync.Once
}

// New returns a Processor that serves the handlers of mux. nc must be
// connected; rdb may be a single-node, Sentinel or Cluster client.
func New(nc *nats.Conn, rdb redis.UniversalClient, mux *Mux, cfg *Config) (*Processor, error) {
	switch {
	case nc == nil:
		return nil, errors.New("processor: nil NATS connection")
	case rdb == nil:
		return nil, errors.New("processor: nil Redis client")
	case mux == nil || len(mux.Kinds()) == 0:
		return nil, errors.New("processor: no handlers; register some on a Mux (see DefaultMux)")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("processor: jetstream: %w", err)
	}
	store, err := dedupe.New(rdb, &dedupe.Config{
		Namespace: cfg.KeyPrefix,
		Retention: cfg.ResultTTL,
		LockTTL:   cfg.LockTTL,
	})
	if err != nil {
		return nil, err
	}
	return &Processor{
		nc: nc, js: js, rdb: rdb, store: store, mux: mux, cfg: cfg,
		log:     logger{cfg.Logger},
		stopped: make(chan struct{}),
		stuck:   make(chan stuckCommand, 1024),
	}, nil
}

// Store returns the processor's idempotency store.
func (p *Processor) Store() *dedupe.Store { return p.store }

// Config returns the effective configuration.
func (p *Processor) Config() Config { return *p.cfg }

// Start checks NATS and Redis, creates or updates the streams and the
// consumer, and starts consuming. It returns once consuming has begun, or
// the first error. A Processor starts once.
func (p *Processor) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("processor: already started")
	}
	// Fail Start, not a goroutine, when a server is unreachable.
	if err := p.nc.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("processor: NATS at %s: %w", p.nc.ConnectedUrlRedacted(), err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.rdb.Ping(pingCtx).Err(); err != nil {
		return fmt.Errorf("processor: Redis ping: %w", err)
	}
	cons, err := EnsureStreams(ctx, p.js, p.cfg)
	if err != nil {
		return err
	}

	// Fetching and working use separate contexts: Stop ends fetching at once
	// but lets in-flight work finish; only an expired Stop cancels the work.
	fetchCtx, fetchStop := context.WithCancelCause(context.WithoutCancel(ctx))
	p.workCtx, p.workCancel = context.WithCancelCause(context.WithoutCancel(ctx))
	p.fetchStop = fetchStop
	if p.advisories, err = p.watchMaxDeliveries(); err != nil { //nolint:contextcheck // the subscription outlives Start's ctx; its callback logs with context.Background()
		fetchStop(err)
		p.workCancel(err)
		return fmt.Errorf("processor: subscribe to max-deliveries advisories: %w", err)
	}
	p.loopDone = make(chan struct{})
	p.started = true
	p.goFunc(func() {
		defer close(p.loopDone)
		p.fetchLoop(fetchCtx, cons)
	})
	p.goFunc(func() { p.deadLetterLoop(fetchCtx) })
	p.log.info(ctx, "processor started", "stream", p.cfg.CommandStream, "consumer", p.cfg.Consumer,
		"concurrency", p.cfg.Concurrency, "kinds", p.mux.Kinds())
	return nil
}

// goFunc starts f in a goroutine counted by the processor's WaitGroup; Add
// happens before the goroutine exists, so Stop can never miss it.
func (p *Processor) goFunc(f func()) {
	p.wg.Go(f)
}

// fetchLoop pulls at most as many messages as there are free slots, so no
// message waits in a client buffer while its AckWait runs out.
func (p *Processor) fetchLoop(ctx context.Context, cons jetstream.Consumer) {
	slots := make(chan struct{}, p.cfg.Concurrency)
	for ctx.Err() == nil {
		// Block for one free slot, then take all free ones.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < p.cfg.Concurrency {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(p.cfg.FetchWait))
		if err != nil {
			for range n {
				<-slots
			}
			p.log.warn(ctx, "fetch failed; retrying", "error", err)
			cons = p.recreateIfGone(ctx, cons, err)
			sleepCtx(ctx, 500*time.Millisecond)
			continue
		}
		used := 0
		for msg := range batch.Messages() {
			used++
			p.goFunc(func() { //nolint:contextcheck // deliveries run on p.workCtx, not the fetch context: Stop ends fetching at once, work may finish
				defer func() { <-slots }()
				p.deliver(msg)
			})
		}
		for range n - used {
			<-slots
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			p.log.warn(ctx, "fetch ended with an error", "error", err)
			cons = p.recreateIfGone(ctx, cons, err)
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}
}

// recreateIfGone puts the streams and the consumer back when err says they
// are gone - an operator deleted them, or a server lost its memory-backed
// state - so a worker heals instead of logging the same error forever. It
// returns the consumer to fetch from next.
func (p *Processor) recreateIfGone(ctx context.Context, cons jetstream.Consumer, err error) jetstream.Consumer {
	if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrConsumerDeleted) &&
		!errors.Is(err, jetstream.ErrStreamNotFound) {
		return cons
	}
	fresh, ensureErr := EnsureStreams(ctx, p.js, p.cfg)
	if ensureErr != nil {
		p.log.error(ctx, "streams or consumer gone, and recreating them failed", attrError, ensureErr)
		return cons
	}
	p.log.warn(ctx, "streams or consumer were gone; recreated them", "cause", err)
	return fresh
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Stop drains the processor: no new commands are fetched, in-flight ones
// finish. If ctx expires first, in-flight work is cancelled with ErrStop
// (those messages are left for redelivery), Stop waits for the goroutines to
// return and returns ctx.Err(). Stop before Start, or twice, returns nil.
func (p *Processor) Stop(ctx context.Context) error {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if !started {
		return nil
	}
	p.fetchStop(ErrStop)
	_ = p.advisories.Unsubscribe()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		p.workCancel(ErrStop)
		<-done
	}
	p.workCancel(ErrStop)
	p.stopOnce.Do(func() { //nolint:contextcheck // logs with context.Background(): Stop's ctx may have expired by now
		p.log.info(context.Background(), "processor stopped")
		close(p.stopped)
	})
	return err
}

// Stopped is closed once Stop has finished.
func (p *Processor) Stopped() <-chan struct{} { return p.stopped }
