package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// TestProcessor_WaitReplicas runs workers on a Sentinel deployment (a
// master, one replica) through a failover client, with WaitReplicas 1:
// outcomes are answered once the replica has them. With the replica down
// an outcome is stored on the master but not answered, and the command
// comes back until the replica is up again and has it: no client learns an
// outcome that a failover could still take back.
func TestProcessor_WaitReplicas(t *testing.T) {
	t.Parallel()
	s, err := testenv.StartSentinel()
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	b := setupOn(t, redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs()}))
	p := b.startWorkerOn(t, b.rdb, nil, func(c *processor.Config) {
		c.WaitReplicas, c.WaitTimeout = 1, 100*time.Millisecond
	})

	for range 5 {
		key := newKey()
		b.charge(t, key, 100)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		b.publish(t, messages.KindCartAdd, newKey(), messages.CartAddRequest{CartID: "c", SKU: "s", Quantity: 1})
	}
	b.drained(t)
	require.Zero(t, p.Stats().ReplicaShortfall, "the replica keeps up")

	s.Kill(1)
	key := newKey()
	b.charge(t, key, 200)
	eventuallyf(t, 20*time.Second, func() bool { return p.Stats().ReplicaShortfall >= 2 }, "answers held back")
	require.Zero(t, b.answers.count(key), "not answered while only the master has it")
	rec, err := b.rdb.HGet(context.Background(), b.cfg.KeyPrefix+"idem:rec:{"+key+"}", "state").Result()
	require.NoError(t, err)
	require.Equal(t, string(dedupe.StateCompleted), rec, "stored on the master")

	require.NoError(t, s.Start(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.WaitReplica(ctx, 1))
	got := b.answers.waitAnswers(t, key, 1)[0]
	require.Equal(t, messages.StatusSucceeded, got.Status)
	require.True(t, got.Replayed, "answered by a later delivery, from the stored outcome")
	require.Equal(t, 1, b.calls(t, key), "the provider was called once")
	b.drained(t)
}
