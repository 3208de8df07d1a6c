package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Queue is how much waits, read from JetStream and Redis now.
type Queue struct {
	// Pending is the commands in the work queue not yet delivered;
	// AckPending those delivered and not yet acked (in flight, or waiting
	// for a redelivery); Redelivered those delivered more than once and
	// not yet acked. ConsumerErr says why they are missing, if they are.
	Pending, AckPending, Redelivered uint64
	ConsumerErr                      string
	// DeadLetters is how many copies the dead-letter stream holds.
	DeadLetters uint64
	// Unknown is how many keys wait on the resolution schedule; -1 without
	// Redis.
	Unknown int64
}

// Queue reads the durable consumer's state, the dead-letter stream's size
// and the resolution schedule's.
func (a *Admin) Queue(ctx context.Context) (*Queue, error) {
	q := &Queue{Unknown: -1}
	top := a.cfg.Topology
	cons, err := a.js.Consumer(ctx, top.CommandStream, top.Consumer)
	if err == nil {
		var info *jetstream.ConsumerInfo
		if info, err = cons.Info(ctx); err == nil {
			q.Pending, q.AckPending, q.Redelivered = info.NumPending, uint64(max(info.NumAckPending, 0)), uint64(max(info.NumRedelivered, 0))
		}
	}
	if err != nil {
		q.ConsumerErr = fmt.Sprintf("consumer %s on %s: %v", top.Consumer, top.CommandStream, err)
	}
	stream, err := a.js.Stream(ctx, top.DeadLetterStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return nil, fmt.Errorf("admin: stream %s: %w", top.DeadLetterStream, err)
	default:
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("admin: stream %s: %w", top.DeadLetterStream, err)
		}
		q.DeadLetters = info.State.Msgs
	}
	if a.rdb != nil {
		n, err := a.rdb.ZCard(ctx, a.ResolveKey()).Result()
		if err != nil {
			return nil, fmt.Errorf("admin: the resolution schedule %s: %w", a.ResolveKey(), err)
		}
		q.Unknown = n
	}
	return q, nil
}
