package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publish sends msg to JetStream with key as its Nats-Msg-Id and returns the
// PubAck and the number of attempts.
//
// An attempt without a PubAck within PublishTimeout has an unknown outcome:
// the message may be stored and only the ack lost. It is repeated with the
// same key, so JetStream stores the command at most once inside its
// duplicate window and answers the repeat with a duplicate PubAck. An
// attempt that finds no stream (no responders) stored nothing and is
// repeated too, in case the stream is being created or its leader moves;
// so is one that a replicated stream refused because another publish of
// the key was still being stored (a racing duplicate).
// Every other error is returned at once.
func (c *Client) publish(ctx context.Context, key string, msg *nats.Msg) (*jetstream.PubAck, int, error) {
	var (
		attempts    int
		unconfirmed bool // an attempt may have reached JetStream
		lastErr     error
	)
	op := func() (*jetstream.PubAck, error) {
		if ctx.Err() != nil { // nothing is sent on a done context
			return nil, backoff.Permanent(context.Cause(ctx))
		}
		attempts++
		actx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
		defer cancel()
		// WithRetryAttempts(0): this loop is the only retry policy.
		ack, err := c.js.PublishMsg(actx, msg, jetstream.WithMsgID(key), jetstream.WithRetryAttempts(0))
		if err == nil {
			return ack, nil
		}
		lastErr = err
		switch {
		case ctx.Err() != nil:
			unconfirmed = true
			return nil, backoff.Permanent(err)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			unconfirmed = true
			return nil, err
		case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
			return nil, err
		case duplicateInProcess(err):
			// Another publish of this key is being stored right now: a
			// replicated stream proposes it to its replicas before it
			// knows the id, and refuses a racing copy meanwhile. This one
			// stored nothing; the next gets the duplicate PubAck of that
			// one, or stores the command if that one failed.
			unconfirmed = true
			return nil, err
		default:
			return nil, backoff.Permanent(err)
		}
	}
	notify := func(err error, wait time.Duration) {
		c.log.WarnContext(ctx, "client: publish not acknowledged; retrying with the same key",
			attrKey, key, attrSubject, msg.Subject, attrAttempt, attempts, attrWait, wait, attrError, err)
	}
	b := backoff.WithContext(c.cfg.Retry.newBackOff(), ctx)
	ack, err := backoff.RetryNotifyWithData(op, b, notify)
	if err == nil {
		return ack, attempts, nil
	}
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	} else if lastErr != nil {
		err = lastErr
	}
	switch {
	case unconfirmed:
		return nil, attempts, fmt.Errorf("%w (key %s, %d attempts): %w", ErrPublishUnconfirmed, key, attempts, err)
	case ctx.Err() != nil:
		return nil, attempts, fmt.Errorf("client: publish %s: %w", msg.Subject, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return nil, attempts, fmt.Errorf("%w: %s (%d attempts)", ErrNoStream, msg.Subject, attempts)
	default:
		return nil, attempts, fmt.Errorf("client: publish %s: %w", msg.Subject, err)
	}
}

// errCodeDuplicateInProcess is JetStream's JSStreamDuplicateMessageConflict
// (nats-server 2.10 and later): a publish whose Nats-Msg-Id another publish
// is still storing.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

func duplicateInProcess(err error) bool {
	apiErr, ok := errors.AsType[*jetstream.APIError](err)
	return ok && apiErr.ErrorCode == errCodeDuplicateInProcess
}
