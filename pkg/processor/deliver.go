package processor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/internal/tracing"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// callTimeout bounds each NATS call a delivery makes.
const callTimeout = 5 * time.Second

// delivery is one JetStream delivery of a command.
type delivery struct {
	msg        jetstream.Msg
	key        string
	kind       string
	replyTo    string
	tenant     string    // Idempay-Tenant, when valid
	deliveries int       // the message's delivery count
	published  time.Time // when the command stream stored it
	seq        uint64    // its sequence in the command stream

	route *route
	cmd   messages.Command
	fp    string
	lease *dedupe.Lease
}

// deliver runs one message through the pipeline: examine learns what there
// is to learn, decide turns that into one verdict, report carries it out.
// Nothing a message holds can crash the worker.
//
//	validate -> lock -> begin -> operation -> fenced commit -> publish -> ack
//
// What the next delivery finds after a crash (or a pause past the lock) at
// each step:
//
//	after lock:      the lock (expires after LockTTL), no record: starts afresh
//	after begin:     an in-progress record whose attempt never reported back:
//	                 marked unknown, then resumed with the same key
//	after operation: the same; the provider returns the charge it made for
//	                 this key, so nothing is charged twice
//	after commit:    a completed record: replays it, runs nothing
//	after publish:   a completed record: replays it (identical but replayed)
//	after the dead-letter copy: the key has no tries left: the copy is made
//	                 again (a second copy of the same dead letter, with the
//	                 same Dlq-Stream-Seq) and the command condemned; a later
//	                 delivery of a condemned command is answered as that
//	                 dead letter and terminated
//
// An effect-only operation (OpConfig.EffectInCommit, cart.add) on a single
// Redis has no step between lock and commit: Begin, the effect and the
// outcome are one script, which runs whole or not at all. On a Redis
// Cluster the effect's counter (cart:{<cart_id>}) and the record
// (idem:rec:{<key>}) hash to different slots, so the effect is the
// operation above, applied by its own script in the counter's slot that
// also records, in <counter>:applied, this key, its payload fingerprint and
// the value it produced:
//
//	validate -> lock -> begin -> apply effect -> fenced commit -> publish -> ack
//
//	after lock:   the lock, no record, nothing applied: starts afresh
//	after begin:  an in-progress record, nothing applied: marked unknown,
//	              then run again; the effect is applied now, once
//	after effect: an in-progress record, the effect applied and remembered:
//	              the next run's script finds the key in <counter>:applied,
//	              returns the value the first run produced and changes
//	              nothing; that value is committed and answered
//	after commit, after publish: as above, a completed record is replayed
//	on the last try: the Resolver reads <counter>:applied: an applied
//	              effect is committed as the outcome, none is a certain
//	              dead letter (dead_lettered, never outcome_unknown)
//
// No step keeps anything in memory that decides whether the message ever
// leaves the work queue: JetStream redelivers every message nobody ended,
// without limit, and each delivery decides again from the record.
func (p *Processor) deliver(msg jetstream.Msg) {
	d := &delivery{msg: msg, deliveries: 1}
	p.counters.deliveries.Add(1)
	m := p.cfg.Metrics
	start := time.Now()
	m.flight(1)
	defer m.flight(-1)
	h := msg.Headers()
	if h != nil {
		// A key longer than any valid one is cut here, before anything logs
		// it: it is refused as invalid_key whatever its length, and a 20 KiB
		// header must not become 20 KiB of log per message.
		d.key = clip(h.Get(messages.HeaderMsgID), maxKeyLen)
		d.replyTo = h.Get(messages.HeaderReplyTo)
		if t := h.Get(messages.HeaderTenant); validTenant(t) {
			d.tenant = t
		}
	}
	d.kind, _ = p.cfg.Topology.Subjects.KindOf(msg.Subject())
	if meta, err := msg.Metadata(); err == nil {
		d.deliveries = int(min(meta.NumDelivered, 1<<31))
		d.published, d.seq = meta.Timestamp, meta.Sequence.Stream
	}
	ctx, span := p.startSpan(tracing.Extract(p.workCtx, h), d, msg.Subject())
	defer span.End()
	defer func() {
		// A bug in the pipeline itself must not take the worker down with
		// the other commands in flight.
		if r := recover(); r != nil {
			p.log.error(ctx, "delivery panicked; redelivering", attrKey, d.key, attrKind, d.kind,
				attrError, fmt.Sprint(r), "stack", string(debug.Stack()))
			p.release(ctx, d)
			_ = msg.NakWithDelay(p.cfg.MaxNakDelay)
		}
	}()
	if p.stopping.Load() {
		// Pulled before Stop, not started: another worker takes it now.
		p.counters.redelivered.Add(1)
		m.redelivered("stopping")
		_ = msg.Nak()
		return
	}
	if d.replyTo != "" && !p.validReplyTo(d.replyTo) {
		p.log.warn(ctx, "ignoring unsafe Reply-To", attrKey, d.key, "reply_to", clip(d.replyTo, 128))
		d.replyTo = ""
	}
	f := p.examine(ctx, d)
	p.report(ctx, d, decide(f, p.cfg))
	m.observe(p.kindLabel(d.kind), start)
}

