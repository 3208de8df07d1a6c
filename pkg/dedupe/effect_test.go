package dedupe

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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

// On a Redis Cluster an effect is applied apart from the commit, and what
// remembers it must not grow with the cart nor live on with it (issue 17,
// item 4): before contract v1.2 every add to a cart went into one hash,
// <cart>:applied, whose expiry each add pushed back, so an entry lived as
// long as the cart kept getting adds. Now each command's entry expires a
// retention after its own add.
func TestStore_ApplyEffect_ClusterEntriesExpireOnTheirOwn(t *testing.T) {
	t.Parallel()
	rdb := clustered(t)
	const retention = 3 * time.Second
	store, err := New(rdb, &Config{Namespace: testenv.Namespace() + ":", Retention: retention})
	require.NoError(t, err)
	ctx := t.Context()
	effect := &Effect{Key: store.Config().Namespace + "cart:{" + newKey() + "}", Field: "SKU", By: 1}
	first, second := newKey(), newKey()

	_, err = store.ApplyEffect(ctx, first, fpA, effect)
	require.NoError(t, err)
	// Time must pass between the two adds: the expiries at different times
	// are what is tested, not an asynchronous result.
	time.Sleep(retention / 2)
	_, err = store.ApplyEffect(ctx, second, fpA, effect)
	require.NoError(t, err)
	grown, err := rdb.Exists(ctx, effect.Key+AppliedSuffix).Result()
	require.NoError(t, err)

	waitFor(t, 4*retention, func() bool {
		_, found, err := store.LookupEffect(ctx, first, fpA, effect)
		require.NoError(t, err)
		return !found
	})
	n, found, err := store.LookupEffect(ctx, second, fpA, effect)
	require.NoError(t, err)
	require.True(t, found, "the first add's entry expired at its own time, not at the second's")
	require.EqualValues(t, 2, n)
	require.Zero(t, grown, "no hash of every add to the cart")
}

func TestStore_VoidEffect(t *testing.T) {
	t.Parallel()

	// A voided effect is never applied: a worker paused before its
	// ApplyEffect that resumes after the resolver voided the key applies
	// nothing.
	t.Run("VoidedIsNeverApplied", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &Config{Retention: time.Hour})
		effect := &Effect{Key: b.store.Config().Namespace + "cart:{void}", Field: "SKU", By: 2}
		n, found, err := b.store.VoidEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.False(t, found)
		require.Zero(t, n)
		requireTTL(t, b, AppliedKey(effect.Key, b.key, fpA), time.Hour)

		_, err = b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
		require.ErrorIs(t, err, ErrEffectVoided)
		require.Zero(t, b.rdb.Exists(b.ctx, effect.Key).Val(), "nothing applied")
		_, found, err = b.store.LookupEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.False(t, found)
		_, found, err = b.store.VoidEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.False(t, found, "voiding again changes nothing")

		// Another payload under the key is another command: not voided.
		n, err = b.store.ApplyEffect(b.ctx, b.key, fpB, effect)
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
	})

	// A void finds an effect that was applied, and changes nothing.
	t.Run("FoundIsReturned", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		effect := &Effect{Key: b.store.Config().Namespace + "cart:{void}", Field: "SKU", By: 2}
		require.NoError(t, b.rdb.HSet(b.ctx, effect.Key, "SKU", 5).Err())
		applied, err := b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.EqualValues(t, 7, applied)
		n, found, err := b.store.VoidEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.True(t, found)
		require.Equal(t, applied, n)
		require.Equal(t, "7", b.rdb.HGet(b.ctx, effect.Key, "SKU").Val(), "nothing changed")
		again, err := b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.Equal(t, applied, again, "still applied once")
	})

	t.Run("KeyWithoutHashTagIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		_, _, err := b.store.VoidEffect(b.ctx, b.key, fpA, &Effect{Key: "cart:7", Field: "x", By: 1})
		require.ErrorIs(t, err, ErrNoHashTag)
		require.Zero(t, b.rdb.Exists(b.ctx, AppliedKey("cart:7", b.key, fpA)).Val())
	})
}

