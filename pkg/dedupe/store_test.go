package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// testBundle is what a dedupe test works with: a Store in its own namespace
// of the shared Redis, a plain client to look behind the Store's back, and
// a fresh idempotency key.
type testBundle struct {
	ctx   context.Context //nolint:containedctx // the test's t.Context(), held so that helpers and cases need not pass it
	rdb   *redis.Client
	store *Store
	key   string
}

// setup returns a bundle whose Store uses cfg (nil for the defaults) under a
// new testenv.Namespace.
func setup(t *testing.T, cfg *Config) *testBundle {
	t.Helper()
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	return setupWithClient(t, rdb, cfg)
}

func setupWithClient(t *testing.T, rdb *redis.Client, cfg *Config) *testBundle {
	t.Helper()
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Namespace = testenv.Namespace() + ":"
	store, err := New(rdb, &c)
	require.NoError(t, err)
	return &testBundle{ctx: t.Context(), rdb: rdb, store: store, key: newKey()}
}

// acquire takes the bundle key's lease and releases it at the end of the test.
func (b *testBundle) acquire(t *testing.T) *Lease {
	t.Helper()
	lease, err := b.store.Acquire(b.ctx, b.key)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lease.Release(context.Background()) })
	return lease
}

// tryOf is a delivery of the bundle's command published at published, by a
// worker whose MAX_DELIVER is 3.
func tryOf(fingerprint string, published time.Time) Try {
	return Try{Kind: "cart.add", Fingerprint: fingerprint, Published: published, MaxTries: 3}
}

// begin acquires the key and begins a try with fingerprint that runs.
func (b *testBundle) begin(t *testing.T, fingerprint string) *Lease { //nolint:unparam // callers name the fingerprint their Commit must match
	t.Helper()
	lease := b.acquire(t)
	got, err := b.store.Begin(b.ctx, lease, tryOf(fingerprint, time.Now()))
	require.NoError(t, err)
	require.Equal(t, BeginRun, got.Status)
	require.Equal(t, StateRunning, got.Record.State)
	return lease
}

// raw returns the record hash as Redis holds it.
func (b *testBundle) raw(t *testing.T) map[string]string {
	t.Helper()
	m, err := b.rdb.HGetAll(b.ctx, b.store.RecordKey(b.key)).Result()
	require.NoError(t, err)
	return m
}

// lockValue returns the value of the key's lock, "" when there is none.
func (b *testBundle) lockValue(t *testing.T) string {
	t.Helper()
	v, err := b.rdb.Get(b.ctx, b.store.LockKey(b.key)).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	require.NoError(t, err)
	return v
}

// requireTTL checks that key expires in (want-slack, want].
func requireTTL(t *testing.T, b *testBundle, key string, want time.Duration) {
	t.Helper()
	ttl, err := b.rdb.PTTL(b.ctx, key).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, want)
	require.Greater(t, ttl, want-10*time.Second, "TTL %v, want about %v", ttl, want)
}

// lockLosses are the ways a worker loses its lock behind its back: the
// shared behaviour every fenced operation (Extend, Begin, Commit, the
// KeepAlive watchdog) is checked against. After each, the lock key holds
// wantLock ("" for none).
var lockLosses = map[string]struct {
	lose     func(t *testing.T, b *testBundle)
	wantLock string
}{
	"LockDeleted": {
		lose: func(t *testing.T, b *testBundle) {
			t.Helper()
			require.NoError(t, b.rdb.Del(b.ctx, b.store.LockKey(b.key)).Err())
		},
	},
	"LockTakenOver": {
		lose: func(t *testing.T, b *testBundle) {
			t.Helper()
			require.NoError(t, b.rdb.Set(b.ctx, b.store.LockKey(b.key), "other-worker", time.Minute).Err())
		},
		wantLock: "other-worker",
	},
	"LockExpired": {
		lose: func(t *testing.T, b *testBundle) {
			t.Helper()
			// Expire it again until it is gone: a running watchdog may
			// extend it within the millisecond.
			waitFor(t, 5*time.Second, func() bool {
				if b.lockValue(t) == "" {
					return true
				}
				require.NoError(t, b.rdb.PExpire(b.ctx, b.store.LockKey(b.key), time.Millisecond).Err())
				return false
			})
		},
	},
}

