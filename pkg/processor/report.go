package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/internal/tracing"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// report carries out a delivery's verdict: the lock, the answers on NATS,
// and the message's end (ack, nak or term), with the counters and logs.
// Every step that must finish does so on a context that Stop cannot cancel.
func (p *Processor) report(ctx context.Context, d *delivery, v verdict) {
	ctx = context.WithoutCancel(ctx)
	switch v.kind {
	case vAbandon:
	case vReject:
		p.release(ctx, d)
		p.refuse(ctx, d, v.reject)
	case vAnswer:
		p.release(ctx, d)
		p.answer(ctx, d, v.answer, v.replayed)
	case vRetry:
		p.retry(ctx, d, v)
	case vDeadLettered:
		// Told holding the lock: a resolver that voids the key takes it
		// after this notice is out, so its dead_lettered comes after an
		// outcome_unknown read before the void, never before it (the
		// explorer's seed 495, read from its texts: a stale unknown heard
		// after the key's resolution).
		if !p.heldForReplicas(ctx, d) {
			p.notifyDeadLetter(ctx, d, v.effect, v.voided)
			p.terminate(ctx, d, "dead-lettered earlier")
		}
		p.release(ctx, d)
	case vDeadLetter:
		p.deadLetter(ctx, d, v)
	}
}

// answer publishes a stored outcome to RESULTS (waiting for its PubAck: an
// outcome is in RESULTS before its message leaves COMMANDS) and to
// Reply-To, then acks. If the publish fails the message comes back and the
// next delivery replays the outcome.
func (p *Processor) answer(ctx context.Context, d *delivery, rec *dedupe.Record, replayed bool) {
	if err := p.replicated(ctx, d); err != nil {
		// Stored on the primary, not yet where a failover keeps it: not
		// answered, so that no client learns an outcome a failover could
		// take back. The next delivery replays it, or runs the command
		// again with the same key if a failover lost it.
		p.log.warn(ctx, "outcome not on enough Redis replicas yet; redelivering", attrKey, d.key, attrError, err)
		p.counters.redelivered.Add(1)
		p.cfg.Metrics.redelivered("replication")
		_ = d.msg.NakWithDelay(backoffDelay(p.cfg.NakDelay, p.cfg.MaxNakDelay, d.deliveries))
		return
	}
	res := rec.Answer(replayed)
	res.Key = d.key // the record's key is this key; set for clarity
	body := res.Marshal()
	if err := p.publishResult(ctx, d.key, body); err != nil {
		p.log.warn(ctx, "publish result failed; redelivering", attrKey, d.key, attrError, err)
		p.counters.redelivered.Add(1)
		p.cfg.Metrics.redelivered("publish")
		_ = d.msg.NakWithDelay(backoffDelay(p.cfg.NakDelay, p.cfg.MaxNakDelay, d.deliveries))
		return
	}
	p.reply(ctx, d, body)
	p.cfg.Metrics.answered(p.kindLabel(d.kind), string(res.Status), res.Code, replayed)
	traceAnswer(ctx, res.Status, res.Code, replayed)
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
	if p.log.enabled(ctx, slog.LevelDebug) { // the arguments alone would cost allocations on every command
		p.log.debug(ctx, "command done", attrKey, d.key, attrKind, d.kind, attrStatus, res.Status,
			attrCode, res.Code, attrAttempt, d.deliveries, attrReplayed, replayed)
	}
}

// heldForReplicas hands the message back, and reports true, when the
// key's record is not yet on the replicas Config.WaitReplicas asks for: a
// dead letter, like an outcome, is told only once a failover cannot take
// it back (and let the key run again after "dead_lettered").
func (p *Processor) heldForReplicas(ctx context.Context, d *delivery) bool {
	err := p.replicated(ctx, d)
	if err == nil {
		return false
	}
	p.log.warn(ctx, "dead letter not on enough Redis replicas yet; redelivering", attrKey, d.key, attrError, err)
	p.counters.redelivered.Add(1)
	p.cfg.Metrics.redelivered("replication")
	_ = d.msg.NakWithDelay(backoffDelay(p.cfg.NakDelay, p.cfg.MaxNakDelay, d.deliveries))
	return true
}

