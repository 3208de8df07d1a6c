package processor

import (
	"time"

	"github.com/cenkalti/backoff/v4"
)

// RetryPolicy makes the backoff for one delivery's retries of a handler
// error. NewBackOff is called once per message, because a BackOff is not
// safe for concurrent use.
type RetryPolicy interface {
	NewBackOff() backoff.BackOff
}

// ExponentialRetry is an exponential backoff with jitter, bounded in both
// attempts and elapsed time. Past either bound the delivery gives up and the
// message is redelivered later (NakDelay), or dead-lettered on its last
// delivery.
type ExponentialRetry struct {
	// InitialInterval is the first wait.
	InitialInterval time.Duration
	// MaxInterval caps one wait.
	MaxInterval time.Duration
	// MaxElapsedTime caps the whole retry of one delivery.
	MaxElapsedTime time.Duration
	// MaxRetries caps the number of retries after the first call.
	MaxRetries uint64
	// RandomizationFactor is the jitter (0 for none, in tests).
	RandomizationFactor float64
}

// DefaultRetryPolicy returns the default policy: 100ms, x2, at most 2s
// apart, 5 retries, 15s in all - short enough that a provider outage moves
// on to JetStream's redelivery instead of pinning a slot.
func DefaultRetryPolicy() *ExponentialRetry {
	return &ExponentialRetry{
		InitialInterval:     100 * time.Millisecond,
		MaxInterval:         2 * time.Second,
		MaxElapsedTime:      15 * time.Second,
		MaxRetries:          5,
		RandomizationFactor: 0.5,
	}
}

// NewBackOff implements RetryPolicy.
func (r *ExponentialRetry) NewBackOff() backoff.BackOff {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.InitialInterval),
		backoff.WithMaxInterval(r.MaxInterval),
		backoff.WithMaxElapsedTime(r.MaxElapsedTime),
		backoff.WithRandomizationFactor(r.RandomizationFactor),
		backoff.WithMultiplier(2),
	)
	return backoff.WithMaxRetries(b, r.MaxRetries)
}