const (
	fpA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	fpB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// cartOutcome is a cart.add outcome whose quantity a commit's Effect fills in.
func cartOutcome(t *testing.T) messages.Result {
	t.Helper()
	data, err := json.Marshal(struct {
		CartID   string          `json:"cart_id"`
		SKU      string          `json:"sku"`
		Quantity json.RawMessage `json:"quantity"`
	}{"cart_7", "SKU-RED-M", json.RawMessage(Placeholder)})
	require.NoError(t, err)
	return messages.Result{
		Status: messages.StatusSucceeded, Data: data, Attempts: 1,
		ProcessedAt: time.Date(2026, 11, 27, 11, 0, 0, 123_456_789, time.FixedZone("CET", 3600)),
	}
}

func TestNew(t *testing.T) {
	t.Parallel()

	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		store, err := New(rdb, nil)
		require.NoError(t, err)
		require.Equal(t, Config{
			RecordPrefix: RecordPrefixDefault, LockPrefix: LockPrefixDefault, Retention: RetentionDefault,
			LockTTL: LockTTLDefault, CallTimeout: CallTimeoutDefault,
		}, store.Config())
		// The contract's Redis layout, with the key as hash tag.
		require.Equal(t, "idem:rec:{k}", store.RecordKey("k"))
		require.Equal(t, "idem:lock:{k}", store.LockKey("k"))
	})

	t.Run("Namespace", func(t *testing.T) {
		t.Parallel()
		store, err := New(rdb, &Config{Namespace: "ns:", RecordPrefix: "r:", LockPrefix: "l:"})
		require.NoError(t, err)
		require.Equal(t, "ns:r:{k}", store.RecordKey("k"))
		require.Equal(t, "ns:l:{k}", store.LockKey("k"))
	})

	t.Run("NilClient", func(t *testing.T) {
		t.Parallel()
		_, err := New(nil, nil)
		require.ErrorContains(t, err, "nil Redis client")
	})

	invalid := map[string]struct {
		cfg     Config
		wantErr string
	}{
		"RetentionTooShort": {Config{Retention: 999 * time.Millisecond}, "Retention"},
		"LockTTLTooShort":   {Config{LockTTL: 29 * time.Millisecond}, "LockTTL"},
		"CallTimeout":       {Config{CallTimeout: -time.Second}, "CallTimeout"},
		"SamePrefixes":      {Config{RecordPrefix: "x:", LockPrefix: "x:"}, "RecordPrefix"},
		"SameAsDefault":     {Config{RecordPrefix: LockPrefixDefault}, "RecordPrefix"},
	}
	for name, tt := range invalid {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := New(rdb, &tt.cfg)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestStore_Acquire(t *testing.T) {
	t.Parallel()

	t.Run("SecondAcquireIsLocked", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.acquire(t)
		require.Equal(t, b.key, lease.Key())
		require.NotEmpty(t, lease.Value())
		require.Equal(t, lease.Value(), b.lockValue(t))
		requireTTL(t, b, b.store.LockKey(b.key), LockTTLDefault)

		_, err := b.store.Acquire(b.ctx, b.key)
		require.ErrorIs(t, err, ErrLocked)
		require.Equal(t, lease.Value(), b.lockValue(t), "a refused Acquire leaves the holder's lock alone")
	})

	t.Run("AcquireAfterRelease", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		first := b.acquire(t)
		require.NoError(t, first.Release(b.ctx))
		require.Empty(t, b.lockValue(t))

		second := b.acquire(t)
		require.NotEqual(t, first.Value(), second.Value())
		require.Equal(t, second.Value(), b.lockValue(t))
	})

	t.Run("AcquireAfterExpiry", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{LockTTL: 50 * time.Millisecond})
		first := b.acquire(t)
		var second *Lease
		waitFor(t, 5*time.Second, func() bool {
			var err error
			second, err = b.store.Acquire(b.ctx, b.key)
			if errors.Is(err, ErrLocked) {
				return false
			}
			require.NoError(t, err)
			return true
		})
		require.NotEqual(t, first.Value(), second.Value())
		require.NoError(t, second.Release(b.ctx))
	})

	t.Run("KeysAreIndependent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.acquire(t)
		other, err := b.store.Acquire(b.ctx, newKey())
		require.NoError(t, err)
		require.NoError(t, other.Release(b.ctx))
	})

	t.Run("ConcurrentOneWinner", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		const workers = 8
		errs := make(chan error, workers)
		leases := make(chan *Lease, workers)
		for range workers {
			go func() {
				lease, err := b.store.Acquire(b.ctx, b.key)
				if err == nil {
					leases <- lease
				}
				errs <- err
			}()
		}
		var locked int
		for range workers {
			if err := <-errs; err != nil {
				require.ErrorIs(t, err, ErrLocked)
				locked++
			}
		}
		require.Equal(t, workers-1, locked)
		winner := <-leases
		require.Equal(t, winner.Value(), b.lockValue(t))
		require.NoError(t, winner.Release(b.ctx))
	})
}