// replicated waits, when Config.WaitReplicas asks for it, until that many
// Redis replicas have every write to the key's record so far.
func (p *Processor) replicated(ctx context.Context, d *delivery) error {
	return p.keyReplicated(ctx, d.key)
}

// keyReplicated is replicated for any key: every answer that states what
// a key's record holds - an outcome, a dead letter, a lookup's reply -
// goes out only once the replicas have that record.
func (p *Processor) keyReplicated(ctx context.Context, key string) error {
	if p.cfg.WaitReplicas <= 0 {
		return nil
	}
	n, err := p.store.WaitReplicas(ctx, key, p.cfg.WaitReplicas, p.cfg.WaitTimeout)
	switch {
	case err != nil:
		return err
	case n < p.cfg.WaitReplicas:
		p.counters.replicaShortfall.Add(1)
		return fmt.Errorf("%d of %d Redis replicas acknowledged within %v", n, p.cfg.WaitReplicas, p.cfg.WaitTimeout)
	}
	return nil
}

// publishResult publishes an outcome to result.<key> and waits for the
// stream's PubAck (or the library's timeout of callTimeout), retrying a few
// times. The publish is asynchronous, so the connection's single PubAck
// subscription serves every delivery in flight.
func (p *Processor) publishResult(ctx context.Context, key string, body []byte) error {
	subject := p.cfg.Topology.Subjects.ResultFor(key)
	publish := func() error {
		fut, err := p.js.PublishMsgAsync(p.outMsg(ctx, subject, body))
		if err != nil {
			return err
		}
		select {
		case <-fut.Ok():
			return nil
		case err := <-fut.Err():
			return err
		case <-ctx.Done():
			return backoff.Permanent(ctx.Err())
		}
	}
	if err := publish(); err == nil {
		return nil // the common case, without a backoff to build
	}
	b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond)), 3)
	return backoff.Retry(publish, b)
}

// refuse answers a rejected message and acks it. A rejection is never
// stored: it goes to rejected.<key> (except for an invalid key, which has no
// subject of its own) and to Reply-To.
func (p *Processor) refuse(ctx context.Context, d *delivery, rej *messages.RejectError) {
	body := rejection(d, rej.Code, rej.Message).Marshal()
	if rej.Code != messages.CodeInvalidKey {
		if err := p.nc.PublishMsg(p.outMsg(ctx, p.cfg.Topology.Subjects.RejectedFor(d.key), body)); err != nil {
			p.log.warn(ctx, "publish rejection failed", attrKey, d.key, attrError, err)
		}
	}
	p.reply(ctx, d, body)
	p.counters.rejected.Add(1)
	p.cfg.Metrics.answered(p.kindLabel(d.kind), string(messages.StatusRejected), rej.Code, false)
	traceAnswer(ctx, messages.StatusRejected, rej.Code, false)
	p.log.info(ctx, "command rejected", attrKey, d.key, attrKind, d.kind, attrCode, rej.Code, "message", rej.Message)
	p.ack(ctx, d)
}

// retry hands the message back for later. A held lock is released, and the
// record told what the attempt may have done.
func (p *Processor) retry(ctx context.Context, d *delivery, v verdict) {
	if d.lease != nil {
		switch v.settle {
		case settleRelease:
			p.release(ctx, d)
		default:
			effect := dedupe.EffectNone
			if v.settle == settleUnknown {
				effect = dedupe.EffectUnknown
			}
			if err := p.store.Settle(ctx, d.lease, effect, v.settle == settleDeferred); err != nil && !errors.Is(err, dedupe.ErrLockLost) {
				p.log.warn(ctx, "settle failed; the lock expires by itself", attrKey, d.key, attrError, err)
			}
		}
	}
	p.counters.redelivered.Add(1)
	p.cfg.Metrics.redelivered(v.why)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AttrRedelivered.String(v.why))
	}
	if v.busy {
		p.counters.lockBusy.Add(1)
		p.cfg.Metrics.inc(p.cfg.Metrics.lockBusyCounter())
	}
	if p.stopping.Load() {
		_ = d.msg.Nak() // for another worker, now
		return
	}
	p.log.info(ctx, "command not finished; redelivering", attrKey, d.key, attrKind, d.kind,
		attrAttempt, d.deliveries, "reason", v.reason, "delay", v.delay)
	_ = d.msg.NakWithDelay(v.delay)
}

