package processor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// resolver settles the keys answered outcome_unknown (contract v1.2,
// "Resolution"). Each worker runs one. The schedule of keys to ask about
// lives in Redis (dedupe: the resolution schedule), so a worker that
// restarts, or any other replica, carries it on; the truth about each key
// lives in its record, which only the scripts change.
//
// For each key due, holding its lock, it asks the provider by key (a void,
// or a lookup when the provider cannot void): an effect found is stored as
// the key's outcome and published on result.<key> like any outcome; a void
// makes the key's dead letter certain, and rejected / dead_lettered is
// published on rejected.<key>; a provider that cannot tell is asked again
// later, the waits growing from ResolveAfter to at most ten times it.
type resolver struct {
	p        *Processor
	interval time.Duration // between passes over the schedule
	hold     time.Duration // a claimed key is left alone by other resolvers this long

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// resolveBatch bounds the keys one pass claims at a time.
const resolveBatch = 32

func newResolver(p *Processor) *resolver {
	return &resolver{
		p:        p,
		interval: max(10*time.Millisecond, min(p.cfg.ResolveAfter/2, 5*time.Second)),
		hold:     2*callTimeout + p.cfg.LockTTL,
		done:     make(chan struct{}),
	}
}

// Start runs the resolver until Stop.
func (r *resolver) Start(ctx context.Context) {
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			r.pass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the resolver and waits for the key under way. A key it had
// claimed but not settled comes back to the schedule after its hold.
func (r *resolver) Stop() {
	r.once.Do(func() {
		if r.cancel != nil {
			r.cancel()
			<-r.done
		}
	})
}

// pass settles every key due now, a batch at a time.
func (r *resolver) pass(ctx context.Context) {
	store, m := r.p.store, r.p.cfg.Metrics
	if m != nil {
		if n, err := store.ScheduledCount(ctx); err == nil {
			m.unresolvedKeys(n)
		}
	}
	for ctx.Err() == nil {
		keys, err := store.ClaimDue(ctx, time.Now(), r.hold, resolveBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.p.log.warn(ctx, "resolver: read the schedule", attrError, err)
			}
			return
		}
		for _, key := range keys {
			if ctx.Err() != nil {
				return
			}
			r.resolve(ctx, key)
		}
		if len(keys) < resolveBatch {
			return
		}
	}
}

// resolve settles one claimed key, or puts it back on the schedule.
func (r *resolver) resolve(ctx context.Context, key string) {
	p, store := r.p, r.p.store
	lease, err := store.Acquire(ctx, key)
	if errors.Is(err, dedupe.ErrLocked) {
		return // a delivery or another resolver has it: back after the hold
	}
	if err != nil {
		p.log.warn(ctx, "resolver: lock", attrKey, key, attrError, err)
		return
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	rec, err := store.Get(ctx, key)
	if err != nil {
		p.log.warn(ctx, "resolver: read the record", attrKey, key, attrError, err)
		return
	}
	switch {
	case rec == nil:
		// Expired (RESULT_TTL) or lost: nothing to settle any more.
		r.done1(ctx, key)
	case rec.State == dedupe.StateCompleted:
		// Settled earlier (by a re-send, or by this resolver before a
		// crash): make sure the outcome reached RESULTS.
		if r.publishOutcome(ctx, key, rec) == nil {
			r.done1(ctx, key)
		}
	case rec.State == dedupe.StateDead && rec.Unknown():
		r.ask(ctx, lease, rec)
	case rec.State == dedupe.StateDead && rec.Voided:
		// Voided earlier, its notice not yet out (or this resolver
		// crashed before it knew).
		if r.notifyVoided(ctx, rec) {
			r.done1(ctx, key)
		}
	default:
		// Re-driven: its deliveries own it now, and put it back on the
		// schedule if they end unknown again.
		r.done1(ctx, key)
	}
}

// ask asks the provider about a dead key whose outcome is unknown.
func (r *resolver) ask(ctx context.Context, lease *dedupe.Lease, rec *dedupe.Record) {
	p, store, key := r.p, r.p.store, rec.Key
	route, ok := p.mux.route(rec.Kind)
	if !ok {
		p.log.error(ctx, "resolver: no operation for the key's kind; asking again later", attrKey, key, attrKind, rec.Kind)
		r.later(ctx, rec)
		return
	}
	cmd, err := route.decode(rec.Body)
	if err != nil {
		p.log.error(ctx, "resolver: the stored command does not decode; asking again later", attrKey, key, attrError, err)
		r.later(ctx, rec)
		return
	}
	wctx, stop := lease.KeepAlive(ctx, p.cfg.LockTTL/3, nil)
	o, found, voided, err := p.settleEffect(wctx, key, rec.Fingerprint, route,
		callEnv{key: key, tenant: rec.Tenant, delivery: 1, try: rec.MaxTries, lookup: p.lookupFn}, cmd)
	stop()
	switch {
	case err != nil:
		p.log.warn(ctx, "resolver: the provider could not tell; asking again later", attrKey, key, attrKind, rec.Kind, attrError, err)
		r.later(ctx, rec)
	case found:
		res, rerr := resultOf(o, 1)
		if rerr != nil {
			p.log.error(ctx, "resolver: encode the outcome", attrKey, key, attrError, rerr)
			r.later(ctx, rec)
			return
		}
		stored, cerr := store.Commit(context.WithoutCancel(ctx), lease, rec.Fingerprint, res, o.Effect)
		if cerr != nil {
			p.log.warn(ctx, "resolver: store the outcome found; asking again later", attrKey, key, attrError, cerr)
			r.later(ctx, rec)
			return
		}
		p.cfg.Metrics.resolved(rec.Kind, string(messages.StatusSucceeded))
		p.log.warn(ctx, "resolved an unknown outcome: the provider holds the effect", attrKey, key, attrKind, rec.Kind,
			attrStatus, stored.Result.Status)
		if r.publishOutcome(ctx, key, stored) == nil {
			r.done1(ctx, key)
		}
	case voided:
		if _, derr := store.DeadLetter(context.WithoutCancel(ctx), lease, dedupe.DeadLetter{
			Effect: dedupe.EffectNone, Voided: true, Kind: rec.Kind, Fingerprint: rec.Fingerprint,
		}); derr != nil {
			p.log.warn(ctx, "resolver: record the void; asking again later", attrKey, key, attrError, derr)
			r.later(ctx, rec)
			return
		}
		p.cfg.Metrics.resolved(rec.Kind, messages.CodeDeadLettered)
		p.log.warn(ctx, "resolved an unknown outcome: nothing took effect, and the key is voided", attrKey, key, attrKind, rec.Kind)
		if r.notifyVoided(ctx, rec) {
			r.done1(ctx, key)
		}
	}
}

// later puts a key back on the schedule: the waits grow with the time the
// key has been unknown, from ResolveAfter to at most ten times it.
func (r *resolver) later(ctx context.Context, rec *dedupe.Record) {
	r.p.cfg.Metrics.resolved(rec.Kind, "unresolved")
	after := r.p.cfg.ResolveAfter
	if !rec.DeadAt.IsZero() {
		after = min(max(time.Since(rec.DeadAt), after), 10*after)
	}
	if err := r.p.store.Reschedule(context.WithoutCancel(ctx), rec.Key, time.Now().Add(after)); err != nil {
		r.p.log.warn(ctx, "resolver: reschedule; the key comes back after its hold", attrKey, rec.Key, attrError, err)
	}
}

func (r *resolver) done1(ctx context.Context, key string) {
	if err := r.p.store.Unschedule(context.WithoutCancel(ctx), key); err != nil {
		r.p.log.warn(ctx, "resolver: unschedule; it is looked at again", attrKey, key, attrError, err)
	}
}

// publishOutcome publishes a stored outcome on result.<key>, waiting for
// RESULTS to have it.
func (r *resolver) publishOutcome(ctx context.Context, key string, rec *dedupe.Record) error {
	res := rec.Answer(false)
	res.Key = key
	err := r.p.keyReplicated(ctx, key)
	if err == nil {
		err = r.p.publishResult(context.WithoutCancel(ctx), key, res.Marshal())
	}
	if err != nil {
		r.p.log.warn(ctx, "resolver: publish the outcome; trying again later", attrKey, key, attrError, err)
		if rerr := r.p.store.Reschedule(context.WithoutCancel(ctx), key, time.Now().Add(r.p.cfg.ResolveAfter)); rerr != nil {
			r.p.log.warn(ctx, "resolver: reschedule", attrKey, key, attrError, rerr)
		}
		return err
	}
	return nil
}

// notifyVoided publishes rejected / dead_lettered for a key the provider
// voided, on rejected.<key>, and reports whether it went out. A core
// publish returns before anything was sent, and a connection that hangs
// swallows it without an error: the notice counts as out once a flush (a
// round trip to the server) says the server has it. A notice that is not
// out, or a void not yet on enough Redis replicas, puts the key back on
// the schedule: the resolver tells it again, so that outcome_unknown ends
// with dead_lettered (the explorer found clients never told, their notice
// lost in a hang between a worker and NATS).
func (r *resolver) notifyVoided(ctx context.Context, rec *dedupe.Record) bool {
	err := r.p.keyReplicated(ctx, rec.Key)
	if err == nil {
		n := deadLetterNotice(rec.Key, rec.Kind, rec.Fingerprint, 1, dedupe.EffectNone, true)
		subject := r.p.cfg.Topology.Subjects.RejectedFor(rec.Key)
		if err = r.p.nc.PublishMsg(r.p.outMsg(ctx, subject, n.Marshal())); err == nil {
			err = r.p.nc.FlushTimeout(callTimeout)
		}
	}
	if err != nil {
		r.p.log.warn(ctx, "resolver: the dead-letter notice is not out; telling it again later", attrKey, rec.Key, attrError, err)
		if rerr := r.p.store.Reschedule(context.WithoutCancel(ctx), rec.Key, time.Now().Add(r.p.cfg.ResolveAfter)); rerr != nil {
			r.p.log.warn(ctx, "resolver: reschedule; the key comes back after its hold", attrKey, rec.Key, attrError, rerr)
		}
		return false
	}
	return true
}

// resultOf is the answer an outcome found for a key becomes when stored.
func resultOf(o Outcome, attempts int) (messages.Result, error) {
	data, err := o.data()
	if err != nil {
		return messages.Result{}, fmt.Errorf("encode outcome data: %w", err)
	}
	return messages.Result{Status: o.Status, Code: o.Code, Message: o.Message, Data: data,
		Attempts: attempts, ProcessedAt: time.Now()}, nil
}