func TestLease_Release(t *testing.T) {
	t.Parallel()

	t.Run("Twice", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.acquire(t)
		require.NoError(t, lease.Release(b.ctx))
		require.NoError(t, lease.Release(b.ctx))
		require.Empty(t, b.lockValue(t))
	})

	t.Run("AfterExpiry", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.acquire(t)
		require.NoError(t, b.rdb.Del(b.ctx, b.store.LockKey(b.key)).Err())
		require.NoError(t, lease.Release(b.ctx))
	})

	t.Run("KeepsSomeoneElsesLock", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.acquire(t)
		require.NoError(t, b.rdb.Set(b.ctx, b.store.LockKey(b.key), "other-worker", time.Minute).Err())
		err := lease.Release(b.ctx)
		t.Logf("release of a lock taken over: %v", err)
		require.Equal(t, "other-worker", b.lockValue(t))
	})

	t.Run("ExtendAfterRelease", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.acquire(t)
		require.NoError(t, lease.Release(b.ctx))
		require.ErrorIs(t, lease.Extend(b.ctx), ErrLockLost)
		require.Empty(t, b.lockValue(t), "a released lease is never re-created")
	})
}

func TestLease_Extend(t *testing.T) {
	t.Parallel()

	t.Run("PushesExpiryBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{LockTTL: time.Minute})
		lease := b.acquire(t)
		require.NoError(t, b.rdb.PExpire(b.ctx, b.store.LockKey(b.key), time.Second).Err())
		require.NoError(t, lease.Extend(b.ctx))
		requireTTL(t, b, b.store.LockKey(b.key), time.Minute)
	})

	for name, loss := range lockLosses {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			lease := b.acquire(t)
			loss.lose(t, b)
			require.ErrorIs(t, lease.Extend(b.ctx), ErrLockLost)
			require.Equal(t, loss.wantLock, b.lockValue(t), "a lost lock is not re-created")
		})
	}
}

func TestStore_Get(t *testing.T) {
	t.Parallel()

	t.Run("Absent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		rec, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Nil(t, rec)
	})

	t.Run("Running", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.begin(t, fpA)
		rec, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Equal(t, &Record{Key: b.key, State: StateRunning, Kind: "cart.add", Fingerprint: fpA,
			MaxTries: 3, Tries: 1, Effect: EffectNone}, rec)
	})

	corrupt := map[string][]any{
		"UnknownState": {"state", "paused"},
		"BadAttempts":  {"state", "completed", "attempts", "x"},
	}
	for name, fields := range corrupt {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			require.NoError(t, b.rdb.HSet(b.ctx, b.store.RecordKey(b.key), fields...).Err())
			_, err := b.store.Get(b.ctx, b.key)
			require.ErrorContains(t, err, b.key)
		})
	}
}