// deadLetter ends a command whose key has no tries left, holding its lock
// under the watchdog: copy it to dlq.<kind>, record the dead letter in the
// key's record (which releases the lock), tell the client, and terminate
// the message. A key whose outcome is unknown goes on the resolution
// schedule first, so that a crash between the two leaves at worst an
// entry the resolver drops. A step that fails hands the message back: the
// next delivery, finding no tries left, does it again.
func (p *Processor) deadLetter(ctx context.Context, d *delivery, v verdict) {
	wctx, stop := p.watchdog(ctx, d)
	stored, err := p.deadLetterSteps(wctx, d, v)
	stop()
	switch {
	case errors.Is(err, errAbandoned):
		return
	case err != nil:
		p.log.error(ctx, "dead letter failed; redelivering", attrKey, d.key, attrKind, d.kind, attrError, err)
		p.release(ctx, d)
		_ = d.msg.NakWithDelay(p.cfg.NakDelay)
		return
	case stored != nil:
		// An outcome is stored after all: answer it; the copy is moot.
		p.release(ctx, d)
		p.answer(ctx, d, stored, true)
		return
	}
	if p.heldForReplicas(ctx, d) {
		// Recorded, copied, not yet told: the next delivery finds the dead
		// letter in the record and tells it once the replicas have it.
		return
	}
	p.counters.deadLettered.Add(1)
	p.cfg.Metrics.deadLettered(p.kindLabel(d.kind), v.effect)
	if v.effect != dedupe.EffectNone {
		p.counters.outcomeUnknown.Add(1)
	}
	p.log.error(ctx, "command dead-lettered", attrKey, d.key, attrKind, d.kind, attrAttempt, d.deliveries,
		"effect", v.effect, "voided", v.voided, "reason", v.reason)
	p.notifyDeadLetter(ctx, d, v.effect, v.voided)
	p.terminate(ctx, d, "dead-lettered: "+v.reason)
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// errAbandoned: a failpoint fired; the delivery does nothing more.
var errAbandoned = errors.New("processor: abandoned at a failpoint")

// deadLetterSteps are deadLetter's writes, in order.
func (p *Processor) deadLetterSteps(ctx context.Context, d *delivery, v verdict) (*dedupe.Record, error) {
	if v.effect == dedupe.EffectUnknown {
		if err := p.store.Schedule(ctx, d.key, time.Now().Add(p.cfg.ResolveAfter)); err != nil {
			return nil, err
		}
	}
	if err := p.confirm(ctx, d); err != nil {
		return nil, err // a stale verdict: its copy would claim what another worker may have changed
	}
	if err := p.copyToDeadLetters(ctx, d, v); err != nil {
		return nil, fmt.Errorf("dead-letter copy: %w", err)
	}
	if p.crash(ctx, d, AfterDeadLetterCopy) {
		return nil, errAbandoned
	}
	var body []byte
	if v.effect == dedupe.EffectUnknown {
		body = d.msg.Data()
	}
	// The fence covers every message of the key published until the answer
	// is out, not only this one: a copy of the command sent again after the
	// dedupe window, waiting behind this delivery's lock or crossing the
	// answer in flight, must end as this dead letter too. Run after it, it
	// could take effect after the client was told dead_lettered ("no call
	// for the key can take effect afterwards"). Config.DeadLetterFence
	// says what the margin covers; a re-drive is a publish after it.
	stored, err := p.store.DeadLetter(context.WithoutCancel(ctx), d.lease, dedupe.DeadLetter{
		Published: latest(d.published, time.Now().Add(p.cfg.DeadLetterFence)), Effect: v.effect, Voided: v.voided, Body: body, Tenant: d.tenant, Kind: d.kind, Fingerprint: d.fp,
	})
	if err != nil {
		return nil, fmt.Errorf("record the dead letter after its copy: %w", err)
	}
	return stored, nil
}

// copyToDeadLetters publishes the command to dlq.<kind> with its body and
// headers, its Nats-Msg-Id (the key) included, as the contract says, plus
// Dlq-Reason, Dlq-Deliveries, Dlq-Key, Dlq-Effect, Dlq-Stream-Seq and
// Dlq-Published. The dead-letter stream's duplicate window is JetStream's
// shortest (DeadLetterDuplicates), so it keeps every dead letter of a key:
// two are at least a redelivery apart. A copy made again after a crash
// between the copy and the condemn is kept too; Dlq-Stream-Seq and
// Dlq-Published tell it is the same dead letter.
func (p *Processor) copyToDeadLetters(ctx context.Context, d *delivery, v verdict) error {
	dl := nats.NewMsg(p.cfg.Topology.Subjects.DeadLetterFor(d.kind))
	dl.Data = d.msg.Data()
	for k, vals := range d.msg.Headers() {
		dl.Header[k] = append([]string(nil), vals...)
	}
	seq := strconv.FormatUint(d.seq, 10)
	dl.Header.Set(messages.HeaderDlqKey, d.key)
	dl.Header.Set(messages.HeaderDlqReason, v.reason)
	dl.Header.Set(messages.HeaderDlqDeliveries, strconv.Itoa(d.deliveries))
	dl.Header.Set(messages.HeaderDlqEffect, v.effect)
	if v.voided {
		dl.Header.Set(messages.HeaderDlqVoided, "true")
	}
	dl.Header.Set(messages.HeaderDlqStreamSeq, seq)
	dl.Header.Set(messages.HeaderDlqPublished, d.published.UTC().Format(time.RFC3339Nano))
	b := backoff.WithMaxRetries(backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond)), 5)
	return backoff.Retry(func() error {
		pctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := p.js.PublishMsg(pctx, dl)
		return err
	}, b)
}