// validTenant reports whether t is a tenant id of the contract: 1-64
// characters of [A-Za-z0-9_.-]. Anything else is ignored, as if unset.
func validTenant(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, c := range []byte(t) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (c < '0' || c > '9') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// maxKeyLen is the longest key kept whole: longer than any canonical UUID,
// so a key cut to it is still refused as invalid_key.
const maxKeyLen = 64

// clip cuts s to at most n bytes, saying how long it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)", strings.ToValidUTF8(s[:n], ""), len(s))
}

// startSpan starts the delivery's span, a child of the command's
// traceparent (extracted into ctx), with the messaging attributes.
func (p *Processor) startSpan(ctx context.Context, d *delivery, subject string) (context.Context, trace.Span) {
	name, ok := p.spanNames[d.kind]
	if !ok {
		name = "process " + subject
	}
	ctx, span := p.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(tracing.Attributes(tracing.Process, subject, d.key, p.cfg.Topology.Consumer)...)
		span.SetAttributes(tracing.AttrKind.String(d.kind), tracing.AttrDelivery.Int(d.deliveries))
	}
	return ctx, span
}

// kindLabel is the command's kind as a metric label: a kind no operation
// is registered for (any subject a client makes up) is "unknown".
func (p *Processor) kindLabel(kind string) string {
	if _, ok := p.mux.route(kind); ok {
		return kind
	}
	return "unknown"
}

// facts is what one delivery learned, in pipeline order; examine stops
// filling it at the first step that settles the delivery.
type facts struct {
	deliveries int
	stopping   bool // the processor is stopping: hand back, never give up
	abandoned  bool // a failpoint fired: do nothing, as a dead process would

	reject *messages.RejectError // refused before any state was read
	fp     string                // the command's fingerprint

	locked  bool           // another worker holds the key
	peeked  *dedupe.Record // the record, read without the lock (locked only)
	peekErr error

	storeErr error // Redis or a lost lock before the operation: nothing known

	begun dedupe.Begun // what Begin decided, and the record

	ran        bool
	opErr      error // the try's error; nil with ran means an outcome
	maybe      bool  // a call of this try may have taken effect
	deferred   bool  // the operation did not start (Deferred): give the try back
	retryAfter time.Duration

	// The end of a key out of tries, when its history is unknown: what the
	// provider, asked by key, said.
	asked    bool  // the provider was asked (void, or lookup)
	voided   bool  // it voided the key: nothing took effect, nothing will
	askedErr error // it could not tell

	stored    *dedupe.Record // the outcome this delivery stored, or found stored
	commitErr error
}

// outOfTries reports whether the key has no tries left after this
// delivery's.
func (f *facts) outOfTries() bool {
	r := f.begun.Record
	return r != nil && r.Tries >= r.MaxTries
}

// unknown reports whether a call for the key may have taken effect: its
// record says so, or this try's calls do.
func (f *facts) unknown() bool {
	return f.maybe || (f.begun.Record != nil && f.begun.Record.Unknown())
}

