package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Bounds of the dead-letter lookup. Dead letters are rare, so the scan
// of one dedupe window of them is short; past these bounds the answer is
// the cautious one (outcome_unknown). The scan is the stopgap until the
// workers answer a key's state themselves (endedWithoutOutcome).
const (
	deadLetterScanMax = 1_000
	deadLetterBatch   = 256
	// deadLetterScans is how many scans one gateway runs at once; a
	// request that finds them all busy gets the cautious answer at once.
	deadLetterScans = 2
	// deadLetterSlack widens the scan's start for clock skew between this
	// host and the NATS server.
	deadLetterSlack = time.Minute
)

// settleDuplicate answers a request whose publish JetStream dropped as a
// duplicate of message seq, another request's, when the result stream had
// no outcome for the key. What NATS holds decides, never this process's
// memory, so any gateway gives the same answer:
//
//   - seq is still in the command stream: the first request is in flight.
//     409 if it is this command; if another, the key's record decides
//     (settleOtherBody).
//   - seq is gone: a message leaves the command stream only once its
//     key's outcome, if it has one, is in the result stream. So the
//     outcome is read again: if there is one, it is replayed (or 422 if it
//     is another command's).
//   - gone without an outcome: it was rejected or dead-lettered, and
//     endedWithoutOutcome tells which (writeEnded).
func (g *Gateway) settleDuplicate(ctx context.Context, w http.ResponseWriter, k opKey, cmd messages.Command, seq uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	top := g.cfg.Topology
	stream, err := g.js.Stream(ctx, top.CommandStream)
	if err != nil {
		g.cannotSettle(ctx, w, k, fmt.Errorf("look up stream %s: %w", top.CommandStream, err))
		return
	}
	msg, err := stream.GetMsg(ctx, seq)
	switch {
	case err == nil && sameCommand(top, msg, k.op, cmd):
		writeProblem(w, problemOf(CodeRequestInFlight), k.client,
			"the first request with this key is still in flight; send the same request again after Retry-After seconds to get its outcome", retrySoon)
		return
	case err == nil:
		g.settleOtherBody(ctx, w, k, cmd)
		return
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		g.cannotSettle(ctx, w, k, fmt.Errorf("read message %d of %s: %w", seq, top.CommandStream, err))
		return
	}

	res, err := g.client.Status(ctx, k.op)
	switch {
	case err == nil:
		if res.Kind != cmd.Kind() || (res.Fingerprint != "" && res.Fingerprint != messages.Fingerprint(cmd)) {
			writeProblem(w, problemOf(messages.CodeKeyReused), k.client,
				fmt.Sprintf("the key already holds the outcome of another %s; use a new key for a new operation", res.Kind), 0)
			return
		}
		writeOutcome(w, *res, true, k)
		return
	case !errors.Is(err, client.ErrNotFound):
		g.cannotSettle(ctx, w, k, err)
		return
	}
	g.writeEnded(ctx, w, k, messages.Fingerprint(cmd), g.endedWithoutOutcome(ctx, k.op, seq, cmd.Kind()))
}

// settleOtherBody answers a request dropped as the duplicate of a message
// of another body still in the command stream. That message holds the
// dedupe window, not necessarily the key: it may be a re-use that a worker
// will refuse, the key being this body's. The fault explorer (seed 59)
// found a repeat of a charge in flight told idempotency_key_reused because
// a re-use had been published just before it. So the key's record decides
// (the workers' lookup service): bound to another command or body, 422;
// holding this body's outcome, its replay; anything else (not bound yet,
// bound to this body and in flight, or no answer), 409: the same request
// again gets its answer once the window has passed. (One that ended
// dead-lettered is settled by pkg/client's own lookup before this.)
func (g *Gateway) settleOtherBody(ctx context.Context, w http.ResponseWriter, k opKey, cmd messages.Command) {
	fp := messages.Fingerprint(cmd)
	st, err := g.client.Lookup(ctx, k.op)
	switch {
	case err == nil && st.Fingerprint != "" && (st.Fingerprint != fp || st.Kind != cmd.Kind()):
		writeProblem(w, problemOf(messages.CodeKeyReused), k.client,
			"the key belongs to another command; use a new key for a new operation", 0)
	case err == nil && st.State == messages.KeyStateCompleted && st.Outcome != nil && st.Outcome.Fingerprint == fp && st.Outcome.Kind == cmd.Kind():
		writeOutcome(w, *st.Outcome, true, k)
	default:
		if err != nil {
			g.log.WarnContext(ctx, "gateway: look up a key held by another body's message", attrRequestID, requestID(ctx), attrOpKey, k.op, attrError, err)
		}
		writeProblem(w, problemOf(CodeRequestInFlight), k.client,
			"a request with this key is still in flight; send the same request again after Retry-After seconds to get its outcome", retrySoon)
	}
}

