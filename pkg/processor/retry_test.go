package processor_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// flakyOp fails its first failures calls with err, then succeeds, and
// records when each call came.
type flakyOp[T messages.Command] struct {
	mu       sync.Mutex
	calls    []time.Time
	failures int
	err      error
}

func (o *flakyOp[T]) Handle(context.Context, *processor.Call[T]) (processor.Outcome, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, time.Now())
	if len(o.calls) <= o.failures {
		return processor.Outcome{}, o.err
	}
	return processor.Succeeded(map[string]int{"calls": len(o.calls)}), nil
}

func (o *flakyOp[T]) gaps() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var gaps []time.Duration
	for i := 1; i < len(o.calls); i++ {
		gaps = append(gaps, o.calls[i].Sub(o.calls[i-1]))
	}
	return gaps
}

type fastCmd struct {
	N int `json:"n"`
}

func (fastCmd) Kind() string    { return "test.fast" }
func (fastCmd) Validate() error { return nil }

type slowCmd struct {
	N int `json:"n"`
}

func (slowCmd) Kind() string    { return "test.slow" }
func (slowCmd) Validate() error { return nil }

// fixed waits d between tries, up to 5 retries.
func fixed(d time.Duration) processor.Backoff {
	return processor.Backoff{InitialInterval: d, MaxInterval: d, MaxElapsedTime: time.Minute, MaxRetries: 5}
}

// TestProcessor_RetryPolicies: each operation is retried on the schedule it
// registered with, per error class, and a rate-limited error waits what the
// other side asked for.
func TestProcessor_RetryPolicies(t *testing.T) {
	t.Parallel()

	t.Run("PerOperation", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		fast := &flakyOp[fastCmd]{failures: 3, err: processor.TransientError(errBoom)}
		slow := &flakyOp[slowCmd]{failures: 3, err: processor.TransientError(errBoom)}
		mux := processor.NewMux()
		processor.Register(mux, fast, &processor.OpConfig{Retry: &processor.Policy{Transient: fixed(20 * time.Millisecond)}})
		processor.Register(mux, slow, &processor.OpConfig{Retry: &processor.Policy{Transient: fixed(300 * time.Millisecond)}})
		b.startWorker(t, mux, nil)
		fk, sk := newKey(), newKey()
		b.publish(t, "test.fast", fk, `{"n":1}`)
		b.publish(t, "test.slow", sk, `{"n":1}`)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, fk, 1)[0].Status)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, sk, 1)[0].Status)
		for _, g := range fast.gaps() {
			require.Less(t, g, 250*time.Millisecond, "test.fast retries on its own 20ms schedule: %v", fast.gaps())
		}
		for _, g := range slow.gaps() {
			require.GreaterOrEqual(t, g, 290*time.Millisecond, "test.slow waits its 300ms: %v", slow.gaps())
		}
	})

	t.Run("PerClass", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		op := &flakyOp[fastCmd]{failures: 2, err: processor.AmbiguousError(errBoom)}
		mux := processor.NewMux()
		processor.Register(mux, op, &processor.OpConfig{Retry: &processor.Policy{
			Transient: fixed(10 * time.Millisecond), Ambiguous: fixed(250 * time.Millisecond)}})
		b.startWorker(t, mux, nil)
		key := newKey()
		b.publish(t, "test.fast", key, `{"n":2}`)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		for _, g := range op.gaps() {
			require.GreaterOrEqual(t, g, 240*time.Millisecond, "an ambiguous error waits the ambiguous schedule: %v", op.gaps())
		}
	})

	t.Run("OverriddenByTheOperator", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		op := &flakyOp[fastCmd]{failures: 2, err: processor.TransientError(errBoom)}
		mux := processor.NewMux()
		processor.Register(mux, op, &processor.OpConfig{Retry: &processor.Policy{Transient: fixed(10 * time.Millisecond)}})
		b.startWorker(t, mux, func(c *processor.Config) {
			c.RetryOverrides = map[string]processor.RetryPolicy{"test.fast": &processor.Policy{Transient: fixed(200 * time.Millisecond)}}
		})
		key := newKey()
		b.publish(t, "test.fast", key, `{"n":3}`)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		for _, g := range op.gaps() {
			require.GreaterOrEqual(t, g, 190*time.Millisecond, "the configuration's policy wins: %v", op.gaps())
		}
	})

	t.Run("RateLimitedWaitsWhatItWasAsked", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		op := &flakyOp[fastCmd]{failures: 1, err: processor.RateLimitedError(errors.New("429"), 400*time.Millisecond)}
		mux := processor.NewMux()
		// MaxInterval caps what a provider may make the delivery wait: 1s.
		processor.Register(mux, op, &processor.OpConfig{Retry: &processor.Policy{RateLimited: processor.Backoff{
			InitialInterval: 10 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: time.Minute, MaxRetries: 5}}})
		b.startWorker(t, mux, nil)
		key := newKey()
		b.publish(t, "test.fast", key, `{"n":4}`)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status)
		require.Equal(t, 1, got.Attempts, "waited inside the delivery")
		require.GreaterOrEqual(t, op.gaps()[0], 390*time.Millisecond, "the provider asked for 400ms")
	})

	t.Run("RateLimitedLongerThanTheDeliveryMayWaitComesBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		op := &flakyOp[fastCmd]{failures: 1, err: processor.RateLimitedError(errors.New("429"), 700*time.Millisecond)}
		mux := processor.NewMux()
		processor.Register(mux, op, &processor.OpConfig{Retry: &processor.Policy{RateLimited: fixed(50 * time.Millisecond)}})
		b.startWorker(t, mux, nil)
		key := newKey()
		b.publish(t, "test.fast", key, `{"n":5}`)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status)
		require.Equal(t, 2, got.Attempts, "handed back for what the provider asked, not held in the delivery")
		require.GreaterOrEqual(t, op.gaps()[0], 690*time.Millisecond)
	})
}

func TestParseBackoff(t *testing.T) {
	t.Parallel()
	b, err := processor.ParseBackoff("100ms/2s/15s/5")
	require.NoError(t, err)
	require.Equal(t, processor.Backoff{InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second,
		MaxElapsedTime: 15 * time.Second, MaxRetries: 5, RandomizationFactor: 0.5}, b)
	require.Equal(t, "100ms/2s/15s/5", b.String())
	for _, bad := range []string{"", "1s/2s/3s", "x/2s/3s/1", "1s/2s/3s/-1", "2s/1s/3s/1", "0s/1s/3s/1"} {
		_, err := processor.ParseBackoff(bad)
		require.Error(t, err, bad)
	}
	c, err := processor.ParseClass("rate_limited")
	require.NoError(t, err)
	require.Equal(t, processor.RateLimited, c)
	_, err = processor.ParseClass("sometimes")
	require.Error(t, err)
}