// examine runs the pipeline up to the verdict: validation, the lock, Begin,
// the operation with its in-delivery retries, the fenced commit, and, for a
// key out of tries whose history is unknown, the provider asked by key.
func (p *Processor) examine(ctx context.Context, d *delivery) *facts {
	f := &facts{deliveries: d.deliveries}
	if f.reject = p.validate(d); f.reject != nil {
		return f
	}
	f.fp = d.fp
	try := dedupe.Try{Kind: d.kind, Fingerprint: d.fp, Published: d.published, MaxTries: p.cfg.MaxTries}
	if d.route.cfg.EffectInCommit {
		if p.effectsInCommit {
			p.beginAndCommit(ctx, d, try, f)
			if f.begun.Status != dedupe.BeginSeparate || f.abandoned {
				return f
			}
			// Another worker applies this key's effect apart: so must we.
			d.lease, f.begun = nil, dedupe.Begun{}
		}
		try.SeparateEffect = true
	}

	// The lock and Begin, in one round trip unless a failpoint must be able
	// to fire between them.
	var err error
	if p.cfg.Failpoint == nil {
		d.lease, f.begun, err = p.store.AcquireBegin(ctx, d.key, try)
	} else {
		d.lease, err = p.store.Acquire(ctx, d.key)
		if err == nil {
			if f.abandoned = p.crash(ctx, d, AfterLock); f.abandoned {
				return f
			}
			f.begun, err = p.store.Begin(ctx, d.lease, try)
		}
	}
	if noLock(f, err) {
		p.peekLocked(ctx, d, f)
		return f
	}
	switch f.begun.Status {
	case dedupe.BeginRun:
		if f.abandoned = p.crash(ctx, d, AfterBegin); f.abandoned {
			return f
		}
	case dedupe.BeginExhausted:
		p.askProvider(ctx, d, f)
		return f
	default:
		return f
	}

	o, maybe, err := p.attempt(ctx, d, f.begun.Record.Tries)
	f.ran, f.maybe = true, maybe
	if f.abandoned = p.crash(ctx, d, AfterOperation); f.abandoned {
		return f
	}
	if errors.Is(err, errUnconfirmed) || errors.Is(err, dedupe.ErrLockLost) {
		// The key may be another worker's now: this delivery decides
		// nothing (its view of the record is stale), writes nothing, and
		// leaves the record running: the next Begin counts the try as
		// unknown.
		f.storeErr = err
		return f
	}
	if err != nil {
		f.opErr = err
		class, after := ClassOf(err)
		f.retryAfter = after
		f.deferred = class == Deferred && !maybe
		f.stopping = errors.Is(context.Cause(ctx), ErrStop)
		if !f.deferred && !f.stopping && f.outOfTries() {
			p.askProvider(ctx, d, f)
		}
		return f
	}
	f.stored, f.commitErr = p.commit(ctx, d, o)
	if f.commitErr == nil {
		f.abandoned = p.crash(ctx, d, AfterCommit)
	}
	return f
}

// validate decodes and checks the message; a rejection names what is wrong.
func (p *Processor) validate(d *delivery) *messages.RejectError {
	if !messages.ValidKey(d.key) {
		return &messages.RejectError{Code: messages.CodeInvalidKey,
			Message: "header " + messages.HeaderMsgID + " must be a UUID in canonical form (36 characters, lower-case hex, 8-4-4-4-12)"}
	}
	r, ok := p.mux.route(d.kind)
	if !ok {
		return &messages.RejectError{Code: messages.CodeUnknownCommand,
			Message: fmt.Sprintf("no operation for command kind %q; known: %s", d.kind, strings.Join(p.mux.Kinds(), ", "))}
	}
	cmd, err := r.decode(d.msg.Data())
	if err != nil {
		rej, ok := errors.AsType[*messages.RejectError](err)
		if !ok {
			rej = &messages.RejectError{Code: messages.CodeInvalidPayload, Message: err.Error()}
		}
		return rej
	}
	d.route, d.cmd, d.fp = r, cmd, messages.Fingerprint(cmd)
	return nil
}

func (p *Processor) env(d *delivery, try int) callEnv {
	return callEnv{key: d.key, tenant: d.tenant, delivery: d.deliveries, try: try, lookup: p.lookupFn}
}

