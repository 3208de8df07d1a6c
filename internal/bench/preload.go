package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The command types the harness sends, as CONTRACT.md names them. The
// harness writes bodies itself, at the wire level, so that it measures the
// worker as any client would see it.
const (
	kindCharge = "payment.charge"
	kindCart   = "cart.add"
)

// preloadChunk is how many async publishes are outstanding at once. nats.go
// stalls (and then fails: "too many outstanding async published messages")
// once 4000 are pending by default; waiting for every chunk's acks keeps the
// preload far from that limit whatever its size.
const preloadChunk = 1000

// commandBody returns the i-th body of a preload of kind: valid commands
// per CONTRACT.md, spread over 1000 accounts or 200 carts and 20 SKUs like
// internal/load's.
func commandBody(kind string, i int) []byte {
	if kind == kindCart {
		return fmt.Appendf(nil, `{"cart_id":"cart_%d","sku":"SKU-%d","quantity":%d}`, i%200, i%20, 1+i%5)
	}
	return fmt.Appendf(nil, `{"account_id":"acct_%d","amount":%d,"currency":"EUR","description":"bench #%d"}`,
		i%1000, 100+i%99_900, i)
}

// preload publishes n commands of kind on subject, each with a new key in
// Nats-Msg-Id, and returns once JetStream has acknowledged all of them.
func preload(ctx context.Context, js jetstream.JetStream, subject, kind string, n int) error {
	futures := make([]jetstream.PubAckFuture, 0, preloadChunk)
	for start := 0; start < n; start += preloadChunk {
		futures = futures[:0]
		for i := start; i < min(start+preloadChunk, n); i++ {
			msg := nats.NewMsg(subject)
			msg.Header.Set("Nats-Msg-Id", uuid.NewString())
			msg.Data = commandBody(kind, i)
			f, err := js.PublishMsgAsync(msg)
			if err != nil {
				return fmt.Errorf("bench: preload publish %d of %d: %w", i+1, n, err)
			}
			futures = append(futures, f)
		}
		for j, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					return fmt.Errorf("bench: preload message %d was taken for a duplicate", start+j+1)
				}
			case err := <-f.Err():
				return fmt.Errorf("bench: preload message %d: %w", start+j+1, err)
			case <-time.After(30 * time.Second):
				return fmt.Errorf("bench: preload message %d not acknowledged within 30s", start+j+1)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// expectMessages checks that stream holds exactly n messages: the preload
// is complete and nothing consumed it yet, or every drained command left
// its outcome.
func expectMessages(ctx context.Context, js jetstream.JetStream, stream string, n int) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if got := info.State.Msgs; got != uint64(n) { //nolint:gosec // n is positive
		return fmt.Errorf("bench: stream %s holds %d messages after the preload, want %d", stream, got, n)
	}
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }
