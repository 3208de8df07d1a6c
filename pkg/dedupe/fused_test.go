package dedupe

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// pipelines records the commands of every pipeline a client sends.
type pipelines struct {
	mu   sync.Mutex
	sent [][]string
}

func (p *pipelines) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}
func (p *pipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (p *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		p.mu.Lock()
		p.sent = append(p.sent, names)
		p.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (p *pipelines) take() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sent
	p.sent = nil
	return s
}

// pipelined returns a bundle whose client auto-pipelines, as the worker's
// does, and the record of what it sent.
func pipelined(t *testing.T) (*testBundle, *pipelines) {
	t.Helper()
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	h := autopipe.New(rdb, nil)
	rdb.AddHook(h)
	rec := &pipelines{}
	rdb.AddHook(rec)
	t.Cleanup(func() { h.Close(); _ = rdb.Close() })
	return setupWithClient(t, rdb, nil), rec
}

// TestAcquireBegin_OneRoundTrip: on an auto-pipelining client the lock's
// SET NX and the begin script go out in one pipeline; a second worker's
// pair, finding the lock taken, is ErrLocked and its script wrote nothing.
func TestAcquireBegin_OneRoundTrip(t *testing.T) {
	t.Parallel()
	b, rec := pipelined(t)
	a := tryOf("fp", time.Now())
	_, _, err := b.store.AcquireBegin(b.ctx, b.key, a) // loads the script: NOSCRIPT, then Run's EVAL
	require.NoError(t, err)
	b.key = newKey()
	rec.take()

	lease, begun, err := b.store.AcquireBegin(b.ctx, b.key, a)
	require.NoError(t, err)
	t.Cleanup(func() { _ = lease.Release(context.Background()) })
	require.Equal(t, BeginRun, begun.Status)
	require.Equal(t, 1, begun.Record.Tries)
	require.Equal(t, [][]string{{"set", "evalsha"}}, rec.take(), "the lock and begin in one pipeline")

	_, _, err = b.store.AcquireBegin(b.ctx, b.key, a)
	require.ErrorIs(t, err, ErrLocked)
	tries, err := b.rdb.HGet(b.ctx, b.store.RecordKey(b.key), "tries").Result()
	require.NoError(t, err)
	require.Equal(t, "1", tries, "the begin behind a SET that did not take the lock wrote nothing")
	require.Equal(t, "running", b.rdb.HGet(b.ctx, b.store.RecordKey(b.key), "state").Val())
	require.Equal(t, lease.Value(), b.lockValue(t), "the holder's lock is untouched")
}

// TestAcquireBegin_ScriptNotLoaded: after SCRIPT FLUSH (a restarted Redis)
// the script behind the lock fails with NOSCRIPT and is run again, loaded,
// holding the lock it took. Not parallel: SCRIPT FLUSH empties the shared
// Redis's script cache under every other test of the package, and the
// round-trip counts of TestAcquireBegin_ApplyEffectRoundTrips then saw an
// extra EVAL (make test, once); run before the parallel tests, it disturbs
// none.
func TestAcquireBegin_ScriptNotLoaded(t *testing.T) { //nolint:paralleltest // see above
	b, _ := pipelined(t)
	other, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	defer other.Close()
	require.NoError(t, other.ScriptFlush(b.ctx).Err())
	lease, begun, err := b.store.AcquireBegin(b.ctx, b.key, tryOf("fp", time.Now()))
	require.NoError(t, err)
	defer func() { _ = lease.Release(context.Background()) }()
	require.Equal(t, BeginRun, begun.Status)
	require.Equal(t, "1", b.rdb.HGet(b.ctx, b.store.RecordKey(b.key), "tries").Val())
}

// TestAcquireBegin_WithoutPipelining: on a plain client it is Acquire, then
// Begin, with the same answers.
func TestAcquireBegin_WithoutPipelining(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	a := tryOf("fp", time.Now())
	lease, begun, err := b.store.AcquireBegin(b.ctx, b.key, a)
	require.NoError(t, err)
	require.Equal(t, BeginRun, begun.Status)
	_, _, err = b.store.AcquireBegin(b.ctx, b.key, a)
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, lease.Release(b.ctx))
	lease, begun, err = b.store.AcquireBegin(b.ctx, b.key, a)
	require.NoError(t, err)
	defer func() { _ = lease.Release(context.Background()) }()
	require.Equal(t, BeginRun, begun.Status)
	require.Equal(t, 2, begun.Record.Tries)
	require.True(t, begun.Record.Unknown(), "the first try never reported back")
}

// TestAcquireBeginAndCommit_OneRoundTrip: the same for an operation whose
// effect is its commit's: one pipeline, the outcome stored, the lock gone.
func TestAcquireBeginAndCommit_OneRoundTrip(t *testing.T) {
	t.Parallel()
	b, rec := pipelined(t)
	a := tryOf("fp", time.Now())
	res := messages.Result{Status: messages.StatusSucceeded, Data: []byte(`{"quantity":2}`), Attempts: 1, ProcessedAt: time.Now()}
	_, _, err := b.store.AcquireBeginAndCommit(b.ctx, newKey(), a, res, nil) // loads the script
	require.NoError(t, err)
	rec.take()

	_, begun, err := b.store.AcquireBeginAndCommit(b.ctx, b.key, a, res, nil)
	require.NoError(t, err)
	require.Equal(t, BeginCommitted, begun.Status)
	require.Equal(t, [][]string{{"set", "evalsha"}}, rec.take())
	require.Zero(t, b.rdb.Exists(b.ctx, b.store.LockKey(b.key)).Val(), "the commit released the lock")

	_, again, err := b.store.AcquireBeginAndCommit(b.ctx, b.key, a, res, nil)
	require.NoError(t, err)
	require.Equal(t, BeginCompleted, again.Status, "a repeat finds the outcome")
}

// TestAcquireBegin_ApplyEffectRoundTrips: cart.add with its effect apart
// from the commit, as on a Redis Cluster, costs three round trips on the
// worker's client: the lock and Begin in one, the effect's script, the
// commit.
func TestAcquireBegin_ApplyEffectRoundTrips(t *testing.T) {
	t.Parallel()
	b, rec := pipelined(t)
	a := tryOf("fp", time.Now())
	effect := &Effect{Key: b.store.Config().Namespace + "cart:{c}", Field: "SKU", By: 2}
	res := messages.Result{Status: messages.StatusSucceeded, Data: []byte(`{"quantity":2}`), Attempts: 1, ProcessedAt: time.Now()}
	run := func(key string) {
		lease, begun, err := b.store.AcquireBegin(b.ctx, key, a)
		require.NoError(t, err)
		require.Equal(t, BeginRun, begun.Status)
		_, err = b.store.ApplyEffect(b.ctx, key, "fp", effect)
		require.NoError(t, err)
		_, err = b.store.Commit(b.ctx, lease, "fp", res, nil)
		require.NoError(t, err)
	}
	run(newKey()) // loads the scripts
	rec.take()
	run(b.key)
	require.Equal(t, [][]string{{"set", "evalsha"}, {"evalsha"}, {"evalsha"}}, rec.take())
}
