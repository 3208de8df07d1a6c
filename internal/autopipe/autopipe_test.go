package autopipe_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// wire counts what reaches the connection: single commands and pipelines,
// of the tests' own commands (not go-redis's connection setup).
type wire struct{ singles, pipelines, piped atomic.Int64 }

func own(cmd redis.Cmder) bool { return cmd.Name() == "incr" || cmd.Name() == "set" }

func (*wire) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (w *wire) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if own(cmd) {
			w.singles.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (w *wire) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			if own(c) {
				n++
			}
		}
		if n > 0 {
			w.pipelines.Add(1)
			w.piped.Add(int64(n))
		}
		return next(ctx, cmds)
	}
}

func setup(t *testing.T) (*redis.Client, *autopipe.Hook, *wire, string) {
	t.Helper()
	env, err := testenv.Shared()
	require.NoError(t, err)
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	h := autopipe.New(rdb, nil)
	t.Cleanup(h.Close)
	rdb.AddHook(h)
	w := &wire{}
	rdb.AddHook(w) // inside the batcher: sees what it sends
	return rdb, h, w, testenv.Namespace()
}

func TestHook_ConcurrentCallsShareRoundTrips(t *testing.T) {
	t.Parallel()
	rdb, _, w, ns := setup(t)
	ctx := context.Background()
	const goroutines, each = 64, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			key := fmt.Sprintf("%s:n%d", ns, g)
			for i := 1; i <= each; i++ {
				n, err := rdb.Incr(ctx, key).Result()
				require.NoError(t, err)
				require.EqualValues(t, i, n, "every caller gets its own reply, in its own order")
			}
		})
	}
	wg.Wait()
	for g := range goroutines {
		require.Equal(t, "50", rdb.Get(ctx, fmt.Sprintf("%s:n%d", ns, g)).Val())
	}
	total := int64(goroutines * each)
	require.Equal(t, total, w.piped.Load(), "every call went out in a pipeline")
	t.Logf("%d calls in %d round trips (%.1f calls per round trip)", total, w.pipelines.Load(), float64(total)/float64(w.pipelines.Load()))
	require.Less(t, w.pipelines.Load(), total/2, "calls in flight together share round trips")
}

func TestHook_ErrorsStayWithTheirCommand(t *testing.T) {
	t.Parallel()
	rdb, _, _, ns := setup(t)
	ctx := context.Background()
	require.NoError(t, rdb.Set(ctx, ns+":s", "not a number", 0).Err())
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			require.Error(t, rdb.Incr(ctx, ns+":s").Err())
			require.ErrorIs(t, rdb.Get(ctx, ns+":absent").Err(), redis.Nil)
			require.NoError(t, rdb.Incr(ctx, ns+":ok").Err())
		})
	}
	wg.Wait()
	require.Equal(t, "20", rdb.Get(ctx, ns+":ok").Val())
}

func TestHook_ScriptsLoadThroughIt(t *testing.T) {
	t.Parallel()
	rdb, _, _, ns := setup(t)
	// A script new to the server: EVALSHA fails with NOSCRIPT, then EVAL.
	s := redis.NewScript(`return redis.call("INCRBY", KEYS[1], ARGV[1]) -- ` + ns)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { require.NoError(t, s.Run(context.Background(), rdb, []string{ns + ":sc"}, 2).Err()) })
	}
	wg.Wait()
	require.Equal(t, "32", rdb.Get(context.Background(), ns+":sc").Val())
}

func TestHook_AfterClose(t *testing.T) {
	t.Parallel()
	rdb, h, w, ns := setup(t)
	h.Close()
	before := w.singles.Load()
	require.NoError(t, rdb.Set(context.Background(), ns+":c", 1, 0).Err())
	require.Equal(t, before+1, w.singles.Load(), "after Close, a command goes out alone")
	require.NotErrorIs(t, rdb.Get(context.Background(), ns+":c").Err(), redis.Nil)
}