func TestStore_Begin(t *testing.T) {
	t.Parallel()
	now := time.Now()

	t.Run("NewKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{Retention: time.Hour})
		lease := b.acquire(t)
		got, err := b.store.Begin(b.ctx, lease, Try{Kind: "payment.charge", Fingerprint: fpA, Published: now, MaxTries: 3})
		require.NoError(t, err)
		require.Equal(t, Begun{Status: BeginRun, Record: &Record{Key: b.key, State: StateRunning, Kind: "payment.charge",
			Fingerprint: fpA, MaxTries: 3, Tries: 1, Effect: EffectNone}}, got)
		require.Equal(t, map[string]string{"v": "2", "state": "running", "command": "payment.charge", "fingerprint": fpA,
			"max_tries": "3", "tries": "1", "effect": "none"}, b.raw(t))
		requireTTL(t, b, b.store.RecordKey(b.key), time.Hour)
		require.Equal(t, lease.Value(), b.lockValue(t), "Begin keeps the lock")
	})

	t.Run("CountsTriesUntilExhausted", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for try := 1; try <= 3; try++ {
			lease := b.acquire(t)
			got, err := b.store.Begin(b.ctx, lease, tryOf(fpA, now))
			require.NoError(t, err)
			require.Equal(t, BeginRun, got.Status, "try %d", try)
			require.Equal(t, try, got.Record.Tries)
			require.NoError(t, b.store.Settle(b.ctx, lease, EffectNone, false))
		}
		lease := b.acquire(t)
		got, err := b.store.Begin(b.ctx, lease, tryOf(fpA, now))
		require.NoError(t, err)
		require.Equal(t, BeginExhausted, got.Status)
		require.Equal(t, 3, got.Record.Tries)
		require.False(t, got.Record.Unknown(), "every try settled as certainly without effect")
		require.Equal(t, StateIdle, got.Record.State, "an exhausted delivery runs nothing")
		require.Equal(t, "idle", b.raw(t)["state"])
		require.Equal(t, lease.Value(), b.lockValue(t), "the caller keeps the lock, to dead-letter the key")
	})

	t.Run("TryThatNeverReportedBackIsUnknown", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		first := b.begin(t, fpA)
		require.NoError(t, first.Release(b.ctx)) // the worker died: no Settle, no Commit

		got, err := b.store.Begin(b.ctx, b.acquire(t), tryOf(fpA, now))
		require.NoError(t, err)
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown(), "the dead try may have taken effect")
		require.Equal(t, 2, got.Record.Tries)
	})

	t.Run("ReturnsCompletedAndExtendsIt", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{Retention: time.Hour})
		committed, err := b.store.Commit(b.ctx, b.begin(t, fpA), fpA, cartOutcome(t), nil)
		require.NoError(t, err)
		require.NoError(t, b.rdb.PExpire(b.ctx, b.store.RecordKey(b.key), time.Minute).Err())

		got, err := b.store.Begin(b.ctx, b.acquire(t), tryOf(fpA, now))
		require.NoError(t, err)
		require.Equal(t, BeginCompleted, got.Status)
		require.Equal(t, committed, got.Record)
		requireTTL(t, b, b.store.RecordKey(b.key), time.Hour) // a replay answers the outcome: retention again
	})

	t.Run("ConflictWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.begin(t, fpA)
		before := b.raw(t)
		require.NoError(t, b.rdb.Del(b.ctx, b.store.LockKey(b.key)).Err())
		got, err := b.store.Begin(b.ctx, b.acquire(t), tryOf(fpB, now))
		require.NoError(t, err)
		require.Equal(t, BeginConflict, got.Status)
		require.Equal(t, fpA, got.Record.Fingerprint)
		require.Equal(t, before, b.raw(t))
	})

	for name, loss := range lockLosses {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			lease := b.acquire(t)
			loss.lose(t, b)
			_, err := b.store.Begin(b.ctx, lease, tryOf(fpA, now))
			require.ErrorIs(t, err, ErrLockLost)
			require.Empty(t, b.raw(t), "nothing written")
			require.Equal(t, loss.wantLock, b.lockValue(t))
		})
	}
}

