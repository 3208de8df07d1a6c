package dedupe

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// On a Redis without replicas WAIT gives up after its timeout and says so;
// the PEXPIRE it rides behind keeps the record's retention.
func TestStore_WaitReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t, &Config{Retention: time.Hour})
	b.happyPath(t, b.key)
	start := time.Now()
	n, err := b.store.WaitReplicas(b.ctx, b.key, 1, 50*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "WAIT waited for the missing replica")
	requireTTL(t, b, b.store.RecordKey(b.key), time.Hour)
}

// A master that does not hold the record - a replica promoted before the
// commit reached it - must not report replicas for it (issue 17, item 5):
// WAIT there counts replicas at whatever offset they are, the record on
// none of them. Here the record is committed on one server (the old
// master), and WaitReplicas asked of another that has a replica in sync
// but never had the record (the promoted one).
func TestStore_WaitReplicas_RecordNotOnMaster(t *testing.T) {
	t.Parallel()
	old := setup(t, &Config{Retention: time.Hour})
	old.happyPath(t, old.key)

	promoted, err := testenv.StartRedis()
	require.NoError(t, err)
	t.Cleanup(promoted.Shutdown)
	opt, err := redis.ParseURL(promoted.URL)
	require.NoError(t, err)
	host, port, err := net.SplitHostPort(opt.Addr)
	require.NoError(t, err)
	replica, err := testenv.StartRedisWith("--save", "", "--appendonly", "no", "--replicaof", host, port)
	require.NoError(t, err)
	t.Cleanup(replica.Shutdown)
	rdb, err := testenv.ConnectRedis(promoted.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	require.Eventually(t, func() bool {
		n, err := rdb.Do(t.Context(), "WAIT", 1, 100).Int()
		return err == nil && n == 1
	}, 10*time.Second, 50*time.Millisecond, "the replica syncs")

	// The same deployment (namespace), after the failover.
	store, err := New(rdb, &Config{Namespace: old.store.Config().Namespace, Retention: time.Hour})
	require.NoError(t, err)
	b := &testBundle{ctx: t.Context(), rdb: rdb, store: store, key: old.key}
	n, err := b.store.WaitReplicas(b.ctx, old.key, 1, time.Second)
	require.ErrorIs(t, err, ErrRecordLost)
	require.Zero(t, n)
	require.Zero(t, rdb.Exists(b.ctx, b.store.RecordKey(old.key)).Val(), "and WaitReplicas made no record")

	// Once the master holds the record, the same call counts the replica.
	b.happyPath(t, old.key)
	n, err = b.store.WaitReplicas(b.ctx, old.key, 1, time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// BenchmarkWaitReplicas measures what REDIS_WAIT_REPLICAS=1 adds to a
// command's Redis time: Acquire+Begin and the fenced commit, then, or not,
// WAIT 1 behind a PEXPIRE, against a master with one replica on loopback,
// 64 commands in flight on an auto-pipelining client.
func BenchmarkWaitReplicas(b *testing.B) {
	master, err := testenv.StartRedis()
	require.NoError(b, err)
	defer master.Shutdown()
	opt, err := redis.ParseURL(master.URL)
	require.NoError(b, err)
	host, port, _ := net.SplitHostPort(opt.Addr)
	replica, err := testenv.StartRedisWith("--save", "", "--appendonly", "no", "--replicaof", host, port)
	require.NoError(b, err)
	defer replica.Shutdown()
	rdb, err := testenv.ConnectRedis(master.URL)
	require.NoError(b, err)
	pipe := autopipe.New(rdb, nil)
	rdb.AddHook(pipe)
	defer func() { pipe.Close(); _ = rdb.Close() }()
	require.Eventually(b, func() bool {
		n, err := rdb.Do(b.Context(), "WAIT", 1, 100).Int()
		return err == nil && n == 1
	}, 10*time.Second, 50*time.Millisecond, "the replica syncs")
	store, err := New(rdb, &Config{Namespace: testenv.Namespace() + ":"})
	require.NoError(b, err)
	for _, wait := range []int{0, 1} {
		b.Run(map[int]string{0: "NoWait", 1: "Wait1"}[wait], func(b *testing.B) {
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					key := newKey()
					lease, _, err := store.AcquireBegin(ctx, key, tryOf(fpA, time.Now()))
					if err == nil {
						_, err = store.Commit(ctx, lease, fpA, messages.Result{Status: messages.StatusSucceeded, Attempts: 1}, nil)
					}
					if err == nil && wait > 0 {
						var n int
						if n, err = store.WaitReplicas(ctx, key, wait, time.Second); err == nil && n < wait {
							err = errors.New("the replica did not acknowledge")
						}
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