// lookup is Call.Lookup: another key's state, read without its lock.
func (p *Processor) lookup(ctx context.Context, key string) (KeyState, error) {
	rec, err := p.store.Get(ctx, key)
	switch {
	case err != nil:
		return KeyState{}, err
	case rec == nil:
		return KeyState{Status: KeyAbsent}, nil
	case rec.State == dedupe.StateCompleted:
		return KeyState{Status: KeyCompleted, Kind: rec.Kind, Outcome: rec.Result}, nil
	case rec.State == dedupe.StateDead && !rec.Unknown():
		return KeyState{Status: KeyDead, Kind: rec.Kind}, nil
	default:
		// Running, between tries, or dead with its outcome unknown (the
		// resolver will settle it): an outcome may still come.
		return KeyState{Status: KeyInProgress, Kind: rec.Kind}, nil
	}
}

// attempt runs the operation under the lock's watchdog, with the in-delivery
// retries of its policy. The watchdog extends the lock and tells JetStream
// the message is in progress; if the lock is lost the operation's context
// is cancelled with dedupe.ErrLockLost as its cause. maybe reports whether
// any call of the try may have taken effect: an ambiguous error at any
// call, not only the last, or a call cut off by a lost lock.
func (p *Processor) attempt(ctx context.Context, d *delivery, try int) (o Outcome, maybe bool, err error) {
	opCtx, stopWatchdog := p.watchdog(ctx, d)
	defer stopWatchdog()
	o, maybe, err = p.execute(opCtx, d, try)
	if err != nil && errors.Is(context.Cause(opCtx), dedupe.ErrLockLost) {
		p.counters.lockLost.Add(1)
		p.cfg.Metrics.inc(p.cfg.Metrics.lockLostCounter())
		// The operation may have been cut off half-way: not certain.
		maybe = true
		err = fmt.Errorf("%w (operation cancelled): %w", dedupe.ErrLockLost, err)
	}
	return o, maybe, err
}

// errUnconfirmed: the delivery could not confirm it still holds the key's
// lock before a side effect (dedupe.Lease.Confirm).
var errUnconfirmed = errors.New("processor: the key's lock could not be confirmed")

// confirm makes sure d still holds the key's lock before a side effect: a
// delivery paused past its lock's validity (a stopped process, a long GC)
// must not call the provider, or publish a dead-letter copy, on what it
// read before the pause: another worker may have taken the key over and
// decided otherwise meanwhile.
func (p *Processor) confirm(ctx context.Context, d *delivery) error {
	if d.lease == nil {
		return nil
	}
	if err := d.lease.Confirm(ctx); err != nil {
		return fmt.Errorf("%w: %w", errUnconfirmed, err)
	}
	return nil
}

// watchdog starts the lease's watchdog: it extends the key's lock and tells
// JetStream the message is in progress, for as long as the delivery works
// holding the lock (an operation, asking the provider about a key out of
// tries, the dead letter).
func (p *Processor) watchdog(ctx context.Context, d *delivery) (context.Context, func()) {
	return d.lease.KeepAlive(ctx, min(p.cfg.LockTTL, p.cfg.AckWait)/3, func() { _ = d.msg.InProgress() })
}

// execute calls the operation, retrying its errors by their Class with the
// operation's policy until one call gives an outcome, a retry budget runs
// out, or ctx ends. A panic is not retried here (it is likely to repeat);
// neither is a RateLimited error asking to wait longer than the policy's
// MaxInterval: the message is handed back for that long instead. maybe
// reports whether any of its calls may have taken effect: the certainty of
// a try is its whole history, never the class of its last error alone.
func (p *Processor) execute(ctx context.Context, d *delivery, try int) (o Outcome, maybe bool, err error) {
	policy := p.cfg.retryFor(d.route)
	var backoffs [Deferred]backoff.BackOff
	env := p.env(d, try)
	for {
		if err := p.confirm(ctx, d); err != nil {
			return Outcome{}, maybe, err
		}
		o, err := p.handle(ctx, d, env)
		if err == nil {
			if verr := o.validate(); verr != nil {
				return Outcome{}, true, &PanicError{Value: verr}
			}
			return o, maybe, nil
		}
		class, after := ClassOf(err)
		if class == Ambiguous { // a panic included: it may have done something first
			maybe = true
		}
		if _, panicked := errors.AsType[*PanicError](err); panicked || ctx.Err() != nil {
			return Outcome{}, maybe, err
		}
		if class == Deferred {
			return Outcome{}, maybe, err // handed back whole: nothing started
		}
		if backoffs[class] == nil {
			backoffs[class] = policy.NewBackOff(class)
		}
		wait := backoffs[class].NextBackOff()
		if wait == backoff.Stop {
			return Outcome{}, maybe, err
		}
		if class == RateLimited && after > wait {
			if pol, ok := policy.(*Policy); ok && after > pol.RateLimited.MaxInterval {
				return Outcome{}, maybe, err
			}
			wait = after
		}
		p.log.info(ctx, "operation failed; retrying", attrKey, d.key, attrKind, d.kind,
			attrAttempt, d.deliveries, "class", class.String(), attrError, err, "wait", wait)
		sleepCtx(ctx, wait)
		if ctx.Err() != nil {
			return Outcome{}, maybe, err
		}
	}
}

