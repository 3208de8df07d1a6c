package processor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// RetryPolicy makes the backoff of one delivery's retries of an operation
// error, per Class. NewBackOff is called at most once per class and
// delivery, because a BackOff keeps state and is not safe for concurrent
// use.
type RetryPolicy interface {
	NewBackOff(c Class) backoff.BackOff
}

// Backoff is an exponential backoff with jitter, bounded in both retries
// and elapsed time. Past either bound the delivery gives up: the message is
// redelivered later (Config.NakDelay), or dead-lettered once the key has
// used its tries.
type Backoff struct {
	// InitialInterval is the first wait.
	InitialInterval time.Duration
	// MaxInterval caps one wait. For RateLimited it also caps the wait a
	// provider may ask for inside the delivery: a longer Retry-After hands
	// the message back for that long instead of pinning a slot.
	MaxInterval time.Duration
	// MaxElapsedTime caps the whole retry of one delivery.
	MaxElapsedTime time.Duration
	// MaxRetries caps the retries after the first call; 0 retries none.
	MaxRetries uint64
	// RandomizationFactor is the jitter (0 for none, in tests).
	RandomizationFactor float64
}

// NewBackOff returns a fresh backoff of b.
func (b Backoff) NewBackOff() backoff.BackOff {
	e := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(b.InitialInterval),
		backoff.WithMaxInterval(b.MaxInterval),
		backoff.WithMaxElapsedTime(b.MaxElapsedTime),
		backoff.WithRandomizationFactor(b.RandomizationFactor),
		backoff.WithMultiplier(2),
	)
	return backoff.WithMaxRetries(e, b.MaxRetries)
}

// String formats b as ParseBackoff reads it: initial/max/elapsed/retries.
func (b Backoff) String() string {
	return fmt.Sprintf("%v/%v/%v/%d", b.InitialInterval, b.MaxInterval, b.MaxElapsedTime, b.MaxRetries)
}

// ParseBackoff reads "initial/max/elapsed/retries", e.g. "100ms/2s/15s/5",
// with the default jitter of 0.5.
func ParseBackoff(s string) (Backoff, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 4 {
		return Backoff{}, fmt.Errorf("backoff %q: want initial/max/elapsed/retries, e.g. 100ms/2s/15s/5", s)
	}
	var d [3]time.Duration
	for i, name := range []string{"initial", "max", "elapsed"} {
		v, err := time.ParseDuration(parts[i])
		if err != nil || v <= 0 {
			return Backoff{}, fmt.Errorf("backoff %q: %s %q must be a positive duration", s, name, parts[i])
		}
		d[i] = v
	}
	retries, err := strconv.ParseUint(parts[3], 10, 32)
	if err != nil {
		return Backoff{}, fmt.Errorf("backoff %q: retries %q must be a whole number", s, parts[3])
	}
	if d[1] < d[0] {
		return Backoff{}, fmt.Errorf("backoff %q: max %v is shorter than initial %v", s, d[1], d[0])
	}
	return Backoff{InitialInterval: d[0], MaxInterval: d[1], MaxElapsedTime: d[2], MaxRetries: retries,
		RandomizationFactor: 0.5}, nil
}

// Policy is a RetryPolicy with one Backoff per Class.
type Policy struct {
	Transient   Backoff
	Ambiguous   Backoff
	RateLimited Backoff
}

// NewBackOff implements RetryPolicy.
func (p *Policy) NewBackOff(c Class) backoff.BackOff { return p.For(c).NewBackOff() }

// For returns the Backoff of class c.
func (p *Policy) For(c Class) Backoff {
	switch c {
	case Transient:
		return p.Transient
	case RateLimited:
		return p.RateLimited
	default:
		return p.Ambiguous
	}
}

// Set replaces the Backoff of class c.
func (p *Policy) Set(c Class, b Backoff) {
	switch c {
	case Transient:
		p.Transient = b
	case RateLimited:
		p.RateLimited = b
	default:
		p.Ambiguous = b
	}
}

// DefaultPolicy returns the engine's default: transient and ambiguous
// errors 100ms, x2, at most 2s apart, 5 retries, 15s in all - short enough
// that a provider outage moves on to JetStream's redelivery instead of
// pinning a slot - and a provider's Retry-After honoured up to 5s inside
// the delivery.
func DefaultPolicy() *Policy {
	quick := Backoff{InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second,
		MaxElapsedTime: 15 * time.Second, MaxRetries: 5, RandomizationFactor: 0.5}
	return &Policy{
		Transient: quick,
		Ambiguous: quick,
		RateLimited: Backoff{InitialInterval: 500 * time.Millisecond, MaxInterval: 5 * time.Second,
			MaxElapsedTime: 15 * time.Second, MaxRetries: 5, RandomizationFactor: 0.2},
	}
}

// ParseClass reads a Class by its String form.
func ParseClass(s string) (Class, error) {
	for _, c := range []Class{Transient, Ambiguous, RateLimited} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("error class %q: want transient, ambiguous or rate_limited", s)
}