// notifyDeadLetter tells the client its command was dead-lettered, on
// rejected.<key> and Reply-To: dead_lettered when the operation certainly
// did not take effect, outcome_unknown when it may have.
func (p *Processor) notifyDeadLetter(ctx context.Context, d *delivery, effect string, voided bool) {
	n := deadLetterNotice(d.key, d.kind, d.fp, d.deliveries, effect, voided)
	body := n.Marshal()
	if err := p.nc.PublishMsg(p.outMsg(ctx, p.cfg.Topology.Subjects.RejectedFor(d.key), body)); err != nil {
		p.log.warn(ctx, "publish dead-letter notice failed", attrKey, d.key, attrError, err)
	}
	p.reply(ctx, d, body)
	p.cfg.Metrics.answered(p.kindLabel(d.kind), string(messages.StatusRejected), n.Code, false)
	traceAnswer(ctx, messages.StatusRejected, n.Code, false)
	trace.SpanFromContext(ctx).SetStatus(codes.Error, n.Code)
}

// deadLetterNotice is the rejected answer of a dead letter (contract v1.2:
// with the fingerprint of the message it refuses).
func deadLetterNotice(key, kind, fp string, deliveries int, effect string, voided bool) messages.Result {
	switch {
	case effect == dedupe.EffectUnknown:
		return rejected(key, kind, fp, deliveries, messages.CodeOutcomeUnknown,
			"the command was dead-lettered after its tries, and a call may have taken effect; it is not known yet: "+
				"send it again with the same key (never a new one) to learn its outcome, which the workers keep asking the provider for")
	case voided:
		return rejected(key, kind, fp, deliveries, messages.CodeDeadLettered,
			"the command was dead-lettered after its tries; it did not take effect, and the key was voided at the provider, so it never will: "+
				"send the operation again with a new key")
	}
	return rejected(key, kind, fp, deliveries, messages.CodeDeadLettered,
		"the command was dead-lettered after its tries; it did not take effect, and the key keeps no outcome: it may be sent again")
}

// outMsg is an answer on subject, with the delivery's span as its
// traceparent when there is one.
func (p *Processor) outMsg(ctx context.Context, subject string, body []byte) *nats.Msg {
	msg := &nats.Msg{Subject: subject, Data: body}
	if trace.SpanContextFromContext(ctx).IsValid() {
		msg.Header = nats.Header{}
		tracing.Inject(ctx, msg.Header)
	}
	return msg
}

// traceAnswer records on the delivery's span what it answered.
func traceAnswer(ctx context.Context, status messages.Status, code string, replayed bool) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AttrStatus.String(string(status)), tracing.AttrReplayed.Bool(replayed))
		if code != "" {
			span.SetAttributes(tracing.AttrCode.String(code))
		}
	}
}