// handle calls the operation once. For an EffectInCommit operation whose
// effect is not applied by the commit script (a Redis Cluster), applying
// the effect is the operation: once per key, however often it runs, so a
// redelivery after a crash between it and the commit gets the value the
// first run produced and changes nothing.
func (p *Processor) handle(ctx context.Context, d *delivery, env callEnv) (Outcome, error) {
	o, err := d.route.handle(ctx, env, d.cmd)
	if err != nil || !d.route.cfg.EffectInCommit || o.Effect == nil {
		return o, err
	}
	if err := o.Effect.Validate(); err != nil {
		return Outcome{}, &PanicError{Value: err} // a bug in the operation: not retried
	}
	n, err := p.store.ApplyEffect(ctx, d.key, d.fp, o.Effect)
	if errors.Is(err, dedupe.ErrEffectVoided) {
		// The key was voided under this (paused) worker: nothing was
		// applied and nothing will be; its dead letter stands.
		return Outcome{}, TransientError(err)
	}
	if err != nil {
		return Outcome{}, AmbiguousError(err) // the script may have run
	}
	return o.withEffect(n)
}

// voidEffect is the Voider of an EffectInCommit operation whose effect is
// applied on its own: found when ApplyEffect ran for this key and payload,
// with the value it produced; otherwise the effect is made never to apply.
func (p *Processor) voidEffect(ctx context.Context, key, fp string, r *route, env callEnv, cmd messages.Command) (Outcome, bool, error) {
	o, err := r.handle(ctx, env, cmd)
	if err != nil || o.Effect == nil {
		return o, err == nil, err
	}
	n, found, err := p.store.VoidEffect(ctx, key, fp, o.Effect)
	if err != nil || !found {
		return Outcome{}, false, err
	}
	o, err = o.withEffect(n)
	return o, err == nil, err
}

// commit stores the operation's outcome with the fenced commit. It runs to
// completion even while the processor stops, and retries a Redis error a
// few times: the script is idempotent, so running it twice is safe.
func (p *Processor) commit(ctx context.Context, d *delivery, o Outcome) (*dedupe.Record, error) {
	ctx = context.WithoutCancel(ctx)
	res, err := p.result(d, o)
	if err != nil {
		return nil, err
	}
	commit := func() (*dedupe.Record, error) {
		rec, err := p.store.Commit(ctx, d.lease, d.fp, res, o.Effect)
		if errors.Is(err, dedupe.ErrLockLost) || errors.Is(err, dedupe.ErrFingerprintMismatch) {
			return nil, backoff.Permanent(err)
		}
		return rec, err
	}
	rec, err := commit()
	if err != nil && !errors.Is(err, dedupe.ErrLockLost) && !errors.Is(err, dedupe.ErrFingerprintMismatch) {
		b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond)), 3)
		rec, err = backoff.RetryWithData(commit, b)
	}
	if errors.Is(err, dedupe.ErrLockLost) {
		p.counters.lockLost.Add(1)
		p.cfg.Metrics.inc(p.cfg.Metrics.lockLostCounter())
		p.cfg.Metrics.inc(p.cfg.Metrics.commitRefusedCounter())
	}
	return rec, err
}