// deadLetter is the DeadLetter of the bundle's command published at
// published, telling its client effect.
func deadLetter(published time.Time, effect string) DeadLetter {
	return DeadLetter{Published: published, Effect: effect, Kind: "cart.add", Fingerprint: fpA}
}

func TestStore_DeadLetter(t *testing.T) {
	t.Parallel()
	published := time.Now().Add(-time.Minute).Truncate(time.Microsecond)

	t.Run("FencesTheDeadCommandAndResetsTries", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.begin(t, fpA)
		require.NoError(t, b.store.Settle(b.ctx, lease, EffectUnknown, false))
		lease = b.acquire(t)
		_, err := b.store.Begin(b.ctx, lease, tryOf(fpA, published))
		require.NoError(t, err)
		rec, err := b.store.DeadLetter(b.ctx, lease, deadLetter(published, EffectUnknown))
		require.NoError(t, err)
		require.Nil(t, rec)
		require.Empty(t, b.lockValue(t), "DeadLetter releases the lock")
		require.ErrorIs(t, lease.Extend(b.ctx), ErrLockLost, "and the lease knows it")

		// A late delivery of that command (a worker paused before its lock,
		// a redelivery after a crash) ends as that dead letter.
		for _, at := range []time.Time{published, published.Add(-time.Second)} {
			got, err := b.store.Begin(b.ctx, b.acquire(t), tryOf(fpA, at))
			require.NoError(t, err)
			require.Equal(t, BeginDeadLettered, got.Status)
			require.Equal(t, published, got.Record.DeadBefore)
			require.Equal(t, EffectUnknown, got.Record.DeadEffect)
			require.NoError(t, b.rdb.Del(b.ctx, b.store.LockKey(b.key)).Err())
		}
		// A re-drive, published later, runs with fresh tries, still
		// knowing that an earlier effect may exist.
		got, err := b.store.Begin(b.ctx, b.acquire(t), tryOf(fpA, published.Add(time.Microsecond)))
		require.NoError(t, err)
		require.Equal(t, BeginRun, got.Status)
		require.Equal(t, 1, got.Record.Tries)
		require.True(t, got.Record.Unknown())
	})

	t.Run("NeverMovesTheFenceBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.begin(t, fpA)
		_, err := b.store.DeadLetter(b.ctx, lease, deadLetter(published, EffectNone))
		require.NoError(t, err)
		lease = b.acquire(t)
		_, err = b.store.DeadLetter(b.ctx, lease, deadLetter(published.Add(-time.Hour), EffectNone))
		require.NoError(t, err)
		rec, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Equal(t, published, rec.DeadBefore)
	})

	t.Run("CompletedIsNotDeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		committed, err := b.store.Commit(b.ctx, b.begin(t, fpA), fpA, cartOutcome(t), nil)
		require.NoError(t, err)
		before := b.raw(t)
		lease := b.acquire(t)
		rec, err := b.store.DeadLetter(b.ctx, lease, deadLetter(published, EffectNone))
		require.NoError(t, err)
		require.Equal(t, committed, rec, "the stored outcome is answered instead")
		require.Equal(t, before, b.raw(t))
		require.Equal(t, lease.Value(), b.lockValue(t), "the lock is left to its holder")
	})

	for name, loss := range lockLosses {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			lease := b.begin(t, fpA)
			before := b.raw(t)
			loss.lose(t, b)
			_, err := b.store.DeadLetter(b.ctx, lease, deadLetter(published, EffectNone))
			require.ErrorIs(t, err, ErrLockLost)
			require.Equal(t, before, b.raw(t))
			require.Equal(t, loss.wantLock, b.lockValue(t))
		})
	}
}

