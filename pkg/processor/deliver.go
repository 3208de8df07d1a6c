package processor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// callTimeout bounds each NATS call a delivery makes.
const callTimeout = 5 * time.Second

// delivery is one JetStream delivery of a command.
type delivery struct {
	msg     jetstream.Msg
	key     string
	kind    string
	replyTo string
	attempt int
}

// deliver runs one message through the pipeline. Every exit acks, naks,
// terminates, or - at an injected crash - does nothing, leaving the message
// to JetStream's redelivery; none of them can crash the worker.
//
//	validate -> lock -> begin -> operation -> fenced commit -> publish -> ack
//
// What the next delivery finds after a crash at each step:
//
//	after lock:      the lock (expires after LockTTL), no record: starts afresh
//	after begin:     an in-progress record: resumes, same key to the provider
//	after operation: an in-progress record: re-runs; the provider returns the
//	                 charge it made for this key, so nothing is charged twice
//	after commit:    a completed record: replays it, runs nothing
//	after publish:   a completed record: replays it (identical but replayed)
func (p *Processor) deliver(msg jetstream.Msg) {
	ctx := p.workCtx
	d := &delivery{msg: msg, attempt: 1}
	p.counters.deliveries.Add(1)
	if h := msg.Headers(); h != nil {
		d.key = h.Get(messages.HeaderMsgID)
		d.replyTo = h.Get(messages.HeaderReplyTo)
	}
	d.kind, _ = p.cfg.Subjects.CommandType(msg.Subject())
	if meta, err := msg.Metadata(); err == nil {
		d.attempt = int(meta.NumDelivered) //nolint:gosec // bounded by the consumer's MaxDeliver
	}
	defer func() {
		// A bug in the pipeline itself must not take the worker down with
		// the other commands in flight.
		if r := recover(); r != nil {
			p.log.error(ctx, "delivery panicked; redelivering", attrKey, d.key, attrKind, d.kind,
				attrError, fmt.Sprint(r), "stack", string(debug.Stack()))
			_ = msg.NakWithDelay(p.nakDelay(d.attempt))
		}
	}()
	if d.replyTo != "" && !p.validReplyTo(d.replyTo) {
		p.log.warn(ctx, "ignoring unsafe Reply-To", attrKey, d.key, "reply_to", d.replyTo)
		d.replyTo = ""
	}

	if !messages.ValidKey(d.key) {
		p.refuse(ctx, d, &messages.RejectError{Code: messages.CodeInvalidKey,
			Message: "header " + messages.HeaderMsgID + " must be a UUID in canonical form (36 characters, lower-case hex, 8-4-4-4-12)"})
		return
	}
	h, ok := p.mux.Handler(d.kind)
	if !ok {
		p.refuse(ctx, d, &messages.RejectError{Code: messages.CodeUnknownCommand,
			Message: fmt.Sprintf("no operation for command type %q; known: %s", d.kind, strings.Join(p.mux.Kinds(), ", "))})
		return
	}
	cmd := h.NewCommand()
	if err := messages.Decode(msg.Data(), cmd); err != nil {
		var rej *messages.RejectError
		if !errors.As(err, &rej) {
			rej = &messages.RejectError{Code: messages.CodeInvalidPayload, Message: err.Error()}
		}
		p.refuse(ctx, d, rej)
		return
	}
	fp := messages.Fingerprint(cmd)

	lease, err := p.store.Acquire(ctx, d.key)
	if errors.Is(err, dedupe.ErrLocked) {
		p.whileLocked(ctx, d, fp)
		return
	}
	if err != nil {
		p.retryLater(ctx, d, nil, err)
		return
	}
	if p.crash(ctx, d, AfterLock) {
		return
	}

	rec, err := p.store.Begin(ctx, lease, d.kind, fp)
	if err != nil {
		p.retryLater(ctx, d, lease, err)
		return
	}
	if rec.Fingerprint != fp {
		p.release(ctx, lease)
		p.refuse(ctx, d, keyReused(d.key))
		return
	}
	if rec.State == dedupe.StateCompleted {
		p.release(ctx, lease)
		p.finish(ctx, d, rec, true)
		return
	}
	if p.crash(ctx, d, AfterBegin) {
		return
	}

	call := &Call{Key: d.key, Command: cmd, Attempt: d.attempt, KeyPrefix: p.cfg.KeyPrefix}
	opCtx, stopWatchdog := lease.KeepAlive(ctx, min(p.cfg.LockTTL, p.cfg.AckWait)/3, func() { _ = msg.InProgress() })
	outcome, err := p.execute(opCtx, d, h, call)
	if err != nil && errors.Is(context.Cause(opCtx), dedupe.ErrLockLost) {
		err = fmt.Errorf("%w (operation cancelled): %w", dedupe.ErrLockLost, err)
	}
	stopWatchdog()
	if p.crash(ctx, d, AfterOperation) {
		return
	}
	if err != nil {
		p.retryLater(ctx, d, lease, err)
		return
	}

	stored, err := p.commit(ctx, d, lease, fp, outcome)
	if err != nil {
		p.retryLater(ctx, d, lease, err)
		return
	}
	p.release(ctx, lease) // a no-op after our own commit, which deleted the lock
	if p.crash(ctx, d, AfterCommit) {
		return
	}
	// What Commit returns is what is stored; if another worker committed
	// first, that is the outcome to publish, not ours.
	p.finish(ctx, d, stored, false)
}