// result is the answer an outcome becomes when stored.
func (p *Processor) result(d *delivery, o Outcome) (messages.Result, error) {
	return resultOf(o, d.deliveries)
}

// noLock reports whether the delivery ends without the key's lock, and
// records why in f: taken by another worker, or a store error. Any error of
// a call made holding the lock is a store error too. It does no I/O: a
// locked key's record is read by the caller (peekLocked).
func noLock(f *facts, err error) bool {
	switch {
	case errors.Is(err, dedupe.ErrLocked):
		f.locked = true
		return true
	case err != nil:
		f.storeErr = err
		return true
	}
	return false
}

// peekLocked reads, without the lock, the record of a key another worker
// holds: its stored outcome, if any, answers this delivery.
func (p *Processor) peekLocked(ctx context.Context, d *delivery, f *facts) {
	if f.locked {
		f.peeked, f.peekErr = p.store.Peek(ctx, d.key)
	}
}

// beginAndCommit runs an operation whose whole effect is its commit's
// (OpConfig.EffectInCommit): the operation first, holding nothing, then the
// lock and one script that begins and commits, in one round trip unless a
// failpoint must be able to fire after the lock.
func (p *Processor) beginAndCommit(ctx context.Context, d *delivery, try dedupe.Try, f *facts) {
	o, err := d.route.handle(ctx, p.env(d, 1), d.cmd)
	if err == nil {
		err = o.validate()
	}
	var res messages.Result
	if err == nil {
		res, err = p.result(d, o)
	}
	if err != nil {
		// Nothing ran and nothing is stored: a bug, or a command the
		// operation cannot serve yet. Try again later, like a store error.
		f.storeErr = fmt.Errorf("operation %s: %w", d.kind, err)
		return
	}
	if p.cfg.Failpoint == nil {
		d.lease, f.begun, err = p.store.AcquireBeginAndCommit(context.WithoutCancel(ctx), d.key, try, res, o.Effect)
	} else {
		d.lease, err = p.store.Acquire(ctx, d.key)
		if err == nil {
			if f.abandoned = p.crash(ctx, d, AfterLock); f.abandoned {
				return
			}
			f.begun, err = p.store.BeginAndCommit(context.WithoutCancel(ctx), d.lease, try, res, o.Effect)
		}
	}
	if noLock(f, err) {
		p.peekLocked(ctx, d, f)
		return
	}
	if f.begun.Status == dedupe.BeginCommitted {
		f.ran, f.stored = true, f.begun.Record
		f.abandoned = p.crash(ctx, d, AfterCommit)
	}
}

// askProvider ends a key out of tries whose history is unknown: a call for
// it may have taken effect, or may still. It asks the provider by key,
// holding the key's lock under its watchdog: a void (contract v1.2) finds
// the effect, or makes sure none can happen; without one, a lookup can
// still find the effect. An effect found is committed as the key's
// outcome; a void makes the dead letter certain; anything else leaves the
// key unknown (outcome_unknown, and the resolver asks again later). A key
// whose every call said "certainly not done" asks nothing: its dead letter
// is certain as it is.
func (p *Processor) askProvider(ctx context.Context, d *delivery, f *facts) {
	if !f.unknown() {
		return
	}
	wctx, stop := p.watchdog(ctx, d)
	defer stop()
	o, found, voided, err := p.settleEffect(wctx, d.key, d.fp, d.route, p.env(d, f.begun.Record.Tries), d.cmd)
	f.asked = true
	switch {
	case err != nil:
		f.askedErr = err
		p.log.warn(ctx, "could not settle the effect of a key out of tries; its outcome stays unknown",
			attrKey, d.key, attrKind, d.kind, attrError, err)
	case found:
		f.stored, f.commitErr = p.commit(ctx, d, o)
	default:
		f.voided = voided
	}
}

