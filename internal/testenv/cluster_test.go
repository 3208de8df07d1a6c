package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The smoke tests below run on every `go test ./internal/testenv` (and so
// in `make test`): each starts a deployment, uses it through the client
// library the workers use, fails one node over, and shuts down. In parallel
// they take 15-20s on two cores, most of it the NATS stream's election
// after its leader is killed (4-9s of Raft election timeout). The longer
// failover exercises are in cluster_long_test.go, behind
// IDEMPAY_CLUSTER_LONG=1.

// publishUntilAcked publishes msg with its Nats-Msg-Id until JetStream
// acknowledges it (a retry after a lost acknowledgement is then dropped as
// a duplicate, so the stream keeps one copy), or ctx ends.
func publishUntilAcked(ctx context.Context, t *testing.T, js jetstream.JetStream, subject, id string) {
	t.Helper()
	var lastErr error
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, subject, []byte(id), jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // back off between retries, not a wait for a result
		}
	}
	require.NoError(t, lastErr, "publish %s", id)
	require.NoError(t, ctx.Err(), "publish %s", id)
}

func connectCluster(t *testing.T, c *NATSCluster) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.Timeout(2*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func TestNATSCluster_Smoke(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	start := time.Now()
	c, err := StartNATSCluster(3)
	require.NoError(t, err)
	t.Cleanup(c.Shutdown)
	t.Logf("3 nodes ready in %s (sync_interval always: %t; NATS_SERVER_BIN=%q)", time.Since(start).Round(time.Millisecond), c.SyncAlways(), os.Getenv("NATS_SERVER_BIN"))
	for i := range c.Nodes() {
		require.NotZero(t, c.Pid(i))
	}

	_, js := connectCluster(t, c)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SMOKE", Subjects: []string{"smoke.>"}, Replicas: 3, Storage: jetstream.FileStorage, Duplicates: time.Minute,
	})
	require.NoError(t, err)
	for i := range 10 {
		publishUntilAcked(ctx, t, js, "smoke.a", fmt.Sprintf("a-%d", i))
	}

	leader, err := c.StreamLeader("SMOKE")
	require.NoError(t, err)
	c.Kill(leader)
	require.Zero(t, c.Pid(leader), "a killed node has no pid")
	killed := time.Now()
	next, err := c.WaitStreamLeader(ctx, "SMOKE", leader)
	require.NoError(t, err)
	require.NotEqual(t, leader, next)
	t.Logf("killed leader %s; %s took over after %s", c.ServerName(leader), c.ServerName(next), time.Since(killed).Round(time.Millisecond))
	for i := range 10 {
		publishUntilAcked(ctx, t, js, "smoke.b", fmt.Sprintf("b-%d", i))
	}
	// A copy of an acknowledged message is still dropped by the new leader.
	ack, err := js.Publish(ctx, "smoke.a", []byte("a-0"), jetstream.WithMsgID("a-0"))
	require.NoError(t, err)
	require.True(t, ack.Duplicate)

	restarted := time.Now()
	require.NoError(t, c.Start(leader))
	require.NotZero(t, c.Pid(leader))
	require.NoError(t, c.WaitStreamCurrent(ctx, "SMOKE"))
	t.Logf("%s restarted and current after %s", c.ServerName(leader), time.Since(restarted).Round(time.Millisecond))

	s, err := js.Stream(ctx, "SMOKE")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(20), info.State.Msgs, "every acknowledged message, once")

	// A client connected to the restarted node alone reaches the stream.
	nc1, err := nats.Connect(c.NodeURL(leader), nats.Timeout(2*time.Second))
	require.NoError(t, err)
	defer nc1.Close()
	js1, err := jetstream.New(nc1)
	require.NoError(t, err)
	s1, err := js1.Stream(ctx, "SMOKE")
	require.NoError(t, err)
	msg, err := s1.GetLastMsgForSubject(ctx, "smoke.b")
	require.NoError(t, err)
	require.Equal(t, "b-9", string(msg.Data))
}