// Effects applied by workers before contract v1.2 live in the hash
// <cart>:applied until it expires: they are still found, and never applied
// again.
func TestStore_ApplyEffect_ReadsTheV1Hash(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	effect := &Effect{Key: b.store.Config().Namespace + "cart:{v1}", Field: "SKU", By: 2}
	require.NoError(t, b.rdb.HSet(b.ctx, effect.Key, "SKU", 5).Err())
	require.NoError(t, b.rdb.HSet(b.ctx, effect.Key+AppliedSuffix, b.key+":"+fpA, 5).Err())

	n, found, err := b.store.LookupEffect(b.ctx, b.key, fpA, effect)
	require.NoError(t, err)
	require.True(t, found)
	require.EqualValues(t, 5, n)
	n, err = b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
	require.NoError(t, err)
	require.EqualValues(t, 5, n, "the v1 entry's value")
	n, found, err = b.store.VoidEffect(b.ctx, b.key, fpA, effect)
	require.NoError(t, err)
	require.True(t, found)
	require.EqualValues(t, 5, n)
	require.Equal(t, "5", b.rdb.HGet(b.ctx, effect.Key, "SKU").Val(), "not applied again")
	require.Zero(t, b.rdb.Exists(b.ctx, AppliedKey(effect.Key, b.key, fpA)).Val(), "nothing written beside it")
}

// Effect.TTL expires the counter a TTL after its last change; zero leaves
// it without expiry.
func TestStore_ApplyEffect_CounterTTL(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ns := b.store.Config().Namespace
	withTTL := &Effect{Key: ns + "cart:{ttl}", Field: "SKU", By: 1, TTL: time.Hour}
	_, err := b.store.ApplyEffect(b.ctx, b.key, fpA, withTTL)
	require.NoError(t, err)
	requireTTL(t, b, withTTL.Key, time.Hour)

	forever := &Effect{Key: ns + "cart:{forever}", Field: "SKU", By: 1}
	_, err = b.store.ApplyEffect(b.ctx, b.key, fpA, forever)
	require.NoError(t, err)
	require.Equal(t, time.Duration(-1), b.rdb.TTL(b.ctx, forever.Key).Val())

	// And in the commit script.
	cart := ns + "cart:{commit}"
	_, err = b.store.Commit(b.ctx, b.begin(t, fpA), fpA, cartOutcome(t), &Effect{Key: cart, Field: "SKU", By: 1, TTL: time.Hour})
	require.NoError(t, err)
	requireTTL(t, b, cart, time.Hour)
}

// appliedAliveLua reads, at one instant, whether the record KEYS[1] exists
// and whether the applied entry of ARGV[1] does (its own key KEYS[2], or
// the v1 hash KEYS[3]).
var appliedAliveLua = redis.NewScript(`
local applied = redis.call("EXISTS", KEYS[2]) + redis.call("HEXISTS", KEYS[3], ARGV[1])
return {redis.call("EXISTS", KEYS[1]), applied}
`)

// The applied entry of a command is what keeps a later try of it from
// applying its effect again, so it must live as long as the key's record,
// whose expiry every Begin pushes back: otherwise a try that comes after the
// entry expired, under a record still idle or dead with its effect unknown,
// applies the effect a second time (and a resolver's VoidEffect finds
// nothing and voids a key whose effect was applied). Before contract v1.2
// every ApplyEffect pushed the (shared) entry's expiry back; now the entry
// expires a retention after the first add, however often the key is tried
// since.
func TestStore_ApplyEffect_EntryLivesAsLongAsTheRecord(t *testing.T) {
	t.Parallel()
	const retention = 2 * time.Second
	b := setup(t, &Config{Retention: retention})
	effect := &Effect{Key: b.store.Config().Namespace + "cart:{lives}", Field: "SKU", By: 1}
	try := tryOf(fpA, time.Now())
	try.SeparateEffect = true
	tryOnce := func() {
		lease := b.acquire(t)
		got, err := b.store.Begin(b.ctx, lease, try)
		require.NoError(t, err)
		require.Equal(t, BeginRun, got.Status)
		n, err := b.store.ApplyEffect(b.ctx, b.key, fpA, effect)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		require.NoError(t, b.store.Settle(b.ctx, lease, EffectUnknown, false)) // the commit failed
	}
	tryOnce()
	// Time must pass between the two tries: the expiries are what is
	// tested, not an asynchronous result.
	time.Sleep(retention / 2)
	tryOnce()

	keys := []string{b.store.RecordKey(b.key), AppliedKey(effect.Key, b.key, fpA), effect.Key + AppliedSuffix}
	waitFor(t, 5*retention, func() bool {
		alive, err := appliedAliveLua.Run(b.ctx, b.rdb, keys, b.key+":"+fpA).Int64Slice()
		require.NoError(t, err)
		if alive[0] == 1 {
			require.EqualValues(t, 1, alive[1], "the record lives on, and its applied entry is gone")
		}
		return alive[0] == 0
	})
}