// settleEffect asks the provider, by key, what came of a key whose history
// is unknown: found (the effect and its outcome), or voided (nothing took
// effect and nothing will), or an error when it cannot tell. Without a way
// to void, a lookup that finds nothing is no proof: an error.
func (p *Processor) settleEffect(ctx context.Context, key, fp string, r *route, env callEnv, cmd messages.Command) (o Outcome, found, voided bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	void := r.void
	if r.cfg.EffectInCommit {
		void = func(ctx context.Context, env callEnv, cmd messages.Command) (Outcome, bool, error) {
			return p.voidEffect(ctx, key, fp, r, env, cmd)
		}
	}
	if void != nil {
		o, found, err = void(ctx, env, cmd)
		if err == nil {
			if found {
				err = o.validate()
			}
			return o, found, !found, err
		}
		if !errors.Is(err, ErrCannotVoid) {
			return Outcome{}, false, false, fmt.Errorf("void: %w", err)
		}
	}
	if r.resolve == nil {
		return Outcome{}, false, false, errors.New("the provider can neither void the key nor look its effect up")
	}
	o, found, err = r.resolve(ctx, env, cmd)
	switch {
	case err != nil:
		return Outcome{}, false, false, fmt.Errorf("look up: %w", err)
	case !found:
		return Outcome{}, false, false, errors.New("the provider holds no effect for the key, but cannot void it: a call may still land")
	}
	return o, true, false, o.validate()
}

// verdict is what a delivery comes to; report carries it out.
type verdict struct {
	kind     verdictKind
	answer   *dedupe.Record        // vAnswer: the stored outcome
	replayed bool                  // vAnswer: found stored, not produced by this delivery
	reject   *messages.RejectError // vReject
	delay    time.Duration         // vRetry: NakWithDelay (0: Nak now)
	settle   settleKind            // vRetry: what the held lock's release records
	why      string                // vRetry: the metric's reason (lock_busy, retry, store, stopping, deferred)
	effect   string                // vDeadLetter, vDeadLettered: dedupe.EffectNone or EffectUnknown
	voided   bool                  // vDeadLetter: the key was voided at the provider
	reason   string                // vDeadLetter, vRetry: why
	busy     bool                  // vRetry: the key is locked by another worker
}

type verdictKind int

const (
	vAbandon      verdictKind = iota // a failpoint fired: nothing
	vAnswer                          // publish the outcome to RESULTS and Reply-To, then Ack
	vReject                          // publish the rejection, then Ack
	vRetry                           // release or settle the lock, then Nak (with a delay)
	vDeadLetter                      // copy to the dead letters, record the dead letter, answer, Term
	vDeadLettered                    // dead-lettered earlier (or voided): answer as that dead letter, Term
)

type settleKind int

const (
	settleRelease  settleKind = iota // release the lock, record nothing
	settleCertain                    // the try certainly had no effect
	settleUnknown                    // the try may have had an effect
	settleDeferred                   // the operation did not start: the try is given back
)