// execute runs the handler with in-delivery retries. A panic is recovered
// into an error and not retried here: it is likely to repeat, so it goes to
// JetStream's slower redelivery and, in the end, to the dead letters.
func (p *Processor) execute(ctx context.Context, d *delivery, h Handler, call *Call) (Outcome, error) {
	op := func() (Outcome, error) {
		o, err := safeHandle(ctx, h, call)
		var pe *PanicError
		switch {
		case errors.As(err, &pe):
			return o, backoff.Permanent(err)
		case err != nil && ctx.Err() != nil:
			return o, backoff.Permanent(err)
		case err == nil:
			if verr := o.validate(); verr != nil {
				return o, backoff.Permanent(verr)
			}
		}
		return o, err
	}
	notify := func(err error, wait time.Duration) {
		p.log.info(ctx, "operation failed; retrying", attrKey, d.key, attrKind, d.kind,
			attrAttempt, d.attempt, attrError, err, "wait", wait)
	}
	b := backoff.WithContext(p.cfg.Retry.NewBackOff(), ctx)
	return backoff.RetryNotifyWithData(op, b, notify)
}

// PanicError is a handler panic, recovered.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

func safeHandle(ctx context.Context, h Handler, call *Call) (o Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	return h.Handle(ctx, call)
}

// commit stores the outcome with the fenced commit. It runs to completion
// even while the processor stops, and retries a Redis error a few times: the
// script is idempotent, so running it twice is safe.
func (p *Processor) commit(ctx context.Context, d *delivery, lease *dedupe.Lease, fp string, o Outcome) (*dedupe.Record, error) {
	ctx = context.WithoutCancel(ctx)
	data, err := o.data()
	if err != nil {
		return nil, fmt.Errorf("encode outcome data: %w", err)
	}
	out := dedupe.Outcome{
		Status: string(o.Status), Code: o.Code, Message: o.Message, Data: data,
		Attempts: d.attempt, ProcessedAt: time.Now(),
	}
	b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond)), 3)
	return backoff.RetryWithData(func() (*dedupe.Record, error) {
		rec, err := p.store.Commit(ctx, lease, fp, out, o.Effect)
		if errors.Is(err, dedupe.ErrLockLost) || errors.Is(err, dedupe.ErrFingerprintMismatch) {
			return nil, backoff.Permanent(err)
		}
		return rec, err
	}, b)
}

// finish publishes a stored outcome and acks the message.
func (p *Processor) finish(ctx context.Context, d *delivery, rec *dedupe.Record, replayed bool) {
	ctx = context.WithoutCancel(ctx)
	res := messages.Result{
		Key: d.key, Command: d.kind, Status: messages.Status(rec.Outcome.Status),
		Code: rec.Outcome.Code, Message: rec.Outcome.Message, Data: rec.Outcome.Data,
		Attempts: rec.Outcome.Attempts, Replayed: replayed, ProcessedAt: rec.Outcome.ProcessedAt,
	}
	body := res.Marshal()
	b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond)), 3)
	err := backoff.Retry(func() error {
		pctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := p.js.Publish(pctx, p.cfg.Subjects.ResultFor(d.key), body)
		return err
	}, b)
	if err != nil {
		// Stored but not published: the redelivery will replay it.
		p.log.warn(ctx, "publish result failed; redelivering", attrKey, d.key, attrError, err)
		p.counters.redelivered.Add(1)
		_ = d.msg.NakWithDelay(p.nakDelay(d.attempt))
		return
	}
	p.reply(ctx, d, body)
	switch {
	case replayed:
		p.counters.replayed.Add(1)
	case res.Status == messages.StatusSucceeded:
		p.counters.succeeded.Add(1)
	default:
		p.counters.failed.Add(1)
	}
	if p.crash(ctx, d, AfterPublish) {
		return
	}
	p.ack(ctx, d)
	p.log.debug(ctx, "command done", attrKey, d.key, attrKind, d.kind, attrStatus, res.Status,
		attrCode, res.Code, attrAttempt, d.attempt, attrReplayed, replayed)
}

