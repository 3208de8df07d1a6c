package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// errStalled says a scenario stopped making progress.
var errStalled = errors.New("bench: no progress")

// answerWatch counts the distinct keys answered on <root>.> and when the
// first and the last of them were first answered. The rate of every worker
// scenario is keys over that span: it starts at the first answer, so a
// worker's start-up is not counted, and it ignores later answers to a key
// (replays of duplicates), which are latency, not throughput.
type answerWatch struct {
	sub    *nats.Subscription
	target int
	done   chan struct{}

	mu          sync.Mutex
	seen        map[string]struct{}
	first, last time.Time
}

// watchAnswers subscribes before anything is started, so no answer is
// missed; it is done once target keys were answered.
func watchAnswers(nc *nats.Conn, root string, target int) (*answerWatch, error) {
	w := &answerWatch{target: target, done: make(chan struct{}), seen: make(map[string]struct{}, target)}
	sub, err := nc.Subscribe(root+".>", w.onAnswer)
	if err != nil {
		return nil, err
	}
	// Never drop an answer as a slow consumer: the count would stall.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	if err := nc.Flush(); err != nil { // the server knows the interest
		_ = sub.Unsubscribe()
		return nil, err
	}
	w.sub = sub
	return w, nil
}

func (w *answerWatch) onAnswer(m *nats.Msg) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.seen[m.Subject]; dup {
		return
	}
	w.seen[m.Subject] = struct{}{}
	if w.first.IsZero() {
		w.first = now
	}
	w.last = now
	if len(w.seen) == w.target {
		close(w.done)
	}
}

// wait returns once every key was answered, or errStalled when no new key
// was answered for stall.
func (w *answerWatch) wait(ctx context.Context, stall time.Duration) error {
	return waitProgress(ctx, w.done, w.count, stall, func(n int) string {
		return fmt.Sprintf("%d of %d keys answered", n, w.target)
	})
}

// waitProgress returns nil once done is closed, ctx's error once it ends,
// or errStalled when count has not changed for stall.
func waitProgress(ctx context.Context, done <-chan struct{}, count func() int, stall time.Duration, what func(int) string) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	lastCount, lastChange := -1, time.Now()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if n := count(); n != lastCount {
			lastCount, lastChange = n, time.Now()
		} else if time.Since(lastChange) > stall {
			return fmt.Errorf("%w for %v: %s", errStalled, stall, what(n))
		}
	}
}

func (w *answerWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

// span returns the keys answered and the time from the first to the last.
func (w *answerWatch) span() (int, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen), w.last.Sub(w.first)
}

func (w *answerWatch) stop() { _ = w.sub.Unsubscribe() }