func TestStore_Settle(t *testing.T) {
	t.Parallel()

	t.Run("Certain", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		require.NoError(t, b.store.Settle(b.ctx, b.begin(t, fpA), EffectNone, false))
		require.Equal(t, map[string]string{"v": "2", "state": "idle", "command": "cart.add", "fingerprint": fpA,
			"max_tries": "3", "tries": "1", "effect": "none"}, b.raw(t))
		require.Empty(t, b.lockValue(t))
	})

	t.Run("Uncertain", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		require.NoError(t, b.store.Settle(b.ctx, b.begin(t, fpA), EffectUnknown, false))
		require.Equal(t, "unknown", b.raw(t)["effect"])
		require.Equal(t, "idle", b.raw(t)["state"])
	})

	for name, loss := range lockLosses {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			lease := b.begin(t, fpA)
			before := b.raw(t)
			loss.lose(t, b)
			require.ErrorIs(t, b.store.Settle(b.ctx, lease, EffectNone, false), ErrLockLost)
			require.Equal(t, before, b.raw(t), "a lost lock writes nothing; the next Begin sees running")
			require.Equal(t, loss.wantLock, b.lockValue(t))
		})
	}
}

func TestStore_Peek(t *testing.T) {
	t.Parallel()
	b := setup(t, &Config{Retention: time.Hour})
	rec, err := b.store.Peek(b.ctx, b.key)
	require.NoError(t, err)
	require.Nil(t, rec)

	lease := b.begin(t, fpA)
	rec, err = b.store.Peek(b.ctx, b.key)
	require.NoError(t, err)
	require.Equal(t, StateRunning, rec.State)

	committed, err := b.store.Commit(b.ctx, lease, fpA, cartOutcome(t), nil)
	require.NoError(t, err)
	require.NoError(t, b.rdb.PExpire(b.ctx, b.store.RecordKey(b.key), time.Minute).Err())
	rec, err = b.store.Peek(b.ctx, b.key)
	require.NoError(t, err)
	require.Equal(t, committed, rec)
	requireTTL(t, b, b.store.RecordKey(b.key), time.Hour)
}

func TestStore_BeginAndCommit(t *testing.T) {
	t.Parallel()
	now := time.Now()

	t.Run("NewKeyAppliesTheEffectOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		cart := b.store.Config().Namespace + "cart:{cart_7}"
		effect := &Effect{Key: cart, Field: "SKU-RED-M", By: 2}
		got, err := b.store.BeginAndCommit(b.ctx, b.acquire(t), tryOf(fpA, now), cartOutcome(t), effect)
		require.NoError(t, err)
		require.Equal(t, BeginCommitted, got.Status)
		require.JSONEq(t, `{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":2}`, string(got.Record.Result.Data))
		require.Empty(t, b.lockValue(t))
		stored, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Equal(t, got.Record, stored)

		lease := b.acquire(t)
		again, err := b.store.BeginAndCommit(b.ctx, lease, tryOf(fpA, now), cartOutcome(t), effect)
		require.NoError(t, err)
		require.Equal(t, BeginCompleted, again.Status)
		require.NoError(t, lease.Release(b.ctx), "a replay leaves the lock to its holder")
		require.Equal(t, stored, again.Record)
		require.Equal(t, "2", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val(), "applied once")

		other, err := b.store.BeginAndCommit(b.ctx, b.acquire(t), tryOf(fpB, now), cartOutcome(t), effect)
		require.NoError(t, err)
		require.Equal(t, BeginConflict, other.Status)
		require.Equal(t, "2", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val())
	})

	t.Run("DeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		_, err := b.store.DeadLetter(b.ctx, b.begin(t, fpA), deadLetter(now, EffectNone))
		require.NoError(t, err)
		before := b.raw(t)
		got, err := b.store.BeginAndCommit(b.ctx, b.acquire(t), tryOf(fpA, now), cartOutcome(t), nil)
		require.NoError(t, err)
		require.Equal(t, BeginDeadLettered, got.Status)
		require.Equal(t, before, b.raw(t))
	})

	for name, loss := range lockLosses {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			lease := b.acquire(t)
			loss.lose(t, b)
			_, err := b.store.BeginAndCommit(b.ctx, lease, tryOf(fpA, now), cartOutcome(t), nil)
			require.ErrorIs(t, err, ErrLockLost)
			require.Empty(t, b.raw(t))
		})
	}
}

