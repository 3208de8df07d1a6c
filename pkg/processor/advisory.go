package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// advisoryQueue is the queue group in which every processor listens for
// max-deliveries advisories, so exactly one handles each.
const advisoryQueue = "idempay-deadletters"

// maxDeliveriesAdvisory is the part of JetStream's
// io.nats.jetstream.advisory.v1.max_deliver event the processor needs.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// stuckCommand is a command JetStream reported at its last delivery.
type stuckCommand struct {
	adv maxDeliveriesAdvisory
	due time.Time // not before: its last delivery may still be running
}

// watchMaxDeliveries dead-letters commands whose last delivery never ended:
// the worker died or hung on it, so no deliver() call could copy it. JetStream
// stops redelivering such a message but keeps it in the work queue; its
// advisory names the stream sequence, which is all we need to copy it to
// the dead letters and remove it.
//
// The advisory is not proof that the last delivery failed: nats-server 2.9
// sends it when it makes the last delivery, not when that delivery's AckWait
// runs out. So the command is only looked at AckWait+LockTTL later, and left
// alone while a worker holds its lock or once its outcome is stored: the
// living worker will ack or dead-letter it itself.
func (p *Processor) watchMaxDeliveries() (*nats.Subscription, error) {
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", p.cfg.CommandStream, p.cfg.Consumer)
	return p.nc.QueueSubscribe(subject, advisoryQueue, func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			p.log.warn(context.Background(), "unreadable max-deliveries advisory", attrError, err)
			return
		}
		select {
		case p.stuck <- stuckCommand{adv: adv, due: time.Now().Add(p.cfg.AckWait + p.cfg.LockTTL)}:
		default:
			p.log.error(context.Background(), "too many max-deliveries advisories queued; this one is dropped",
				"stream_seq", adv.StreamSeq)
		}
	})
}

// deadLetterLoop handles the queued advisories in arrival order, each no
// sooner than it is due, until ctx ends.
func (p *Processor) deadLetterLoop(ctx context.Context) {
	for {
		var sc stuckCommand
		select {
		case <-ctx.Done():
			return
		case sc = <-p.stuck:
		}
		sleepCtx(ctx, time.Until(sc.due))
		if ctx.Err() != nil {
			return
		}
		p.deadLetterStuck(ctx, sc.adv)
	}
}

// deadLetterStuck dead-letters one stuck command once nobody works on it.
func (p *Processor) deadLetterStuck(ctx context.Context, adv maxDeliveriesAdvisory) {
	stream, err := p.js.Stream(ctx, p.cfg.CommandStream)
	if err != nil {
		p.log.error(ctx, "dead-letter after max deliveries: stream", attrError, err)
		return
	}
	// Bounded: a lock held for longer than this belongs to a worker that
	// keeps extending it, which will finish the command itself.
	for range 20 {
		raw, err := stream.GetMsg(ctx, adv.StreamSeq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return // acked, terminated or dead-lettered by its last delivery
		}
		if err != nil {
			p.log.error(ctx, "dead-letter after max deliveries: get message", "stream_seq", adv.StreamSeq, attrError, err)
			return
		}
		d := &delivery{attempt: int(adv.Deliveries)} //nolint:gosec // bounded by the consumer's MaxDeliver
		d.kind, _ = p.cfg.Subjects.CommandType(raw.Subject)
		if raw.Header != nil {
			d.key = raw.Header.Get(messages.HeaderMsgID)
			d.replyTo = raw.Header.Get(messages.HeaderReplyTo)
			if d.replyTo != "" && !p.validReplyTo(d.replyTo) {
				d.replyTo = ""
			}
		}
		if messages.ValidKey(d.key) {
			rec, err := p.store.Get(ctx, d.key)
			if err != nil {
				p.log.warn(ctx, "dead-letter after max deliveries: read record", attrKey, d.key, attrError, err)
				sleepCtx(ctx, p.cfg.LockTTL)
				continue
			}
			if rec != nil && rec.State == dedupe.StateCompleted {
				// The outcome is stored (a delivery finished but its ack was
				// lost): nothing to dead-letter; the message is spent.
				p.deleteStuck(context.WithoutCancel(ctx), stream, adv.StreamSeq)
				return
			}
			if locked, err := p.store.Locked(ctx, d.key); err != nil || locked {
				sleepCtx(ctx, p.cfg.LockTTL/2)
				continue
			}
		}
		// From here on, finish even if the processor is stopping: a copy
		// without the delete would be dead-lettered twice.
		wctx := context.WithoutCancel(ctx)
		reason := "the last delivery never finished (worker crashed or hung after " + strconv.FormatUint(adv.Deliveries, 10) + " deliveries)"
		if err := p.copyToDeadLetters(wctx, d, raw.Data, raw.Header, reason); err != nil {
			return
		}
		p.deleteStuck(wctx, stream, adv.StreamSeq)
		return
	}
	p.log.warn(ctx, "dead-letter after max deliveries: the key stayed locked; leaving the command", "stream_seq", adv.StreamSeq)
}

func (p *Processor) deleteStuck(ctx context.Context, stream jetstream.Stream, seq uint64) {
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		p.log.warn(ctx, "dead-letter after max deliveries: delete from the work queue", "stream_seq", seq, attrError, err)
	}
}
