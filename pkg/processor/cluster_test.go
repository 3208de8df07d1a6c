package processor_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// The Redis Cluster of this package's tests: three masters, started on
// first use and shut down by TestMain.
var (
	clusterOnce sync.Once
	cluster     *testenv.RedisCluster
	errCluster  error
)

// clusterClient returns a new client of the package's Redis Cluster.
func clusterClient(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	clusterOnce.Do(func() { cluster, errCluster = testenv.StartRedisCluster(3) })
	require.NoError(tb, errCluster)
	opt, err := redis.ParseClusterURL(cluster.URL())
	require.NoError(tb, err)
	return redis.NewClusterClient(opt)
}

// TestProcessor_RedisCluster runs cart.add on a Redis Cluster of three
// masters, where the cart and the key's record hash to different slots:
// one script over both would be refused (CROSSSLOT). The engine picks the
// separate effect by itself on a cluster client; a crash at each step
// between lock and ack leaves one add and one outcome.
func TestProcessor_RedisCluster(t *testing.T) {
	t.Parallel()

	t.Run("CartAdd", func(t *testing.T) {
		t.Parallel()
		b := setupOn(t, clusterClient(t))
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.startWorker(t, nil, nil)
		b.startWorker(t, nil, nil)
		ctx := context.Background()
		cart := "cart_" + newKey()[:8]
		keys := make([]string, 6)
		for i := range keys {
			keys[i] = newKey()
			for b.rdb.ClusterKeySlot(ctx, b.cfg.KeyPrefix+"idem:rec:{"+keys[i]+"}").Val() ==
				b.rdb.ClusterKeySlot(ctx, layout.Cart(b.cfg.KeyPrefix, cart)).Val() {
				keys[i] = newKey() // the point is two slots
			}
			b.publish(t, messages.KindCartAdd, keys[i], messages.CartAddRequest{CartID: cart, SKU: "SKU-1", Quantity: 2})
		}
		quantities := map[int64]bool{}
		for _, key := range keys {
			got := b.answers.waitAnswers(t, key, 1)[0]
			require.Equal(t, messages.StatusSucceeded, got.Status, "%+v", got)
			quantities[data[messages.CartAddData](t, got).Quantity] = true
		}
		require.Len(t, quantities, len(keys), "each add answers the quantity right after it")
		require.EqualValues(t, 2*len(keys), cartQuantity(t, b, cart, "SKU-1"))

		// A re-send past the dedupe window reaches a worker, which replays
		// the outcome and adds nothing.
		waitPast(t, 150*time.Millisecond)
		b.publish(t, messages.KindCartAdd, keys[0], messages.CartAddRequest{CartID: cart, SKU: "SKU-1", Quantity: 2})
		replay := b.answers.waitAnswers(t, keys[0], 2)[1]
		require.True(t, replay.Replayed)
		requireSameOutcome(t, b.answers.waitAnswers(t, keys[0], 1)[0], replay)
		require.EqualValues(t, 2*len(keys), cartQuantity(t, b, cart, "SKU-1"))
	})

	for _, point := range cartApartSteps {
		t.Run("CrashAt/"+string(point), func(t *testing.T) {
			t.Parallel()
			crashAt(t, setupOn(t, clusterClient(t)), cartApart, point)
		})
	}
}