// ending is what became of a key's message that left the command stream
// without an outcome.
type ending struct {
	// code is the message's rejection: messages.CodeKeyReused,
	// CodeDeadLettered or CodeOutcomeUnknown; empty when nothing says.
	code string
	// fingerprint is the refused message's payload fingerprint, when known.
	fingerprint string
	// voided: dead-lettered, and the key voided at the provider: it never
	// takes effect, so the request must not be sent again with it.
	voided bool
}

// endedWithoutOutcome tells what became of message seq of key (a command
// of kind), which left the command stream without an outcome. It reads, in
// order, the refusal a gateway recorded for that message (stateStore), then
// what the workers' lookup service says of the key's record (contract
// v1.2's extension: dead_lettered, with whether it was voided, or
// outcome_unknown), and only where no worker answers lookups (workers
// before v1.2) the message's dead letter (a scan bounded in messages, time
// and number at once). Errors are logged: the caller gives the cautious
// answer.
func (g *Gateway) endedWithoutOutcome(ctx context.Context, key string, seq uint64, kind string) ending {
	rec, found, err := g.state.ended(ctx, key, seq)
	if err != nil {
		g.log.WarnContext(ctx, "gateway: read a recorded refusal", attrRequestID, requestID(ctx), attrOpKey, key, attrError, err)
	}
	if found {
		return ending{code: rec.Code, fingerprint: rec.Fingerprint}
	}
	st, err := g.client.Lookup(ctx, key)
	switch {
	case err == nil && st.State == messages.KeyStateDeadLettered:
		return ending{code: messages.CodeDeadLettered, fingerprint: st.Fingerprint, voided: st.Voided}
	case err == nil && st.State == messages.KeyStateOutcomeUnknown:
		return ending{code: messages.CodeOutcomeUnknown, fingerprint: st.Fingerprint}
	case err == nil:
		return ending{} // in progress again, or an outcome after all: nothing says it ended
	case !errors.Is(err, client.ErrNoLookup):
		g.log.WarnContext(ctx, "gateway: look the key up; answering outcome_unknown", attrRequestID, requestID(ctx), attrOpKey, key, attrError, err)
		return ending{}
	}
	select {
	case g.scans <- struct{}{}:
		defer func() { <-g.scans }()
	default:
		g.log.InfoContext(ctx, "gateway: dead-letter scans busy; answering outcome_unknown", attrRequestID, requestID(ctx), attrOpKey, key)
		return ending{}
	}
	window := g.dedupeWindow(ctx)
	effect, found, err := g.deadLetterEffect(ctx, key, seq, kind, window)
	if err != nil {
		g.log.WarnContext(ctx, "gateway: look up dead letter; answering outcome_unknown", attrRequestID, requestID(ctx), attrOpKey, key, attrError, err)
	}
	switch {
	case found && effect == "none":
		return ending{code: messages.CodeDeadLettered}
	case found:
		return ending{code: messages.CodeOutcomeUnknown}
	}
	return ending{}
}

// writeEnded answers for a key whose message ended without an outcome, to
// a request whose body has fingerprint fp:
//
//   - refused as idempotency_key_reused, with fp: this very body was
//     refused, and is again (422);
//   - dead-lettered with certainly no effect: 503 dead_lettered;
//   - anything else: 504 outcome_unknown, since nothing says the
//     operation did not take effect.
func (g *Gateway) writeEnded(ctx context.Context, w http.ResponseWriter, k opKey, fp string, e ending) {
	window := g.dedupeWindow(ctx)
	switch {
	case e.code == messages.CodeKeyReused && e.fingerprint == fp:
		writeProblem(w, problemOf(messages.CodeKeyReused), k.client,
			"the key belongs to another command; this body was refused for it and nothing changed. Use a new key for a new operation", 0)
	case e.code == messages.CodeDeadLettered && e.voided:
		writeProblem(w, problemOf(messages.CodeDeadLettered), k.client,
			"the key's command used its tries and was dead-lettered; it certainly did not take effect, and the key was voided at the provider, so it never will. Send the operation again with a NEW key", 0)
	case e.code == messages.CodeDeadLettered:
		writeProblem(w, problemOf(messages.CodeDeadLettered), k.client,
			"the key's command used its tries and was dead-lettered; it certainly did not take effect. Send the same request again with the same key after Retry-After seconds: it runs afresh", window)
	case e.code == messages.CodeOutcomeUnknown:
		writeProblem(w, problemOf(messages.CodeOutcomeUnknown), k.client,
			"the key's command was dead-lettered and may have taken effect. Send the same request again with the SAME key after Retry-After seconds to learn its outcome; never use a new key for it", window)
	default:
		writeProblem(w, problemOf(messages.CodeOutcomeUnknown), k.client,
			"the key's earlier command ended without an outcome (rejected or dead-lettered), and nothing says it did not take effect. Send the same request again with the SAME key after Retry-After seconds; never use a new key for it", window)
	}
}

