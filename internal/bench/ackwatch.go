package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ackPollInterval is how often ackWatch reads the command stream's state:
// a rate's first and last moments are known to within it (20ms in a drain
// of several seconds: under 1%). Each read is a JetStream API request, so
// the poll is load the bare consumer, which counts its own acks, does not
// carry: at 5ms it took about 5% of the machine (the harness and
// nats-server's stream info together) during a worker's drain.
const ackPollInterval = 20 * time.Millisecond

// ackWatch measures a drain the way the ceiling is measured: by the
// messages acked, which leave the work-queue command stream. A worker acks
// a command only once its outcome is stored in Redis and in RESULTS, so an
// ack is a finished command; after the drain, RESULTS is checked to hold
// an outcome for every key. Unlike answerWatch it adds no subscriber to
// the answers: the harness's own reading of 30,000 answers would cost the
// shared CPUs (and nats-server, which would fan each answer out to it)
// about as much as a small part of a worker, and the bare consumer pays
// nothing like it.
type ackWatch struct {
	target int
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	acked       int
	first, last time.Time
	// quiet is the last poll that saw nothing acked: the first ack came
	// after it.
	quiet time.Time
	err   error
}

// watchAcks starts polling stream, which must hold target messages now.
func watchAcks(ctx context.Context, js jetstream.JetStream, stream string, target int) (*ackWatch, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	// Nothing is acked yet (the caller says so): the watch's start is the
	// first quiet moment, for a drain done before the first poll.
	w := &ackWatch{target: target, cancel: cancel, done: make(chan struct{}), quiet: time.Now()}
	go w.poll(ctx, s)
	return w, nil
}

func (w *ackWatch) poll(ctx context.Context, s jetstream.Stream) {
	defer close(w.done)
	t := time.NewTicker(ackPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		info, err := s.Info(ctx)
		now := time.Now()
		w.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				w.err = err
			}
			w.mu.Unlock()
			return
		}
		acked := w.target - int(min(info.State.Msgs, uint64(w.target))) //nolint:gosec // bounded by target
		if acked == 0 {
			w.quiet = now
		}
		if acked > w.acked {
			if w.acked == 0 {
				w.first = now
			}
			w.acked, w.last = acked, now
		}
		finished := w.acked == w.target
		w.mu.Unlock()
		if finished {
			return
		}
	}
}

// wait returns once every message was acked, or errStalled when none was
// acked for stall.
func (w *ackWatch) wait(ctx context.Context, stall time.Duration) error {
	err := waitProgress(ctx, w.done, func() int { n, _ := w.span(); return n }, stall, func(n int) string {
		return fmt.Sprintf("%d of %d commands acked", n, w.target)
	})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.err != nil:
		return fmt.Errorf("bench: read the command stream: %w", w.err)
	case w.acked < w.target:
		return ctx.Err()
	}
	return nil
}

// span returns the messages acked and the time from the first ack seen to
// the last. Both are seen up to one poll late, which cancels out in a
// drain of many polls; a drain that fits between two polls (a handful of
// commands) would have no span at all, so it gets the time from the last
// poll that saw nothing acked, or from the watch's start when the first
// poll already saw acks: an upper bound, which understates its rate.
func (w *ackWatch) span() (int, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.acked > 0 && w.last.Equal(w.first) && !w.quiet.IsZero() {
		return w.acked, w.last.Sub(w.quiet)
	}
	return w.acked, w.last.Sub(w.first)
}

func (w *ackWatch) stop() {
	w.cancel()
	<-w.done
}