func TestRedisCluster_Smoke(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	c, err := StartRedisCluster(3, WithAOF())
	require.NoError(t, err)
	t.Cleanup(c.Shutdown)
	t.Logf("3 masters ready in %s", time.Since(start).Round(time.Millisecond))
	require.Len(t, c.Addrs(), 3)

	opt, err := redis.ParseClusterURL(c.URL())
	require.NoError(t, err)
	require.ElementsMatch(t, c.Addrs(), opt.Addrs, "URL names every node")
	rdb := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })

	owners := map[int]int{}
	for i := range 50 {
		key := fmt.Sprintf("k%d", i)
		require.NoError(t, rdb.Set(ctx, key, i, 0).Err())
		owner, err := c.MasterFor(ctx, key)
		require.NoError(t, err)
		owners[owner]++
	}
	require.Len(t, owners, 3, "the keys spread over every master")

	victim, err := c.MasterFor(ctx, "k0")
	require.NoError(t, err)
	c.Kill(victim)
	require.Zero(t, c.Pid(victim))
	require.NoError(t, c.Start(victim)) // waits for cluster_state:ok everywhere
	require.NotZero(t, c.Pid(victim))
	for i := range 50 {
		got, err := rdb.Get(ctx, fmt.Sprintf("k%d", i)).Int()
		require.NoError(t, err, "k%d after its master restarted from its AOF", i)
		require.Equal(t, i, got)
	}
}

func TestSentinel_Smoke(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	s, err := StartSentinel(WithAOF())
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	t.Logf("master, replica and 3 sentinels ready in %s", time.Since(start).Round(time.Millisecond))

	master, err := s.MasterAddr(ctx)
	require.NoError(t, err)
	require.Equal(t, s.Addr(0), master)

	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	require.NoError(t, rdb.Set(ctx, "before", "1", 0).Err())
	// Replication is asynchronous: wait for the replica to have the write,
	// or the failover below may lose it.
	require.NoError(t, rdb.Do(ctx, "WAIT", 1, 5000).Err())

	// The two other ways go-redis takes a Sentinel deployment reach it too.
	uopt := &redis.UniversalOptions{MasterName: s.MasterName(), Addrs: s.SentinelAddrs()}
	urdb := redis.NewUniversalClient(uopt)
	t.Cleanup(func() { _ = urdb.Close() })
	require.Equal(t, "1", urdb.Get(ctx, "before").Val())
	fopt, err := redis.ParseFailoverURL(s.URL())
	require.NoError(t, err)
	require.Equal(t, s.MasterName(), fopt.MasterName)
	require.ElementsMatch(t, s.SentinelAddrs(), fopt.SentinelAddrs)

	killed := time.Now()
	old, err := s.KillMaster()
	require.NoError(t, err)
	require.Equal(t, 0, old)
	require.Zero(t, s.Pid(old))
	next, err := s.WaitFailover(ctx, master)
	require.NoError(t, err)
	require.Equal(t, s.Addr(1), next)
	t.Logf("failed over from %s to %s in %s", master, next, time.Since(killed).Round(time.Millisecond))

	require.NoError(t, rdb.Set(ctx, "after", "2", 0).Err(), "the failover client follows the new master")
	require.Equal(t, "1", rdb.Get(ctx, "before").Val(), "a write the replica had survives the failover")
	require.NoError(t, s.Start(old))
	require.NotZero(t, s.Pid(old))
}

// racyPorts returns a port picker whose first answer has one port (at index
// at) already taken by a listener of this test, as when another process
// binds a free port between the probe and the server's bind; later answers
// are honest. It counts its calls.
func racyPorts(t *testing.T, at int) (pick func(int) ([]int, error), calls *int, taken int) {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	addr, ok := l.Addr().(*net.TCPAddr)
	require.True(t, ok)
	taken = addr.Port
	calls = new(int)
	pick = func(n int) ([]int, error) {
		*calls++
		ports, err := freePorts(n)
		if err == nil && *calls == 1 {
			ports[at] = taken
		}
		return ports, err
	}
	return pick, calls, taken
}

// A server that cannot bind its port exits; the deployment starts again on
// fresh ports instead of failing.
func TestStart_RetriesOnPortRace(t *testing.T) {
	t.Parallel()
	t.Run("nats", func(t *testing.T) {
		t.Parallel()
		pick, calls, taken := racyPorts(t, 3) // node 1's route port
		c, err := startNATSCluster(3, pick)
		require.NoError(t, err)
		defer c.Shutdown()
		require.Equal(t, 2, *calls)
		require.NotContains(t, c.URLs(), ":"+strconv.Itoa(taken))
	})
	t.Run("redis cluster", func(t *testing.T) {
		t.Parallel()
		pick, calls, taken := racyPorts(t, 2) // node 1's client port
		c, err := startRedisCluster(3, pick)
		require.NoError(t, err)
		defer c.Shutdown()
		require.Equal(t, 2, *calls)
		require.NotContains(t, c.Addrs(), fmt.Sprintf("127.0.0.1:%d", taken))
	})
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		pick, calls, taken := racyPorts(t, 3) // the second sentinel
		s, err := startSentinel(pick)
		require.NoError(t, err)
		defer s.Shutdown()
		require.Equal(t, 2, *calls)
		require.NotContains(t, s.SentinelAddrs(), fmt.Sprintf("127.0.0.1:%d", taken))
	})
}