func TestStore_Commit(t *testing.T) {
	t.Parallel()

	t.Run("Completes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{Retention: time.Hour})
		lease := b.begin(t, fpA)
		outcome := messages.Result{
			Status: messages.StatusFailed, Code: "card_declined", Message: "insufficient funds",
			Data:     json.RawMessage(`{"charge_id":"ch_1","account_id":"acct_42","amount":1999,"currency":"EUR"}`),
			Attempts: 3,
			// Stored at millisecond precision, in UTC.
			ProcessedAt: time.Date(2026, 11, 27, 11, 0, 0, 123_456_789, time.FixedZone("CET", 3600)),
		}
		committed, err := b.store.Commit(b.ctx, lease, fpA, outcome, nil)
		require.NoError(t, err)

		want := outcome
		want.Key, want.Kind, want.Fingerprint = b.key, "cart.add", fpA
		want.ProcessedAt = time.Date(2026, 11, 27, 10, 0, 0, 123_000_000, time.UTC)
		require.Equal(t, &Record{Key: b.key, State: StateCompleted, Kind: "cart.add", Fingerprint: fpA, Result: &want}, committed)

		require.Empty(t, b.lockValue(t), "the commit deletes the lock")
		requireTTL(t, b, b.store.RecordKey(b.key), time.Hour)

		got, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Equal(t, committed, got, "a reader gets exactly what the committer published")
		raw := b.raw(t)
		require.Equal(t, "2026-11-27T10:00:00.123Z", raw["processed_at"])
		for _, tryField := range []string{"max_tries", "tries", "effect", "dead_before", "dead_effect", "dead_at",
			"voided", "body", "apply", "running", "unknown"} {
			require.NotContains(t, raw, tryField)
		}
		require.Equal(t, "2", raw["v"])
		answer := got.Answer(true)
		require.True(t, answer.Replayed)
		require.False(t, got.Result.Replayed, "Answer copies")

		require.NoError(t, lease.Release(b.ctx), "release after commit does nothing")
		require.ErrorIs(t, lease.Extend(b.ctx), ErrLockLost)
	})

	t.Run("NilData", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		committed, err := b.store.Commit(b.ctx, b.begin(t, fpA), fpA, messages.Result{Status: messages.StatusSucceeded, Attempts: 1}, nil)
		require.NoError(t, err)
		require.JSONEq(t, `null`, string(committed.Result.Data))
		got, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Equal(t, committed, got)
	})

	t.Run("Effect", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		cart := b.store.Config().Namespace + "cart:{cart_7}"
		require.NoError(t, b.rdb.HSet(b.ctx, cart, "SKU-RED-M", 5).Err())

		committed, err := b.store.Commit(b.ctx, b.begin(t, fpA), fpA, cartOutcome(t),
			&Effect{Key: cart, Field: "SKU-RED-M", By: 2})
		require.NoError(t, err)
		require.JSONEq(t, `{"cart_id":"cart_7","sku":"SKU-RED-M","quantity":7}`, string(committed.Result.Data))
		require.Equal(t, "7", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val())

		got, err := b.store.Get(b.ctx, b.key)
		require.NoError(t, err)
		require.Equal(t, committed, got)
	})

	t.Run("SecondCommitReturnsStored", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		cart := b.store.Config().Namespace + "cart:{cart_7}"
		effect := &Effect{Key: cart, Field: "SKU-RED-M", By: 2}
		first, err := b.store.Commit(b.ctx, b.begin(t, fpA), fpA, cartOutcome(t), effect)
		require.NoError(t, err)
		stored := b.raw(t)

		// Another worker, with another lease, commits again: a redelivery
		// that raced the first, or a retried commit whose reply was lost.
		second := b.acquire(t)
		other := messages.Result{Status: messages.StatusFailed, Code: "other", Data: json.RawMessage(Placeholder),
			Attempts: 2, ProcessedAt: time.Now()}
		rec, err := b.store.Commit(b.ctx, second, fpA, other, effect)
		require.NoError(t, err)
		require.Equal(t, first, rec, "the stored outcome wins")
		require.Equal(t, stored, b.raw(t), "nothing rewritten")
		require.Equal(t, "2", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val(), "the effect is not applied twice")

		// Even under another fingerprint, a completed key is not touched.
		rec, err = b.store.Commit(b.ctx, second, fpB, other, effect)
		require.NoError(t, err)
		require.Equal(t, first, rec)
		require.Equal(t, "2", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val())
	})

	// A fenced commit: whoever no longer holds the lock writes nothing,
	// and neither does a commit under another fingerprint.
	requireRefused := func(t *testing.T, b *testBundle, lease *Lease, fingerprint string, wantErr error, wantRaw map[string]string) {
		t.Helper()
		cart := b.store.Config().Namespace + "cart:{cart_7}"
		require.NoError(t, b.rdb.HSet(b.ctx, cart, "SKU-RED-M", 5).Err())
		lockBefore := b.lockValue(t)

		rec, err := b.store.Commit(b.ctx, lease, fingerprint, cartOutcome(t),
			&Effect{Key: cart, Field: "SKU-RED-M", By: 2})
		require.ErrorIs(t, err, wantErr)
		require.Nil(t, rec)

		require.Equal(t, wantRaw, b.raw(t), "record unchanged")
		require.Equal(t, "5", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val(), "effect not applied")
		require.Equal(t, lockBefore, b.lockValue(t), "lock untouched")
	}

	for name, loss := range lockLosses {
		t.Run("Fenced"+name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			lease := b.begin(t, fpA)
			loss.lose(t, b)
			requireRefused(t, b, lease, fpA, ErrLockLost, running(fpA))
		})
	}

	t.Run("FingerprintMismatch", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		lease := b.begin(t, fpA)
		requireRefused(t, b, lease, fpB, ErrFingerprintMismatch, running(fpA))
		require.Equal(t, lease.Value(), b.lockValue(t), "the lease is still held")
	})

	// A holder of the lock whose record Redis lost (a failover, a restart
	// without persistence) is told so: nothing to commit into. (Before the
	// record became a state machine this was ErrFingerprintMismatch.)
	t.Run("NoRecord", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		requireRefused(t, b, b.acquire(t), fpA, ErrRecordLost, map[string]string{})
	})
}

