package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/internal/tracing"
	"github.com/idempay/idempay/pkg/dedupe"
)

// Processor is a worker engine: it pulls commands from the shared durable
// consumer and runs each through lock, record, operation, fenced commit,
// publish and ack. Run one per process; run as many processes as you like.
type Processor struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	rdb   redis.UniversalClient
	store *dedupe.Store
	mux   *Mux
	cfg   *Config
	log   logger
	// effectsInCommit: an Effect is applied by the commit script, with the
	// record. Only on a *redis.Client (one node, or Sentinel's master):
	// elsewhere the counter and the record may live in different slots.
	effectsInCommit bool

	tracer    trace.Tracer
	spanNames map[string]string // kind -> "process <subject>", made once

	mu         sync.Mutex
	started    bool
	stopping   atomic.Bool
	feedStop   context.CancelCauseFunc
	workCtx    context.Context //nolint:containedctx // the context of in-flight work: it outlives Start's ctx and is cancelled only by an expired Stop
	workCancel context.CancelCauseFunc
	wg         sync.WaitGroup // the feeder and the workers
	counters   counters
	pulling    atomic.Bool                                             // the feeder's pull is open (false while it re-creates it)
	consumerOK consumerCheck                                           // /readyz's cached look at the consumer on the server
	lookupFn   func(ctx context.Context, key string) (KeyState, error) // p.lookup, made once: a method value allocates
	resolver   *resolver                                               // settles keys answered outcome_unknown
	lookups    *lookupService                                          // answers a key's state by key
	stopped    chan struct{}
	stopOnce   sync.Once
}

// New returns a Processor that serves the operations of mux. nc must be
// connected; rdb may be a single-node, Sentinel or Cluster client.
func New(nc *nats.Conn, rdb redis.UniversalClient, mux *Mux, cfg *Config) (*Processor, error) {
	switch {
	case nc == nil:
		return nil, errors.New("processor: nil NATS connection")
	case rdb == nil:
		return nil, errors.New("processor: nil Redis client")
	case mux == nil || len(mux.Kinds()) == 0:
		return nil, errors.New("processor: no operations; register some on a Mux with Register")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Result publishes are asynchronous, so one PubAck subscription serves
	// every delivery in flight; the library times each out, so no delivery
	// needs a timer of its own.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(callTimeout),
		jetstream.WithPublishAsyncMaxPending(max(256, 4*cfg.Concurrency)))
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
	p := &Processor{
		nc: nc, js: js, rdb: rdb, store: store, mux: mux, cfg: cfg,
		log:       logger{slog.New(tracing.LogHandler(cfg.Logger.Handler()))},
		tracer:    cfg.TracerProvider.Tracer(tracing.Scope),
		spanNames: map[string]string{},
		stopped:   make(chan struct{}),
	}
	for _, kind := range mux.Kinds() {
		p.spanNames[kind] = "process " + cfg.Topology.Subjects.CommandFor(kind)
	}
	p.lookupFn = p.lookup
	_, single := rdb.(*redis.Client)
	p.effectsInCommit = single && !cfg.SeparateEffects
	return p, nil
}

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
	iter, err := p.messages(cons)
	if err != nil {
		return err
	}

	// Feeding and working use separate contexts: Stop ends feeding at once
	// but lets in-flight work finish; only an expired Stop cancels the work.
	feedCtx, feedStop := context.WithCancelCause(context.WithoutCancel(ctx))
	p.workCtx, p.workCancel = context.WithCancelCause(context.WithoutCancel(ctx))
	p.feedStop = feedStop
	p.started = true
	p.pulling.Store(true)

	// One feeder hands messages to a fixed pool of workers over an
	// unbuffered channel: at most Concurrency commands run, no goroutine is
	// started per command, and the feeder is the one place that recovers a
	// consumer deleted under it.
	work := make(chan jetstream.Msg)
	p.wg.Go(func() {
		defer close(work)
		p.feed(feedCtx, cons, iter, work)
	})
	for range p.cfg.Concurrency {
		p.wg.Go(func() { //nolint:contextcheck // deliveries run on p.workCtx, not Start's ctx: Stop ends them, not the caller
			for msg := range work {
				p.deliver(msg)
			}
		})
	}
	monitor := newHealthMonitor(p)
	p.wg.Go(func() { monitor.run(feedCtx) })
	p.resolver = newResolver(p)
	p.resolver.Start(feedCtx)
	if p.lookups, err = p.serveLookups(); err != nil {
		return err
	}
	p.log.info(ctx, "processor started", "stream", p.cfg.Topology.CommandStream, "consumer", p.cfg.Topology.Consumer,
		"concurrency", p.cfg.Concurrency, "kinds", p.mux.Kinds())
	return nil
}

