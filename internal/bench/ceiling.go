package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ceiling measures JetStream alone: a preload of payment.charge commands in
// a stream with the worker's command-stream configuration (copied from the
// one a worker created, under another name and subject), drained by a pull
// consumer with the worker's consumer configuration, fetching as many
// messages as it has free slots (the worker's fetch shape) with inFlight
// slots, and a plain Ack per message. It is the rate no worker on this
// broker can beat.
func (b *bencher) ceiling(ctx context.Context, round, inFlight int) (*Result, error) {
	ns := b.nextNamespace()
	defer b.s.reset(ctx, ns)
	q, err := b.barePreload(ctx, ns, inFlight, "idempay-bench-bare")
	if err != nil {
		return nil, err
	}
	defer q.nc.Close()
	nc, js, cons := q.nc, q.js, q.cons

	r := &Result{Name: fmt.Sprintf("ceiling @%d", inFlight), Kind: "ceiling", Command: kindCharge, InFlight: inFlight, Round: round}
	m := b.s.begin(ctx)
	n, elapsed, err := drainWith(ctx, nc, cons, b.cfg.Count, inFlight, func(_ context.Context, msg jetstream.Msg) error { return msg.Ack() })
	if err != nil {
		return nil, err
	}
	r.Commands, r.Seconds = n, elapsed.Seconds()
	r.PerSecond = float64(n) / elapsed.Seconds()
	m.end(ctx, r, nil, true)
	if left := streamMsgs(ctx, js, ns.bareStream()); left != 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d messages still in the stream after every ack", left))
	}
	return r, nil
}

// bareQueue is a preloaded copy of the command stream, with a consumer
// on it and the connection that reads it.
type bareQueue struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.Consumer
}

// barePreload makes ns's command stream (a worker creates it), copies its
// configuration to ns's bare stream, preloads Count charges there and
// returns a consumer on it, on a connection of its own named name, as a
// worker would have. The ceiling and the floor drain it.
func (b *bencher) barePreload(ctx context.Context, ns *namespace, inFlight int, name string) (*bareQueue, error) {
	if err := b.setupWorker(ctx, ns, workerSettings{Concurrency: inFlight}); err != nil {
		return nil, err
	}
	bare, err := b.copyCommandStream(ctx, ns)
	if err != nil {
		return nil, err
	}
	if err := preload(ctx, b.s.js, ns.bareRoot()+"."+kindCharge, kindCharge, b.cfg.Count); err != nil {
		return nil, err
	}
	if err := expectMessages(ctx, b.s.js, ns.bareStream(), b.cfg.Count); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(b.s.natsURL, nats.Name(name))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		var cons jetstream.Consumer
		if cons, err = js.Consumer(ctx, ns.bareStream(), bare); err == nil {
			return &bareQueue{nc: nc, js: js, cons: cons}, nil
		}
	}
	nc.Close()
	return nil, err
}

// copyCommandStream creates the namespace's bare stream with the command
// stream's configuration, and a consumer on it with the workers' consumer
// configuration; it returns the consumer's name.
func (b *bencher) copyCommandStream(ctx context.Context, ns *namespace) (string, error) {
	s, err := b.s.js.Stream(ctx, ns.commandStream())
	if err != nil {
		return "", fmt.Errorf("bench: the worker did not create %s: %w", ns.commandStream(), err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	sc := info.Config
	sc.Name, sc.Subjects = ns.bareStream(), []string{ns.bareRoot() + ".>"}
	bare, err := b.s.js.CreateStream(ctx, sc)
	if err != nil {
		return "", fmt.Errorf("bench: create %s from %s's configuration: %w", ns.bareStream(), ns.commandStream(), err)
	}
	ci, err := s.Consumer(ctx, ns.consumer())
	if err != nil {
		return "", err
	}
	cc := ci.CachedInfo().Config
	cc.Name, cc.Durable = "bare", "bare"
	cc.FilterSubject, cc.FilterSubjects = ns.bareRoot()+".>", nil
	if _, err := bare.CreateConsumer(ctx, cc); err != nil {
		return "", fmt.Errorf("bench: create the bare consumer from %s's configuration: %w", ns.consumer(), err)
	}
	return cc.Durable, nil
}

// drainWith consumes n messages with inFlight slots, each handled by
// handle in a goroutine of its own (the bare consumer's handle only acks),
// and returns how many were handled and the time from the first message to
// the server having every ack (a Flush after the last one).
func drainWith(ctx context.Context, nc *nats.Conn, cons jetstream.Consumer, n, inFlight int, handle func(context.Context, jetstream.Msg) error) (int, time.Duration, error) {
	slots := make(chan struct{}, inFlight)
	var acked atomic.Int64
	var ackErr atomic.Value
	var wg sync.WaitGroup
	var first time.Time
	received, idleSince := 0, time.Now()
	for received < n {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		// Block for one free slot, then take all free ones: the worker's
		// fetch loop does the same.
		slots <- struct{}{}
		want := 1
	more:
		for want < inFlight {
			select {
			case slots <- struct{}{}:
				want++
			default:
				break more
			}
		}
		batch, err := cons.Fetch(min(want, n-received), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return 0, 0, fmt.Errorf("bench: bare fetch: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			if first.IsZero() {
				first = time.Now()
			}
			got++
			wg.Go(func() {
				defer func() { <-slots }()
				if err := handle(ctx, msg); err != nil {
					ackErr.Store(err)
					return
				}
				acked.Add(1)
			})
		}
		for range want - got {
			<-slots
		}
		received += got
		if got > 0 {
			idleSince = time.Now()
		} else if time.Since(idleSince) > 30*time.Second {
			return 0, 0, fmt.Errorf("%w: the bare consumer got nothing for 30s, %d of %d received", errStalled, received, n)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return 0, 0, fmt.Errorf("bench: bare fetch: %w", err)
		}
	}
	wg.Wait()
	// Ack is fire and forget: the server has them all once a ping sent
	// after them is answered.
	if err := nc.Flush(); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(first)
	if err, ok := ackErr.Load().(error); ok {
		return 0, 0, fmt.Errorf("bench: handle: %w", err)
	}
	return int(acked.Load()), elapsed, nil
}

// streamMsgs returns how many messages stream holds, waiting up to two
// seconds for the acks to be applied; -1 when it cannot tell.
func streamMsgs(ctx context.Context, js jetstream.JetStream, stream string) int64 {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	var left int64 = -1
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		info, err := s.Info(ctx)
		if err != nil {
			return -1
		}
		left = int64(info.State.Msgs) //nolint:gosec // a message count
		if left == 0 {
			break
		}
	}
	return left
}
