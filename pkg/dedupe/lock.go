package dedupe

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/autopipe"
)

// Lease is a held per-key mutex. Its methods are safe for concurrent use by
// the worker and its watchdog.
type Lease struct {
	store *Store
	key   string

	mu    sync.Mutex
	mutex *redsync.Mutex
	done  bool // committed or released
}

// Acquire takes key's mutex with a single attempt. ErrLocked means another
// worker holds it; any other error is Redis being unreachable or slow.
func (s *Store) Acquire(ctx context.Context, key string) (*Lease, error) {
	return s.acquire(ctx, key, s.rs.NewMutex(s.LockKey(key), s.mutexOptions()...))
}

func (s *Store) mutexOptions(extra ...redsync.Option) []redsync.Option {
	return append([]redsync.Option{
		redsync.WithExpiry(s.cfg.LockTTL),
		redsync.WithTries(1),
		// redsync bounds each call at TimeoutFactor*expiry (5% by default,
		// 500ms at 10s): too tight for a busy Redis. Allow a third.
		redsync.WithTimeoutFactor(1.0 / 3),
	}, extra...)
}

func (s *Store) acquire(ctx context.Context, key string, m *redsync.Mutex) (*Lease, error) {
	if err := m.TryLockContext(ctx); err != nil {
		var taken *redsync.ErrTaken
		if errors.As(err, &taken) || errors.Is(err, redsync.ErrFailed) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("dedupe: acquire lock: %w", err)
	}
	return &Lease{store: s, key: key, mutex: m}, nil
}

// acquireWith takes key's mutex like Acquire, with the command script(v)
// (v: the mutex's value) sent right behind the mutex's SET NX in the same
// pipeline when the client auto-pipelines (internal/autopipe): one round
// trip for both. script must find the mutex its own before it writes
// anything, as every script of the store does, so it is harmless when the
// SET did not take the mutex. sent says whether it went; if not (another
// client, or the lock not taken), the caller runs it itself.
func (s *Store) acquireWith(ctx context.Context, key string, script func(value string) *redis.Cmd) (lease *Lease, cmd *redis.Cmd, sent bool, err error) {
	value, err := lockValue()
	if err != nil {
		return nil, nil, false, err
	}
	cmd = script(value)
	fctx, followers := autopipe.Follow(ctx, cmd)
	m := s.rs.NewMutex(s.LockKey(key), s.mutexOptions(redsync.WithGenValueFunc(func() (string, error) { return value, nil }))...)
	lease, err = s.acquire(fctx, key, m)
	if err != nil {
		return nil, nil, false, err
	}
	return lease, cmd, followers.Taken(), nil
}

// lockValue is a mutex's random token, made as redsync makes its own.
func lockValue() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("dedupe: lock value: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b[:]), nil
}

// Key returns the idempotency key the lease is for.
func (l *Lease) Key() string { return l.key }

// Value returns the lease's random token, the value stored in the mutex key.
func (l *Lease) Value() string { return l.mutex.Value() }

// Extend pushes the mutex's expiry back to a full LockTTL. ErrLockLost means
// the mutex expired or belongs to someone else.
func (l *Lease) Extend(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return ErrLockLost
	}
	ctx, cancel := context.WithTimeout(ctx, l.store.cfg.CallTimeout)
	defer cancel()
	ok, err := l.mutex.ExtendContext(ctx)
	if ok {
		return nil
	}
	var taken *redsync.ErrTaken
	if err == nil || errors.As(err, &taken) || errors.Is(err, redsync.ErrExtendFailed) {
		return ErrLockLost
	}
	return fmt.Errorf("dedupe: extend lock: %w", err)
}

// Confirm makes sure the lease is still held before a side effect starts
// (a provider call, a dead-letter copy). While more than a third of LockTTL
// is left of the mutex's validity it costs nothing; otherwise (a process
// paused past the watchdog's ticks, a watchdog that could not extend in
// time) it extends the mutex first: ErrLockLost when it is no longer ours,
// another error when Redis cannot tell. Either way the caller must not
// start the side effect: another worker may have taken the key over.
func (l *Lease) Confirm(ctx context.Context) error {
	l.mu.Lock()
	done, until := l.done, l.mutex.Until()
	l.mu.Unlock()
	if done {
		return ErrLockLost
	}
	if time.Until(until) > l.store.cfg.LockTTL/3 {
		return nil
	}
	return l.Extend(ctx)
}

// Release gives the mutex up if it is still held. Releasing twice, or after
// a Commit, does nothing.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return nil
	}
	l.done = true
	ctx, cancel := context.WithTimeout(ctx, l.store.cfg.CallTimeout)
	defer cancel()
	ok, err := l.mutex.UnlockContext(ctx)
	var taken *redsync.ErrNodeTaken
	if ok || err == nil || errors.Is(err, redsync.ErrLockAlreadyExpired) || errors.As(err, &taken) {
		// Released, or no longer ours to release: either way not held.
		return nil
	}
	return fmt.Errorf("dedupe: release lock: %w", err)
}

func (l *Lease) released() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
}

// KeepAlive starts the lease's watchdog and returns a context derived from
// ctx and a stop function. Every interval (LockTTL/3 when zero or longer)
// the watchdog extends the mutex and then calls tick (nil for none), which
// is where a worker tells JetStream the message is still in progress. When
// an extension fails, or the mutex's validity has run out before one could
// succeed, the returned context is cancelled with ErrLockLost as its cause:
// the operation must stop starting side effects. A failed extension because
// Redis is unreachable is retried on the next tick while the mutex is still
// valid.
//
// The watchdog is a timer, not a goroutine: an operation that ends before
// the first interval costs no goroutine and no Redis call.
//
// stop ends the watchdog and waits for an extension under way; it does not
// release the lease.
func (l *Lease) KeepAlive(ctx context.Context, interval time.Duration, tick func()) (context.Context, func()) {
	if interval <= 0 || interval > l.store.cfg.LockTTL/3 {
		interval = l.store.cfg.LockTTL / 3
	}
	ctx, cancel := context.WithCancelCause(ctx)
	var (
		mu      sync.Mutex // guards stopped and the timer's re-arming
		firing  sync.Mutex // held while an extension runs, so stop can wait for it
		stopped bool
		timer   *time.Timer
	)
	fire := func() {
		firing.Lock()
		defer firing.Unlock()
		mu.Lock()
		done := stopped
		mu.Unlock()
		if done || ctx.Err() != nil {
			return
		}
		err := l.Extend(ctx)
		if errors.Is(err, ErrLockLost) || (err != nil && time.Now().After(l.until())) {
			cancel(ErrLockLost)
			return
		}
		if tick != nil {
			tick()
		}
		mu.Lock()
		if !stopped {
			timer.Reset(interval)
		}
		mu.Unlock()
	}
	mu.Lock()
	timer = time.AfterFunc(interval, fire)
	mu.Unlock()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			mu.Lock()
			stopped = true
			timer.Stop()
			mu.Unlock()
			firing.Lock()   // wait for an extension under way
			firing.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
			cancel(nil)
		})
	}
}

func (l *Lease) until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mutex.Until()
}
