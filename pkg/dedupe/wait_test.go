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
