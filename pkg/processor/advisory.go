package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// watchMaxDeliveries dead-letters commands whose last delivery never ended:
// the worker died or hung on it, so no deliver() call could copy it. JetStream
// stops redelivering such a message but keeps it in the work queue; its
// advisory names the stream sequence, which is all we need to copy it to
// the dead letters and remove it.
func (p *Processor) watchMaxDeliveries() (*nats.Subscription, error) {
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", p.cfg.CommandStream, p.cfg.Consumer)
	return p.nc.QueueSubscribe(subject, advisoryQueue, func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			p.log.warn(context.Background(), "unreadable max-deliveries advisory", attrError, err)
			return
		}
		// Handled on the subscription's own goroutine: rare, and never
		// racing Stop's wait for in-flight deliveries.
		p.deadLetterStuck(context.Background(), adv)
	})
}

func (p *Processor) deadLetterStuck(ctx context.Context, adv maxDeliveriesAdvisory) {
	ctx = context.WithoutCancel(ctx)
	ctx, cancel := context.WithTimeout(ctx, 3*callTimeout)
	defer cancel()
	stream, err := p.js.Stream(ctx, p.cfg.CommandStream)
	if err != nil {
		p.log.error(ctx, "dead-letter after max deliveries: stream", attrError, err)
		return
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return // finished or dead-lettered after all
	}
	if err != nil {
		p.log.error(ctx, "dead-letter after max deliveries: get message", "stream_seq", adv.StreamSeq, attrError, err)
		return
	}
	d := &delivery{attempt: int(adv.Deliveries)}
	d.kind, _ = p.cfg.Subjects.CommandType(raw.Subject)
	if raw.Header != nil {
		d.key = raw.Header.Get(messages.HeaderMsgID)
		d.replyTo = raw.Header.Get(messages.HeaderReplyTo)
		if d.replyTo != "" && !p.validReplyTo(d.replyTo) {
			d.replyTo = ""
		}
	}
	reason := "the last delivery never finished (worker crashed or hung after " + strconv.FormatUint(adv.Deliveries, 10) + " deliveries)"
	if err := p.copyToDeadLetters(ctx, d, raw.Data, raw.Header, reason); err != nil {
		return
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		p.log.warn(ctx, "dead-letter after max deliveries: delete from the work queue", "stream_seq", adv.StreamSeq, attrError, err)
	}
}