// decide turns what a delivery learned into its one verdict. It is the
// whole decision table of the engine, and has no I/O. Its rules, in order:
//
//   - a rejection before any state was read is answered as such;
//   - a key locked by another worker is never dead-lettered: its stored
//     outcome (if any) is answered, otherwise the message comes back later,
//     for as long as the lock is held (its TTL bounds a dead holder's);
//   - a store error before the operation ran tells nothing: come back later;
//   - a stored outcome is answered, never dead-lettered;
//   - a message dead-lettered earlier, or a re-drive of a voided key, is
//     answered as that dead letter;
//   - a deferred operation, or a stopping processor, hands the message back;
//   - an error on a try that is not the key's last comes back later, the
//     record told whether the try may have taken effect;
//   - a key out of tries is dead-lettered: as dead_lettered when no call
//     for it can have taken effect (every call said so, or the provider
//     voided the key), otherwise as outcome_unknown.
func decide(f *facts, cfg *Config) verdict {
	switch {
	case f.abandoned:
		return verdict{kind: vAbandon}
	case f.reject != nil:
		return verdict{kind: vReject, reject: f.reject}
	case f.locked:
		switch {
		case f.peekErr == nil && f.peeked != nil && f.peeked.Fingerprint != f.fp:
			return verdict{kind: vReject, reject: keyReused()}
		case f.peekErr == nil && f.peeked != nil && f.peeked.State == dedupe.StateCompleted:
			return verdict{kind: vAnswer, answer: f.peeked, replayed: true}
		default:
			return verdict{kind: vRetry, delay: backoffDelay(cfg.LockedDelay, cfg.MaxNakDelay, f.deliveries),
				reason: "key locked by another worker", busy: true, why: "lock_busy"}
		}
	case f.storeErr != nil:
		return verdict{kind: vRetry, delay: backoffDelay(cfg.NakDelay, cfg.MaxNakDelay, f.deliveries),
			reason: f.storeErr.Error(), why: "store"}
	case f.stored != nil:
		return verdict{kind: vAnswer, answer: f.stored}
	}
	switch f.begun.Status {
	case dedupe.BeginCompleted:
		return verdict{kind: vAnswer, answer: f.begun.Record, replayed: true}
	case dedupe.BeginCommitted:
		return verdict{kind: vAnswer, answer: f.begun.Record}
	case dedupe.BeginConflict:
		return verdict{kind: vReject, reject: keyReused()}
	case dedupe.BeginDeadLettered:
		return verdict{kind: vDeadLettered, effect: f.begun.Record.DeadEffect}
	case dedupe.BeginVoided:
		return verdict{kind: vDeadLettered, effect: dedupe.EffectNone, voided: true}
	case dedupe.BeginExhausted:
		return deadLetter(f, cfg, "the key has no tries left")
	case dedupe.BeginSeparate:
		// examine takes the separate path itself; met here, nothing was
		// written: come back.
		return verdict{kind: vRetry, delay: backoffDelay(cfg.NakDelay, cfg.MaxNakDelay, f.deliveries),
			reason: "the key's effect is applied apart", why: "store"}
	case dedupe.BeginRun: // the operation ran: below
	}
	if f.opErr == nil {
		// The outcome is known but its commit failed: it may or may not be
		// stored, and the effect happened. Never a dead letter: the next
		// delivery finds the record completed, or runs again with the key.
		return verdict{kind: vRetry, delay: backoffDelay(cfg.NakDelay, cfg.MaxNakDelay, f.deliveries),
			settle: settleUnknown, reason: "commit: " + f.commitErr.Error(), why: "store"}
	}
	settle := settleCertain
	if f.maybe {
		settle = settleUnknown
	}
	switch {
	case f.deferred:
		delay := max(backoffDelay(cfg.NakDelay, cfg.MaxNakDelay, f.deliveries), f.retryAfter)
		return verdict{kind: vRetry, delay: delay, settle: settleDeferred, reason: f.opErr.Error(), why: "deferred"}
	case f.stopping:
		return verdict{kind: vRetry, settle: settle, reason: "stopping: " + f.opErr.Error(), why: "stopping"}
	case !f.outOfTries():
		delay := max(backoffDelay(cfg.NakDelay, cfg.MaxNakDelay, f.begun.Record.Tries), f.retryAfter)
		return verdict{kind: vRetry, delay: delay, settle: settle, reason: f.opErr.Error(), why: "retry"}
	}
	return deadLetter(f, cfg, f.opErr.Error())
}

// deadLetter is the verdict of a key out of tries without an outcome: a
// dead letter whose effect is none only when that is certain.
func deadLetter(f *facts, cfg *Config, reason string) verdict {
	switch {
	case !f.unknown():
		return verdict{kind: vDeadLetter, effect: dedupe.EffectNone, reason: reason}
	case f.voided:
		return verdict{kind: vDeadLetter, effect: dedupe.EffectNone, voided: true, reason: reason}
	case f.commitErr != nil:
		// The provider holds an effect whose commit failed: never a dead
		// letter; the next delivery asks again and stores it.
		return verdict{kind: vRetry, delay: backoffDelay(cfg.NakDelay, cfg.MaxNakDelay, f.deliveries),
			settle: settleUnknown, reason: "commit: " + f.commitErr.Error(), why: "store"}
	}
	return verdict{kind: vDeadLetter, effect: dedupe.EffectUnknown, reason: reason}
}

func keyReused() *messages.RejectError {
	return &messages.RejectError{Code: messages.CodeKeyReused,
		Message: "the key is bound to another command or payload; use a new key for a new operation"}
}

// backoffDelay doubles base with each count after the first, up to maxDelay.
func backoffDelay(base, maxDelay time.Duration, count int) time.Duration {
	d := base
	for i := 1; i < count && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}
