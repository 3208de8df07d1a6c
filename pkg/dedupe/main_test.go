package dedupe

import (
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
)

// env is the Redis (and NATS) every test of this package shares; each test
// isolates itself with its own testenv.Namespace as Config.Namespace.
var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Shared()
	if err != nil {
		// Never skip: a machine without Redis must fail loudly, not pass.
		fmt.Fprintln(os.Stderr, "dedupe tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	if cluster != nil {
		cluster.Shutdown()
	}
	testenv.Close()
	os.Exit(code)
}

// A Redis Cluster, started by the first test that needs one (most do not:
// it takes seconds) and shared by the rest.
var (
	clusterOnce sync.Once
	cluster     *testenv.RedisCluster
	errCluster  error
)

// clustered returns a Cluster client of the shared Redis Cluster.
func clustered(t *testing.T) *redis.ClusterClient {
	t.Helper()
	clusterOnce.Do(func() { cluster, errCluster = testenv.StartRedisCluster(3) })
	require.NoError(t, errCluster)
	opt, err := redis.ParseClusterURL(cluster.URL())
	require.NoError(t, err)
	rdb := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newKey returns a random version 4 UUID in canonical form, like the keys
// clients send.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