func (p *Processor) reply(ctx context.Context, d *delivery, body []byte) {
	if d.replyTo == "" {
		return
	}
	if err := p.nc.PublishMsg(p.outMsg(ctx, d.replyTo, body)); err != nil {
		p.log.warn(ctx, "reply failed", attrKey, d.key, "reply_to", d.replyTo, attrError, err)
	}
}

// ack acks the message: a plain ack, without waiting for the server's
// confirmation. Everything the ack stands for is stored first (the outcome
// in Redis and RESULTS), so a lost ack costs only a redelivery that
// replays the stored outcome.
func (p *Processor) ack(ctx context.Context, d *delivery) {
	if err := d.msg.Ack(); err != nil {
		p.log.warn(ctx, "ack failed; the redelivery will replay", attrKey, d.key, attrError, err)
	}
}

// terminate ends a message without redelivery. TermWithReason puts the
// reason in JetStream's advisory; servers before 2.10.4 ignore a term with
// a reason altogether, so they get a plain Term.
func (p *Processor) terminate(ctx context.Context, d *delivery, reason string) {
	var err error
	if serverAtLeast(p.nc.ConnectedServerVersion(), 2, 10, 4) {
		err = d.msg.TermWithReason(reason)
	} else {
		err = d.msg.Term()
	}
	if err != nil {
		p.log.warn(ctx, "term failed; the redelivery will end it again", attrKey, d.key, attrError, err)
	}
}

// release gives up the delivery's lock, if it still holds one.
func (p *Processor) release(ctx context.Context, d *delivery) {
	if d.lease == nil {
		return
	}
	if err := d.lease.Release(context.WithoutCancel(ctx)); err != nil {
		p.log.warn(ctx, "release lock failed; it expires by itself", attrKey, d.key, attrError, err)
	}
}

func (p *Processor) crash(ctx context.Context, d *delivery, at Failpoint) bool {
	if p.cfg.Failpoint == nil || !p.cfg.Failpoint(at, d.key) {
		return false
	}
	p.log.warn(ctx, "failpoint: abandoning delivery", "failpoint", string(at), attrKey, d.key, attrAttempt, d.deliveries)
	return true
}

// validReplyTo refuses Reply-To subjects that would let a client make the
// worker publish where only the system may: anything but visible ASCII
// (a control character or a non-breaking space in front of "$JS.API" is
// still that subject to some readers), wildcards, the JetStream and system
// APIs ($JS.API... could delete a stream), and idempay's own subject roots
// (result.<other key> would forge another key's outcome).
func (p *Processor) validReplyTo(s string) bool {
	if len(s) > 512 || strings.HasPrefix(s, "$") {
		return false
	}
	for i := range len(s) {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	sub := p.cfg.Topology.Subjects
	for _, root := range []string{sub.Command, sub.Result, sub.Rejected, sub.DeadLetter, sub.Lookup} {
		if s == root || strings.HasPrefix(s, root+".") {
			return false
		}
	}
	return true
}

// rejection is the rejected answer of a delivery. It carries the refused
// message's fingerprint when its body could be validated (contract v1.2),
// so that a client waiting on rejected.<key> never takes another message's
// refusal for its own. (Outcomes become answers in dedupe.Record.Answer.)
func rejection(d *delivery, code, message string) messages.Result {
	return rejected(d.key, d.kind, d.fp, d.deliveries, code, message)
}

func rejected(key, kind, fp string, deliveries int, code, message string) messages.Result {
	return messages.Result{Key: key, Kind: kind, Status: messages.StatusRejected, Code: code, Message: message,
		Attempts: deliveries, ProcessedAt: time.Now().UTC().Truncate(time.Millisecond), Fingerprint: fp}
}

// serverAtLeast reports whether a "2.10.4"-style version is at least
// major.minor.patch; an unreadable version is taken as old.
func serverAtLeast(version string, major, minor, patch int) bool {
	want := [3]int{major, minor, patch}
	parts := strings.SplitN(strings.SplitN(version, "-", 2)[0], ".", 3)
	for i, w := range want {
		if i >= len(parts) {
			return false
		}
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return false
		}
		if n != w {
			return n > w
		}
	}
	return true
}