// refuse answers a rejected message and acks it. A rejection is never
// stored: it goes to rejected.<key> (except for an invalid key, which has no
// subject of its own) and to Reply-To.
func (p *Processor) refuse(ctx context.Context, d *delivery, rej *messages.RejectError) {
	ctx = context.WithoutCancel(ctx)
	body := messages.Result{
		Key: d.key, Command: d.kind, Status: messages.StatusRejected, Code: rej.Code, Message: rej.Message,
		Attempts: d.attempt, ProcessedAt: time.Now().UTC().Truncate(time.Millisecond),
	}.Marshal()
	if rej.Code != messages.CodeInvalidKey {
		if err := p.nc.Publish(p.cfg.Subjects.RejectedFor(d.key), body); err != nil {
			p.log.warn(ctx, "publish rejection failed", attrKey, d.key, attrError, err)
		}
	}
	p.reply(ctx, d, body)
	p.counters.rejected.Add(1)
	p.log.info(ctx, "command rejected", attrKey, d.key, attrKind, d.kind, attrCode, rej.Code, "message", rej.Message)
	p.ack(ctx, d)
}

func keyReused(key string) *messages.RejectError {
	return &messages.RejectError{Code: messages.CodeKeyReused,
		Message: "key " + key + " is bound to another command or payload; use a new key for a new operation"}
}

// whileLocked handles a message whose key another worker holds: a stored
// outcome can be answered without the lock (it never changes), anything else
// comes back later.
func (p *Processor) whileLocked(ctx context.Context, d *delivery, fp string) {
	rec, err := p.store.Get(ctx, d.key)
	switch {
	case err == nil && rec != nil && rec.Fingerprint != fp:
		p.refuse(ctx, d, keyReused(d.key))
	case err == nil && rec != nil && rec.State == dedupe.StateCompleted:
		p.finish(ctx, d, rec, true)
	case d.attempt >= p.cfg.MaxDeliver:
		p.deadLetter(ctx, d, errors.New("key locked by another worker on the last delivery"))
	default:
		p.counters.redelivered.Add(1)
		_ = d.msg.NakWithDelay(backoffDelay(p.cfg.LockedDelay, p.cfg.MaxNakDelay, d.attempt))
	}
}

// retryLater gives a delivery up without an outcome: release the lock, then
// redeliver later, or dead-letter on the last delivery. A processor that is
// stopping hands the message back at once for another worker.
func (p *Processor) retryLater(ctx context.Context, d *delivery, lease *dedupe.Lease, cause error) {
	p.release(ctx, lease)
	switch {
	case errors.Is(context.Cause(ctx), ErrStop):
		p.counters.redelivered.Add(1)
		_ = d.msg.Nak()
	case d.attempt >= p.cfg.MaxDeliver:
		p.deadLetter(ctx, d, cause)
	default:
		p.counters.redelivered.Add(1)
		delay := p.nakDelay(d.attempt)
		p.log.warn(ctx, "command not finished; redelivering", attrKey, d.key, attrKind, d.kind,
			attrAttempt, d.attempt, attrError, cause, "delay", delay)
		_ = d.msg.NakWithDelay(delay)
	}
}

// deadLetter copies the command, with its headers and the reason, to
// dlq.<type>, tells the client, and removes it from the work queue. The key
// keeps no outcome, so it can be re-driven with the same key.
func (p *Processor) deadLetter(ctx context.Context, d *delivery, cause error) {
	ctx = context.WithoutCancel(ctx)
	if err := p.copyToDeadLetters(ctx, d, d.msg.Data(), d.msg.Headers(), cause.Error()); err != nil {
		return // not copied: leave it un-acked rather than lose it
	}
	if err := d.msg.Term(); err != nil {
		p.log.warn(ctx, "term failed", attrKey, d.key, attrError, err)
	}
}