// cannotSettle answers when NATS could not be read: the key's earlier
// command exists, its state is unknown here. The cause goes to the log
// with the request's id, never to the caller (it names internal streams).
func (g *Gateway) cannotSettle(ctx context.Context, w http.ResponseWriter, k opKey, err error) {
	infoOf(ctx).err = err
	writeProblem(w, problemOf(CodeServiceUnavailable), k.client,
		"the key's earlier command exists, but its state could not be read; send the same request again with the same key", retrySoon)
}

// inCommandStream reports whether message seq is still in the command
// stream (not yet answered, or answered and not yet acknowledged).
func (g *Gateway) inCommandStream(ctx context.Context, seq uint64) (bool, error) {
	stream, err := g.js.Stream(ctx, g.cfg.Topology.CommandStream)
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", g.cfg.Topology.CommandStream, err)
	}
	_, err = stream.GetMsg(ctx, seq)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("read message %d of %s: %w", seq, g.cfg.Topology.CommandStream, err)
}

// sameCommand reports whether msg, a stored command message, is cmd under
// key: same kind, same payload fingerprint.
func sameCommand(top messages.Topology, msg *jetstream.RawStreamMsg, key string, cmd messages.Command) bool {
	if id := msg.Header.Get(messages.HeaderMsgID); id != "" && id != key {
		return false
	}
	kind, ok := top.Subjects.KindOf(msg.Subject)
	if !ok || kind != cmd.Kind() {
		return false
	}
	stored, err := decodeKind(kind, msg.Data)
	return err == nil && messages.Fingerprint(stored) == messages.Fingerprint(cmd)
}

// decodeKind decodes a command body of a kind the gateway sends.
func decodeKind(kind string, body []byte) (messages.Command, error) {
	switch kind {
	case messages.KindPaymentCharge:
		var c messages.ChargeRequest
		return c, messages.Decode(body, &c)
	case messages.KindPaymentRefund:
		var c messages.RefundRequest
		return c, messages.Decode(body, &c)
	case messages.KindCartAdd:
		var c messages.CartAddRequest
		return c, messages.Decode(body, &c)
	default:
		return nil, fmt.Errorf("gateway: unknown command kind %q", kind)
	}
}

// dedupeWindow returns the command stream's duplicate window: how long a
// key cannot be sent again. Zero when it cannot be read.
func (g *Gateway) dedupeWindow(ctx context.Context) time.Duration {
	s, err := g.js.Stream(ctx, g.cfg.Topology.CommandStream)
	if err != nil {
		return 0
	}
	return s.CachedInfo().Config.Duplicates
}

// deadLetterEffect looks for the dead letter of message seq of key among
// the dead letters of kind written since the message can have been
// published (one dedupe window ago: a duplicate was dropped against it),
// and returns its Dlq-Effect ("none" or "unknown").
func (g *Gateway) deadLetterEffect(ctx context.Context, key string, seq uint64, kind string, window time.Duration) (effect string, found bool, err error) {
	top := g.cfg.Topology
	start := time.Now().Add(-window - deadLetterSlack)
	cons, err := g.js.CreateConsumer(ctx, top.DeadLetterStream, jetstream.ConsumerConfig{
		FilterSubject:     top.Subjects.DeadLetterFor(kind),
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &start,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: 30 * time.Second, // removed by the server if our Delete is lost
		MemoryStorage:     true,
	})
	if err != nil {
		return "", false, fmt.Errorf("consumer on %s: %w", top.DeadLetterStream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = g.js.DeleteConsumer(dctx, top.DeadLetterStream, cons.CachedInfo().Name) // InactiveThreshold removes it otherwise
	}()
	pending := cons.CachedInfo().NumPending
	wantSeq := strconv.FormatUint(seq, 10)
	for scanned := uint64(0); pending > 0 && scanned < deadLetterScanMax; {
		batch, err := cons.Fetch(int(min(pending, deadLetterBatch)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return "", false, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			h := m.Headers()
			if h.Get(messages.HeaderDlqKey) == key && h.Get(messages.HeaderDlqStreamSeq) == wantSeq {
				effect, found = h.Get(messages.HeaderDlqEffect), true
			}
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return effect, found, err
		}
		if n == 0 {
			break
		}
		scanned += uint64(n)
	}
	return effect, found, nil
}
