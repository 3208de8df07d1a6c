package dedupe

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// roundTrips is a go-redis hook that records every request the client sends:
// one command, or one pipeline (a single round trip whatever its length).
type roundTrips struct {
	mu   sync.Mutex
	sent []string
}

var _ redis.Hook = (*roundTrips)(nil)

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record(cmd.Name())
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		r.record("pipeline[" + strings.Join(names, ",") + "]")
		return next(ctx, cmds)
	}
}

func (r *roundTrips) record(name string) {
	r.mu.Lock()
	r.sent = append(r.sent, name)
	r.mu.Unlock()
}

// take returns what was sent since the last take.
func (r *roundTrips) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent := r.sent
	r.sent = nil
	return sent
}

// TestStore_RoundTrips pins the cost the package documentation promises:
// three Redis round trips per command on the happy path.
func TestStore_RoundTrips(t *testing.T) {
	t.Parallel()

	setup := func(t *testing.T) (*testBundle, *roundTrips) {
		t.Helper()
		rdb, err := testenv.ConnectRedis(env.RedisURL)
		require.NoError(t, err)
		t.Cleanup(func() { _ = rdb.Close() })
		counter := &roundTrips{}
		rdb.AddHook(counter)
		b := setupWithClient(t, rdb, nil)

		// Warm up: the client's first command dials and sends HELLO and
		// CLIENT SETINFO, and the first use of a script on a Redis costs an
		// EVALSHA that fails with NOSCRIPT before the EVAL. That is once per
		// connection or script and server, not per command: logged, not
		// counted. The warm-up uses every script: begin, commit, and
		// redsync's unlock.
		b.happyPath(t, newKey())
		lease, err := b.store.Acquire(b.ctx, newKey())
		require.NoError(t, err)
		require.NoError(t, lease.Release(b.ctx))
		t.Logf("warm-up (dial, HELLO, script loading): %d round trips %v", len(counter.sent), counter.take())
		return b, counter
	}

	t.Run("HappyPath", func(t *testing.T) {
		t.Parallel()
		b, counter := setup(t)
		b.happyPath(t, b.key)
		sent := counter.take()
		t.Logf("Acquire -> Begin -> Commit: %d Redis round trips %v", len(sent), sent)
		require.Equal(t, []string{"set", "evalsha", "evalsha"}, sent)
	})

	t.Run("Replay", func(t *testing.T) {
		t.Parallel()
		b, counter := setup(t)
		b.happyPath(t, b.key)
		counter.take()

		// A duplicate delivery: the outcome is read and the lock released.
		lease, err := b.store.Acquire(b.ctx, b.key)
		require.NoError(t, err)
		got, err := b.store.Begin(b.ctx, lease, tryOf(fpA, time.Now()))
		require.NoError(t, err)
		require.Equal(t, BeginCompleted, got.Status)
		require.NoError(t, lease.Release(b.ctx))
		sent := counter.take()
		t.Logf("duplicate Acquire -> Begin -> Release: %d Redis round trips %v", len(sent), sent)
		require.Equal(t, []string{"set", "evalsha", "evalsha"}, sent)
	})
}

// happyPath runs one command on key: Acquire, Begin, Commit.
func (b *testBundle) happyPath(t *testing.T, key string) {
	t.Helper()
	lease, err := b.store.Acquire(b.ctx, key)
	require.NoError(t, err)
	got, err := b.store.Begin(b.ctx, lease, tryOf(fpA, time.Now()))
	require.NoError(t, err)
	require.Equal(t, BeginRun, got.Status)
	rec, err := b.store.Commit(b.ctx, lease, fpA, messages.Result{Status: messages.StatusSucceeded, Attempts: 1}, nil)
	require.NoError(t, err)
	require.Equal(t, StateCompleted, rec.State)
}