// pullExpiry bounds each pull request of the long-lived pull. The iterator
// re-pulls only while its own count of outstanding messages is low; if that
// count drifts from the server's (seen once in a benchmark: 1,820 commands
// left unpulled), only the missing heartbeats (half the expiry) reveal it,
// after two of them. A short expiry makes that recovery take seconds, not
// the default's 30.
const pullExpiry = 5 * time.Second

// messages opens the long-lived pull: a buffer of up to Concurrency
// messages, refilled as it drains, so a worker rarely waits for a fetch and
// no message waits long in the buffer while its AckWait runs.
func (p *Processor) messages(cons jetstream.Consumer) (jetstream.MessagesContext, error) {
	iter, err := cons.Messages(jetstream.PullMaxMessages(max(p.cfg.Concurrency, 2)), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return nil, fmt.Errorf("processor: pull from consumer %s: %w", p.cfg.Topology.Consumer, err)
	}
	return iter, nil
}

// feed moves messages from the iterator to the workers until ctx ends, then
// drains the iterator's buffer: those messages reach the workers too, which
// hand them straight back (Nak) for another worker.
func (p *Processor) feed(ctx context.Context, cons jetstream.Consumer, iter jetstream.MessagesContext, work chan<- jetstream.Msg) {
	stop := context.AfterFunc(ctx, iter.Drain)
	defer stop()
	for {
		msg, err := iter.Next()
		if err == nil {
			work <- msg
			continue
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() != nil {
			return
		}
		p.log.warn(ctx, "pull from the consumer failed; pulling again", attrError, err)
		p.pulling.Store(false)
		iter.Stop()
		for wait := time.Duration(0); ctx.Err() == nil; wait = 500 * time.Millisecond {
			sleepCtx(ctx, wait)
			cons = p.recreateIfGone(ctx, cons, err)
			if iter, err = p.messages(cons); err == nil {
				p.pulling.Store(true)
				break
			}
		}
		if ctx.Err() != nil {
			return
		}
		stop()
		stop = context.AfterFunc(ctx, iter.Drain)
	}
}

// recreateIfGone puts the streams and the consumer back when err says they
// are gone - an operator deleted them, or a server lost its state - so a
// worker heals instead of logging the same error forever. It returns the
// consumer to pull from next.
func (p *Processor) recreateIfGone(ctx context.Context, cons jetstream.Consumer, err error) jetstream.Consumer {
	if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrConsumerDeleted) &&
		!errors.Is(err, jetstream.ErrStreamNotFound) {
		if fresh, lookErr := p.js.Consumer(ctx, p.cfg.Topology.CommandStream, p.cfg.Topology.Consumer); lookErr == nil {
			return fresh
		} else if !errors.Is(lookErr, jetstream.ErrConsumerNotFound) && !errors.Is(lookErr, jetstream.ErrStreamNotFound) {
			return cons
		}
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

// Stop drains the processor: no new commands are taken (those already
// pulled are handed back at once), in-flight ones finish. If ctx expires
// first, in-flight work is cancelled with ErrStop (those messages are left
// for redelivery), Stop waits for the goroutines to return and returns
// ctx.Err(). Stop before Start, or twice, returns nil.
func (p *Processor) Stop(ctx context.Context) error {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if !started {
		return nil
	}
	p.stopping.Store(true)
	p.feedStop(ErrStop)
	p.resolver.Stop()
	p.lookups.Stop()
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