// copyToDeadLetters publishes a command to dlq.<type> with its body and
// headers, plus Dlq-Reason and Dlq-Deliveries, then sends the client a
// rejected / dead_lettered notice. It returns an error only when the copy
// could not be stored.
func (p *Processor) copyToDeadLetters(ctx context.Context, d *delivery, body []byte, header nats.Header, reason string) error {
	dl := nats.NewMsg(p.cfg.Subjects.DeadLetterFor(d.kind))
	dl.Data = body
	for k, v := range header {
		dl.Header[k] = append([]string(nil), v...)
	}
	dl.Header.Set(messages.HeaderDlqReason, reason)
	dl.Header.Set(messages.HeaderDlqDeliveries, strconv.Itoa(d.attempt))
	b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond)), 5)
	err := backoff.Retry(func() error {
		pctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := p.js.PublishMsg(pctx, dl)
		return err
	}, b)
	if err != nil {
		p.log.error(ctx, "dead-letter copy failed; leaving the command in the work queue",
			attrKey, d.key, attrKind, d.kind, attrError, err)
		return err
	}
	p.counters.deadLettered.Add(1)
	p.log.error(ctx, "command dead-lettered", attrKey, d.key, attrKind, d.kind, attrAttempt, d.attempt, "reason", reason)
	notice := messages.Result{
		Key: d.key, Command: d.kind, Status: messages.StatusRejected, Code: messages.CodeDeadLettered,
		Message:  "gave up after " + strconv.Itoa(d.attempt) + " deliveries: " + reason + "; the key keeps no outcome and may be sent again",
		Attempts: d.attempt, ProcessedAt: time.Now().UTC().Truncate(time.Millisecond),
	}.Marshal()
	if messages.ValidKey(d.key) {
		_ = p.nc.Publish(p.cfg.Subjects.RejectedFor(d.key), notice)
	}
	p.reply(ctx, d, notice)
	return nil
}

func (p *Processor) reply(ctx context.Context, d *delivery, body []byte) {
	if d.replyTo == "" {
		return
	}
	if err := p.nc.Publish(d.replyTo, body); err != nil {
		p.log.warn(ctx, "reply failed", attrKey, d.key, "reply_to", d.replyTo, attrError, err)
	}
}

// ack double-acks: when it returns nil the server has the ack and will not
// redeliver. If it fails, the redelivery replays the stored outcome.
func (p *Processor) ack(ctx context.Context, d *delivery) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	if err := d.msg.DoubleAck(actx); err != nil {
		p.log.warn(ctx, "ack failed; the redelivery will replay", attrKey, d.key, attrError, err)
	}
}

func (p *Processor) release(ctx context.Context, lease *dedupe.Lease) {
	if lease == nil {
		return
	}
	if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
		p.log.warn(ctx, "release lock failed; it expires by itself", attrKey, lease.Key(), attrError, err)
	}
}

func (p *Processor) nakDelay(attempt int) time.Duration {
	return backoffDelay(p.cfg.NakDelay, p.cfg.MaxNakDelay, attempt)
}

// backoffDelay doubles base with each delivery after the first, up to maxDelay.
// Every redelivery counts against MaxDeliver, so waits must grow: a key
// locked by a long operation must not burn a duplicate's deliveries in
// seconds.
func backoffDelay(base, maxDelay time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

func (p *Processor) crash(ctx context.Context, d *delivery, at Failpoint) bool {
	if p.cfg.Failpoint == nil || !p.cfg.Failpoint(at) {
		return false
	}
	p.log.warn(ctx, "failpoint: abandoning delivery", "failpoint", string(at), attrKey, d.key, attrAttempt, d.attempt)
	return true
}

// validReplyTo refuses Reply-To subjects that would let a client make the
// worker publish where only the system may: wildcards, the JetStream and
// system APIs ($JS.API... could delete a stream), and idempay's own subject
// roots (result.<other key> would forge another key's outcome).
func (p *Processor) validReplyTo(s string) bool {
	if len(s) > 512 || strings.HasPrefix(s, "$") || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	sub := p.cfg.Subjects
	for _, root := range []string{sub.Command, sub.Result, sub.Rejected, sub.DeadLetter} {
		if s == root || strings.HasPrefix(s, root+".") {
			return false
		}
	}
	return true
}