// running is the raw record of a first try of the bundle's command, running.
func running(fingerprint string) map[string]string {
	return map[string]string{"v": "2", "state": "running", "command": "cart.add", "fingerprint": fingerprint,
		"max_tries": "3", "tries": "1", "effect": "none"}
}

// TestStore_Layout checks that every key the Store writes follows its
// Config: nothing lands under the default prefixes when others are set.
func TestStore_Layout(t *testing.T) {
	t.Parallel()

	layouts := map[string]*Config{
		"ContractPrefixes": nil,
		"CustomPrefixes":   {RecordPrefix: "r:", LockPrefix: "l:"},
	}
	for name, cfg := range layouts {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, cfg)
			ns := b.store.Config().Namespace
			lease := b.begin(t, fpA)

			keys, err := b.rdb.Keys(b.ctx, ns+"*").Result()
			require.NoError(t, err)
			require.ElementsMatch(t, []string{b.store.RecordKey(b.key), b.store.LockKey(b.key)}, keys)
			wantRecord, wantLock := ns+RecordPrefixDefault+"{"+b.key+"}", ns+LockPrefixDefault+"{"+b.key+"}"
			if cfg != nil {
				wantRecord, wantLock = ns+cfg.RecordPrefix+"{"+b.key+"}", ns+cfg.LockPrefix+"{"+b.key+"}"
			}
			require.Equal(t, wantRecord, b.store.RecordKey(b.key))
			require.Equal(t, wantLock, b.store.LockKey(b.key))

			_, err = b.store.Commit(b.ctx, lease, fpA, cartOutcome(t), nil)
			require.NoError(t, err)
			keys, err = b.rdb.Keys(b.ctx, ns+"*").Result()
			require.NoError(t, err)
			require.Equal(t, []string{wantRecord}, keys)
		})
	}
}

// waitFor polls cond until it holds or timeout passes: asynchronous results
// are waited for, never slept for.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
