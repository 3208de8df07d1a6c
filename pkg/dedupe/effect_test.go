package dedupe

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

func TestStore_ApplyEffect(t *testing.T) {
	t.Parallel()

	t.Run("OncePerKeyAndPayload", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{Retention: time.Hour})
		cart := b.store.Config().Namespace + "cart:{cart_7}"
		effect := &Effect{Key: cart, Field: "SKU-RED-M", By: 2}

		_, found, err := b.store.LookupEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.False(t, found)
		n, err := b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
		other, err := b.store.ApplyEffect(b.ctx, newKey(), fpA, effect)
		require.NoError(t, err)
		require.EqualValues(t, 4, other, "another key adds")

		again, err := b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.EqualValues(t, 2, again, "a second run returns what the first produced")
		require.Equal(t, "4", b.rdb.HGet(b.ctx, cart, "SKU-RED-M").Val(), "and changes nothing")
		got, found, err := b.store.LookupEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.True(t, found)
		require.EqualValues(t, 2, got)
		requireTTL(t, b, AppliedKey(cart, b.key, fpA), time.Hour)

		// The key reused with another payload once its record expired is
		// another command: it adds.
		reused, err := b.store.ApplyEffect(b.ctx, b.key, fpB, effect)
		require.NoError(t, err)
		require.EqualValues(t, 6, reused)
	})

	t.Run("RacingRunsApplyOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		effect := &Effect{Key: b.store.Config().Namespace + "cart:{race}", Field: "SKU", By: 3}
		var wg sync.WaitGroup
		results := make([]int64, 8)
		for i := range results {
			wg.Go(func() {
				n, err := b.store.ApplyEffect(context.Background(), b.key, fpA, effect)
				if err == nil {
					results[i] = n
				}
			})
		}
		wg.Wait()
		for _, n := range results {
			require.EqualValues(t, 3, n)
		}
		require.Equal(t, "3", b.rdb.HGet(b.ctx, effect.Key, "SKU").Val())
	})

	t.Run("KeyWithoutHashTagIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for _, key := range []string{"cart:7", "cart:{}", "cart:{7"} {
			_, err := b.store.ApplyEffect(b.ctx, b.key, fpA, &Effect{Key: key, Field: "x", By: 1})
			require.ErrorIs(t, err, ErrNoHashTag, key)
			require.Zero(t, b.rdb.Exists(b.ctx, key).Val())
		}
	})
}

func TestHashTag(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"cart:{cart_7}": "cart_7", "p:cart:{c}:applied": "c", "{a}{b}": "a", "x{}y{z}": "", "x}{y}": "y", "plain": "",
	} {
		require.Equal(t, want, hashTag(key), key)
	}
}

// BenchmarkCartAdd compares the two ways of applying cart.add's effect on
// one Redis, as the worker's auto-pipelining client sends them with 64
// commands in flight: in the commit script (lock and begin+commit in one
// round trip), and apart (lock and begin, then the effect's own script,
// then the commit: three round trips), which a Redis Cluster needs.
// TestAcquireBegin_ApplyEffectRoundTrips counts the round trips.
func BenchmarkCartAdd(b *testing.B) {
	for _, apart := range []bool{false, true} {
		b.Run(map[bool]string{false: "InCommit", true: "Apart"}[apart], func(b *testing.B) {
			rdb, err := testenv.ConnectRedis(env.RedisURL)
			require.NoError(b, err)
			pipe := autopipe.New(rdb, nil)
			rdb.AddHook(pipe)
			defer func() { pipe.Close(); _ = rdb.Close() }()
			store, err := New(rdb, &Config{Namespace: testenv.Namespace() + ":"})
			require.NoError(b, err)
			one := func(ctx context.Context, i int) error {
				key, cart := newKey(), store.cfg.Namespace+"cart:{c"+strconv.Itoa(i%100)+"}"
				a := Try{Kind: "cart.add", Fingerprint: fpA, Published: time.Now(), MaxTries: 3}
				res := messages.Result{Status: messages.StatusSucceeded, Data: []byte(`{"quantity":` + Placeholder + `}`), Attempts: 1}
				effect := &Effect{Key: cart, Field: "SKU", By: 1}
				if !apart {
					_, _, err := store.AcquireBeginAndCommit(ctx, key, a, res, effect)
					return err
				}
				lease, _, err := store.AcquireBegin(ctx, key, a)
				if err != nil {
					return err
				}
				if _, err = store.ApplyEffect(ctx, key, fpA, effect); err != nil {
					return err
				}
				_, err = store.Commit(ctx, lease, fpA, res, nil)
				return err
			}
			require.NoError(b, one(b.Context(), 0)) // loads the scripts
			b.ResetTimer()
			var next sync.Mutex
			i := 0
			b.SetParallelism(32) // 64 in flight on two cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					next.Lock()
					i++
					n := i
					next.Unlock()
					if err := one(context.Background(), n); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
