package dedupe

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLease_KeepAlive(t *testing.T) {
	t.Parallel()

	// A short lock, so that "well past its TTL" is about a second. Not
	// shorter: the watchdog must get scheduled within two intervals
	// (2*TTL/3), and a loaded CI machine running -race can pause a goroutine
	// for longer than 100ms.
	const lockTTL = 300 * time.Millisecond

	type keepAliveBundle struct {
		*testBundle
		lease *Lease
		ticks *atomic.Int64
	}
	setupKeepAlive := func(t *testing.T, ttl time.Duration) *keepAliveBundle {
		t.Helper()
		b := setup(t, &Config{LockTTL: ttl})
		return &keepAliveBundle{testBundle: b, lease: b.acquire(t), ticks: new(atomic.Int64)}
	}
	tick := func(kb *keepAliveBundle) func() { return func() { kb.ticks.Add(1) } }

	t.Run("KeepsLockPastTTL", func(t *testing.T) {
		t.Parallel()
		kb := setupKeepAlive(t, lockTTL)
		start := time.Now()
		ctx, stop := kb.lease.KeepAlive(kb.ctx, 0, tick(kb))
		defer stop()

		// Every LockTTL/3 the lock is extended and tick is called; wait for
		// five TTLs' worth of ticks, checking all along that the lock is
		// still ours and the operation's context is still live.
		waitFor(t, 10*time.Second, func() bool {
			require.Equal(t, kb.lease.Value(), kb.lockValue(t), "lock lost after %v, %d ticks", time.Since(start), kb.ticks.Load())
			require.NoError(t, ctx.Err(), "cause: %v", context.Cause(ctx))
			return kb.ticks.Load() >= 15 && time.Since(start) >= 5*lockTTL
		})
		ttl, err := kb.rdb.PTTL(kb.ctx, kb.store.LockKey(kb.key)).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, time.Duration(0))
		require.LessOrEqual(t, ttl, lockTTL)
		t.Logf("lock alive %v after acquiring it with a %v TTL; %d ticks", time.Since(start).Round(time.Millisecond), lockTTL, kb.ticks.Load())

		stop()
		require.ErrorIs(t, context.Cause(ctx), context.Canceled)
		require.NotErrorIs(t, context.Cause(ctx), ErrLockLost)
	})

	t.Run("IntervalAtMostThirdOfTTL", func(t *testing.T) {
		t.Parallel()
		kb := setupKeepAlive(t, lockTTL)
		// An interval longer than the lock would let it expire; it is capped.
		ctx, stop := kb.lease.KeepAlive(kb.ctx, time.Hour, tick(kb))
		defer stop()
		waitFor(t, 10*time.Second, func() bool { return kb.ticks.Load() >= 6 })
		require.NoError(t, ctx.Err())
		require.Equal(t, kb.lease.Value(), kb.lockValue(t))
	})

	for name, loss := range lockLosses {
		t.Run("CancelsWhen"+name, func(t *testing.T) {
			t.Parallel()
			kb := setupKeepAlive(t, lockTTL)
			ctx, stop := kb.lease.KeepAlive(kb.ctx, 0, tick(kb))
			defer stop()
			waitFor(t, 10*time.Second, func() bool { return kb.ticks.Load() >= 1 })
			require.NoError(t, ctx.Err())

			lostAt := time.Now()
			loss.lose(t, kb.testBundle)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the operation's context was not cancelled after the lock was lost")
			}
			t.Logf("context cancelled %v after the lock was lost", time.Since(lostAt).Round(time.Millisecond))
			require.Less(t, time.Since(lostAt), time.Second, "cancelled at the next extension, not much later")
			require.ErrorIs(t, ctx.Err(), context.Canceled)
			require.ErrorIs(t, context.Cause(ctx), ErrLockLost)

			// The watchdog has ended: stop returns, and it never re-creates
			// or touches the lock it lost.
			stop()
			require.Equal(t, loss.wantLock, kb.lockValue(t))
		})
	}

	t.Run("StopDoesNotRelease", func(t *testing.T) {
		t.Parallel()
		kb := setupKeepAlive(t, lockTTL)
		ctx, stop := kb.lease.KeepAlive(kb.ctx, 0, tick(kb))
		waitFor(t, 10*time.Second, func() bool { return kb.ticks.Load() >= 2 })

		stop()
		stoppedAt := time.Now()
		ticks := kb.ticks.Load()
		require.Equal(t, kb.lease.Value(), kb.lockValue(t), "stop does not release the lock")
		require.ErrorIs(t, context.Cause(ctx), context.Canceled, "stop cancels the operation's context")
		require.NotErrorIs(t, context.Cause(ctx), ErrLockLost)
		stop() // idempotent

		// No more extensions: the lock runs out by itself, and tick is not
		// called again.
		waitFor(t, 10*time.Second, func() bool { return kb.lockValue(t) == "" })
		t.Logf("lock expired %v after stop", time.Since(stoppedAt).Round(time.Millisecond))
		require.Equal(t, ticks, kb.ticks.Load())
		require.NoError(t, kb.lease.Release(kb.ctx), "releasing an expired lease is fine")
	})

	t.Run("ParentCancelled", func(t *testing.T) {
		t.Parallel()
		kb := setupKeepAlive(t, lockTTL)
		parent, cancel := context.WithCancelCause(kb.ctx)
		errStop := errors.New("stopping")
		ctx, stop := kb.lease.KeepAlive(parent, 0, nil) // nil tick is allowed
		defer stop()
		cancel(errStop)
		<-ctx.Done()
		require.ErrorIs(t, context.Cause(ctx), errStop)
		stop()
		require.Equal(t, kb.lease.Value(), kb.lockValue(t), "cancelling the parent does not release either")
	})

	t.Run("AfterCommit", func(t *testing.T) {
		t.Parallel()
		kb := setupKeepAlive(t, lockTTL)
		_, err := kb.store.Begin(kb.ctx, kb.lease, tryOf(fpA, time.Now()))
		require.NoError(t, err)
		ctx, stop := kb.lease.KeepAlive(kb.ctx, 0, tick(kb))
		defer stop()
		_, err = kb.store.Commit(kb.ctx, kb.lease, fpA, cartOutcome(t), nil)
		require.NoError(t, err)

		// The commit deleted the lock; a watchdog left running notices that
		// at its next tick and must not bring the lock back.
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("watchdog still running after the commit released the lease")
		}
		require.ErrorIs(t, context.Cause(ctx), ErrLockLost)
		require.Empty(t, kb.lockValue(t))
	})
}
