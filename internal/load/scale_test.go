package load_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// The whole pipeline past one machine: workers (in-process, each on its own
// connections) under the load of `make demo` - charges, cart adds, refunds,
// duplicates racing the original, right after its answer and after the
// dedupe window, key reuse - on a Redis Cluster, on a NATS cluster with R3
// streams, through a stream leader's SIGKILL and a Redis master's, each
// audited as `make demo` audits.
//
// `go test` runs a short variant of each (a few hundred commands, one
// kill); IDEMPAY_CLUSTER_LONG=1 (make cluster) runs thousands and kills
// more often.

// clusterLong reports whether the long variants run.
func clusterLong() bool { return os.Getenv("IDEMPAY_CLUSTER_LONG") != "" }

// size is short in the short variant, long in the long one.
func size(short, long int) int {
	if clusterLong() {
		return long
	}
	return short
}

// scaleProcessor is the workers' configuration: a dedupe window short
// enough for late duplicates to reach a worker, redelivery in seconds.
func scaleProcessor() processor.Config {
	return processor.Config{
		DedupeWindow: 300 * time.Millisecond, ResultTTL: 10 * time.Minute, AckWait: 2 * time.Second,
		LockTTL: time.Second, NakDelay: 100 * time.Millisecond, MaxNakDelay: time.Second,
		LockedDelay: 50 * time.Millisecond, Concurrency: 16,
	}
}

// scaleClient is a client that rides out an election or a failover:
// publishes retried with the same key for a minute, answers awaited as long.
func scaleClient(t *testing.T, env *loadtest.Env) *client.Client {
	t.Helper()
	cfg := env.ClientConfig()
	cfg.ResultTimeout = 40 * time.Second
	cfg.Retry = client.RetryConfig{InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: time.Minute, MaxRetries: 100}
	return env.MustClient(t, cfg)
}

// mixedLoad is the demo's mix: 30% duplicates (a third of them after the
// dedupe window), a fifth of the charges refunded, some declined.
func mixedLoad(count int, rate float64, progress *atomic.Int64) *load.Config {
	return &load.Config{
		Count: count, Concurrency: 32, Rate: rate, Duplicates: 0.3, LateAfter: 600 * time.Millisecond, LateShare: 0.3,
		RefundShare: 0.2, DeclineShare: 0.05, Timeout: 2 * time.Minute,
		Progress: func(p load.Progress) {
			if progress != nil {
				progress.Store(int64(p.Done))
			}
		},
	}
}

// runLoad starts the load in the background; wait returns its summary.
func runLoad(t *testing.T, c *client.Client, cfg *load.Config) (wait func() *load.Summary) {
	t.Helper()
	var (
		s   *load.Summary
		err error
		wg  sync.WaitGroup
	)
	ls := &loggedSender{t: t, c: c}
	lastUnanswered.Store(t, ls)
	wg.Go(func() { s, err = load.Run(context.Background(), ls, cfg) })
	return func() *load.Summary {
		wg.Wait()
		require.NoError(t, err)
		return s
	}
}

// loggedSender logs the first sends that get no answer, with their key.
type loggedSender struct {
	t      *testing.T
	c      *client.Client
	logged atomic.Int32
	mu     sync.Mutex
	keys   []string // unanswered
}

func (l *loggedSender) Send(ctx context.Context, key string, cmd messages.Command) (*client.Reply, error) {
	reply, err := l.c.Send(ctx, key, cmd)
	if reply == nil || reply.Result.Status == "" {
		if l.logged.Add(1) <= 10 {
			l.t.Logf("%s %s: no answer: %v (reply %+v)", cmd.Kind(), key, err, reply)
		}
		l.mu.Lock()
		l.keys = append(l.keys, key)
		l.mu.Unlock()
	}
	return reply, err
}

// lastUnanswered is the loggedSender of the last runLoad, for logState.
var lastUnanswered sync.Map // *testing.T -> *loggedSender

// waitProgress waits until the load has made n sends.
func waitProgress(t *testing.T, progress *atomic.Int64, n int) {
	t.Helper()
	loadtest.WaitFor(t, 2*time.Minute, func() bool { return progress.Load() >= int64(n) }, "%d sends", n)
}

// report logs the run's figures.
func report(t *testing.T, s *load.Summary, l *load.Ledger, reused int) {
	t.Helper()
	t.Logf("%d commands (%v), %d sends: %d dropped by JetStream, %d replayed by workers; outcomes %v; %d charges = %d provider charges, %d refunds, %d cart lines; %d keys reused and refused; %.0f commands/s, p99 %v",
		s.Commands, s.ByCommand, s.Sends, s.DroppedByJetStream, s.ReplayedByWorkers, s.ByStatus, l.Succeeded, l.Charged,
		l.Refunded, l.CartLines, reused, s.CommandsPerSecond, s.Latency.P99.Round(time.Millisecond))
}

// (a) A Redis Cluster of three masters: records, locks, carts and the
// provider's ledger spread over its slots; cart.add takes the path apart
// from the commit, the provider its {sim} keys.
func TestScale_RedisCluster(t *testing.T) {
	t.Parallel()
	rc, err := testenv.StartRedisCluster(3)
	require.NoError(t, err)
	t.Cleanup(rc.Shutdown)
	opt, err := redis.ParseClusterURL(rc.URL())
	require.NoError(t, err)
	rdb := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })

	env := loadtest.Setup(t, &loadtest.Options{Workers: 3, Redis: rdb, Processor: scaleProcessor()})
	c := scaleClient(t, env)
	s := runLoad(t, c, mixedLoad(size(300, 3000), 0, nil))()
	ledger := env.Audit(t, s)
	reused := env.ReuseKeys(t, c, s, 10)
	report(t, s, ledger, reused)
	require.Positive(t, ledger.CartLines)
	require.Positive(t, ledger.Refunded)

	// The adds went through the Cluster path: each cart remembers its adds.
	applied := 0
	for key, o := range s.Outcomes {
		if add, ok := o.Command.(messages.CartAddRequest); ok && o.Result.Status == messages.StatusSucceeded {
			v, err := rdb.Get(context.Background(), layout.CartApplied(env.Config.KeyPrefix, add.CartID, key, messages.Fingerprint(add))).Result()
			require.NoError(t, err, key)
			var got messages.CartAddData
			require.NoError(t, json.Unmarshal(o.Result.Data, &got), key)
			require.Equal(t, strconv.FormatInt(got.Quantity, 10), v, key)
			applied++
		}
	}
	require.Positive(t, applied)
	charges, err := rdb.HLen(context.Background(), layout.Sim(env.Config.KeyPrefix, true).Charges).Result()
	require.NoError(t, err)
	require.EqualValues(t, ledger.Succeeded, charges, "the provider's ledger under {sim}")
}

// natsClusterEnv starts a three-node NATS cluster and a deployment on it
// whose workers create R3 streams.
func natsClusterEnv(t *testing.T) (*testenv.NATSCluster, *loadtest.Env) {
	t.Helper()
	nc, err := testenv.StartNATSCluster(3)
	require.NoError(t, err)
	t.Cleanup(nc.Shutdown)
	pcfg := scaleProcessor()
	pcfg.StreamReplicas = 3
	env := loadtest.Setup(t, &loadtest.Options{Workers: 3, NATSURL: nc.URLs(), Processor: pcfg})
	top := env.Config.Topology
	for _, name := range []string{top.CommandStream, top.ResultStream, top.DeadLetterStream} {
		st, err := env.JS.Stream(context.Background(), name)
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, name)
	}
	return nc, env
}

// requireInResults checks that RESULTS holds every answered key's outcome,
// as first answered, and that COMMANDS is empty: no command left without
// an end.
func requireInResults(t *testing.T, env *loadtest.Env, s *load.Summary) {
	t.Helper()
	ctx := context.Background()
	top := env.Config.Topology
	stranded := uint64(0)
	drained := func() bool {
		st, err := env.JS.Stream(ctx, top.CommandStream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false
		}
		if info.State.Msgs == 0 {
			return true
		}
		if !strandsAcked(env.NC.ConnectedServerVersion()) {
			return false
		}
		cons, err := env.JS.Consumer(ctx, top.CommandStream, top.Consumer)
		if err != nil {
			return false
		}
		ci, err := cons.Info(ctx)
		if err != nil || ci.NumPending != 0 || ci.NumAckPending != 0 || info.State.LastSeq > ci.AckFloor.Stream {
			return false
		}
		stranded = info.State.Msgs
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if testenv.PollUntil(wctx, 10*time.Millisecond, func() (bool, error) { return drained(), nil }) != nil {
		logState(t, env)
		logLeft(t, env)
		require.FailNow(t, "COMMANDS not drained within 1m")
	}
	if stranded > 0 {
		t.Logf("nats-server %s left %d messages in COMMANDS that the consumer acknowledged (at or below its ack floor): stranded by the server (nats-server#5270), not left without an end",
			env.NC.ConnectedServerVersion(), stranded)
		logLeft(t, env)
	}
	st, err := env.JS.Stream(ctx, top.ResultStream)
	require.NoError(t, err)
	for key, o := range s.Outcomes {
		m, err := st.GetLastMsgForSubject(ctx, top.Subjects.ResultFor(key))
		require.NoError(t, err, key)
		r, err := messages.DecodeResult(m.Data)
		require.NoError(t, err)
		o.Result.Replayed, r.Replayed = false, false
		require.Equal(t, string(o.Result.Marshal()), string(r.Marshal()), key)
	}
}

// (b) A three-node NATS cluster, the streams R3, clients and workers given
// every node's URL.
func TestScale_NATSCluster(t *testing.T) {
	t.Parallel()
	_, env := natsClusterEnv(t)
	c := scaleClient(t, env)
	s := runLoad(t, c, mixedLoad(size(300, 3000), 0, nil))()
	ledger := env.Audit(t, s)
	reused := env.ReuseKeys(t, c, s, 10)
	report(t, s, ledger, reused)
	requireInResults(t, env, s)
}

// (c) Under load, the COMMANDS stream's leader is SIGKILLed and started
// again (three times in the long variant): every command the client saw
// acknowledged has its one outcome, in Redis and in RESULTS, and nothing
// is left in COMMANDS.
func TestScale_NATSLeaderKilled(t *testing.T) {
	t.Parallel()
	nc, env := natsClusterEnv(t)
	c := scaleClient(t, env)
	count, kills := size(400, 3000), size(1, 3)
	var progress atomic.Int64
	wait := runLoad(t, c, mixedLoad(count, float64(size(150, 200)), &progress))
	stream := env.Config.Topology.CommandStream
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for k := 1; k <= kills; k++ {
		waitProgress(t, &progress, k*count/(kills+1))
		leader, err := nc.WaitStreamLeader(ctx, stream, -1)
		require.NoError(t, err)
		nc.Kill(leader)
		killed, sends := time.Now(), progress.Load()
		next, err := nc.WaitStreamLeader(ctx, stream, leader)
		require.NoError(t, err)
		t.Logf("kill %d: SIGKILLed %s, the COMMANDS leader, after %d sends; %s leads after %v",
			k, nc.ServerName(leader), sends, nc.ServerName(next), time.Since(killed).Round(time.Millisecond))
		require.NoError(t, nc.Start(leader))
		require.NoError(t, nc.WaitStreamCurrent(ctx, stream))
	}
	s := wait()
	if !s.OK() {
		logState(t, env)
	}
	ledger := env.Audit(t, s)
	report(t, s, ledger, 0)
	requireInResults(t, env, s)
}

// strandsAcked reports whether a clustered nats-server of this version can
// leave messages in a work-queue stream after its consumer acknowledged
// them: acks that reach the stream's replicas at different times, across a
// leader change, strand them; nats-server#5270 (April 2024, in the 2.10
// series) made servers purge what lies below the consumers' ack floor.
// make test runs the cluster tests on Debian's 2.9 too, where a leader
// kill under load once left messages in COMMANDS for over a minute after
// every command was answered (make test, 2026-12-06; not reproduced in 7
// runs since). A message the consumer acked had its end; one it did not
// still fails the test, which then logs what is left. 2.15 must drain.
func strandsAcked(version string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major == 2 && minor < 10
}

// logLeft logs the first messages left in COMMANDS: their keys, and what
// Redis and RESULTS hold for each.
func logLeft(t *testing.T, env *loadtest.Env) {
	t.Helper()
	ctx := context.Background()
	top := env.Config.Topology
	st, err := env.JS.Stream(ctx, top.CommandStream)
	if err != nil {
		return
	}
	info, err := st.Info(ctx)
	if err != nil {
		return
	}
	rs, err := env.JS.Stream(ctx, top.ResultStream)
	if err != nil {
		return
	}
	shown := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && shown < 10; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		shown++
		key := m.Header.Get("Nats-Msg-Id")
		state := env.RDB.HGet(ctx, env.Config.KeyPrefix+"idem:rec:{"+key+"}", "state").Val()
		stored := "none"
		if r, err := rs.GetLastMsgForSubject(ctx, top.Subjects.ResultFor(key)); err == nil {
			stored = string(r.Data)
		}
		t.Logf("left in COMMANDS: seq %d %s key %s at %v: record %q; RESULTS: %s", seq, m.Subject, key, m.Time, state, stored)
	}
}

// logState logs what is left in COMMANDS and what the consumer holds, for a
// run that did not end well.
func logState(t *testing.T, env *loadtest.Env) {
	t.Helper()
	ctx := context.Background()
	top := env.Config.Topology
	st, err := env.JS.Stream(ctx, top.CommandStream)
	if err != nil {
		t.Logf("COMMANDS: %v", err)
		return
	}
	info, err := st.Info(ctx)
	if err == nil {
		t.Logf("COMMANDS: %d messages (seq %d-%d), leader %+v", info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, info.Cluster)
	}
	cons, err := env.JS.Consumer(ctx, top.CommandStream, top.Consumer)
	if err == nil {
		ci, err := cons.Info(ctx)
		if err == nil {
			t.Logf("consumer: pending %d, ack pending %d, redelivered %d, waiting %d, delivered %+v, ack floor %+v",
				ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered, ci.AckFloor)
		}
	}
	t.Logf("workers: %+v", env.Stats())
	v, ok := lastUnanswered.Load(t)
	if !ok {
		return
	}
	ls, _ := v.(*loggedSender)
	ls.mu.Lock()
	keys := append([]string(nil), ls.keys...)
	ls.mu.Unlock()
	rs, err := env.JS.Stream(ctx, top.ResultStream)
	if err != nil {
		t.Logf("RESULTS: %v", err)
		return
	}
	if info, err := rs.Info(ctx); err == nil {
		t.Logf("RESULTS: %d messages, cluster %+v", info.State.Msgs, info.Cluster)
	}
	for i, key := range keys {
		if i == 10 {
			break
		}
		state := env.RDB.HGet(ctx, env.Config.KeyPrefix+"idem:rec:{"+key+"}", "state").Val()
		m, err := rs.GetLastMsgForSubject(ctx, top.Subjects.ResultFor(key))
		stored := fmt.Sprint(err)
		if err == nil {
			stored = string(m.Data)
		}
		t.Logf("unanswered %s: record %q; RESULTS: %s", key, state, stored)
	}
}

// waitReplicated waits until the sentinels' master has the other data node
// as a synced replica, whichever node the master is by then.
func waitReplicated(ctx context.Context, t *testing.T, s *testenv.Sentinel) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := testenv.Poll(wctx, 10*time.Millisecond, func(ctx context.Context) error {
		master, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		other := 0
		if s.Addr(0) == master {
			other = 1
		}
		return s.WaitReplica(ctx, other)
	})
	require.NoError(t, err, "a master with a synced replica again")
}

// losses is what a Redis failover took back, counted after the run.
type losses struct {
	records     int // answered keys whose record is gone or no longer completed
	changed     int // answered keys whose stored outcome differs from the answer
	ledger      []string
	carts       int // cart lines that do not add up
	charges     int // succeeded charges the provider no longer holds
	refunds     int // refund lines that disagree
	lockLost    uint64
	shortfalls  uint64
	disagreeing int
}

func countLosses(t *testing.T, env *loadtest.Env, s *load.Summary) losses {
	t.Helper()
	ctx := context.Background()
	store, err := dedupe.New(env.RDB, &dedupe.Config{Namespace: env.Config.KeyPrefix})
	require.NoError(t, err)
	var l losses
	for key, o := range s.Outcomes {
		rec, err := store.Get(ctx, key)
		require.NoError(t, err)
		switch {
		case rec == nil || rec.State != dedupe.StateCompleted:
			l.records++
		case rec.Result.Status != o.Result.Status || string(rec.Result.Data) != string(o.Result.Data):
			l.changed++
		}
	}
	ledger, err := load.CheckLedger(ctx, env.RDB, env.Config.KeyPrefix, s)
	require.NoError(t, err)
	l.ledger = ledger.Mismatches
	for _, m := range l.ledger {
		switch {
		case strings.HasPrefix(m, "cart "):
			l.carts++
		case strings.Contains(m, "refund"):
			l.refunds++
		case strings.Contains(m, "the provider holds no charge"):
			l.charges++
		}
	}
	st := env.Stats()
	l.lockLost, l.shortfalls, l.disagreeing = st.LockLost, st.ReplicaShortfall, len(s.Disagreeing)
	return l
}

// (d) Under load on a Sentinel deployment (a master, a replica, three
// sentinels), the master is SIGKILLed; the workers' failover clients follow
// the replica the sentinels promote, and the old master comes back as its
// replica. Redis replicates asynchronously, so without WAIT the writes the
// old master acknowledged in its last moments may be gone: the test counts
// them (records, cart and ledger lines, locks) and logs the figures. With
// REDIS_WAIT_REPLICAS=1 no answered outcome may be lost, and the audit must
// pass whole.
func TestScale_SentinelFailover(t *testing.T) {
	t.Parallel()
	for _, waitReplicas := range []int{0, 1} {
		t.Run(map[int]string{0: "Async", 1: "WaitReplicas1"}[waitReplicas], func(t *testing.T) {
			t.Parallel()
			// AOF as in production (deploy/redis.conf), and 2s before a
			// node counts as down: on a loaded machine 1s let the sentinels
			// fail back to the old master right after it restarted.
			sent, err := testenv.StartSentinel(testenv.WithAOF(), testenv.WithNodeTimeout(2*time.Second))
			require.NoError(t, err)
			t.Cleanup(sent.Shutdown)
			rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sent.MasterName(), SentinelAddrs: sent.SentinelAddrs()})
			t.Cleanup(func() { _ = rdb.Close() })
			pcfg := scaleProcessor()
			pcfg.WaitReplicas, pcfg.WaitTimeout = waitReplicas, 200*time.Millisecond
			env := loadtest.Setup(t, &loadtest.Options{Workers: 3, Redis: rdb, Processor: pcfg})
			c := scaleClient(t, env)

			count, kills, lag := size(400, 3000), size(1, 2), time.Duration(size(300, 800))*time.Millisecond
			var progress atomic.Int64
			wait := runLoad(t, c, mixedLoad(count, float64(size(150, 200)), &progress))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for k := 1; k <= kills; k++ {
				waitProgress(t, &progress, k*count/(kills+1))
				master, err := sent.MasterAddr(ctx)
				require.NoError(t, err)
				// The replica falls behind first, as behind a broken link:
				// it is stopped, and the master drops its replication
				// connection (else the kernel would still buffer the
				// stream for it); for lag the master's writes reach it no
				// more. Then the master dies, and the replica wakes up.
				replica := 0
				if sent.Addr(0) == master {
					replica = 1
				}
				require.NoError(t, syscall.Kill(sent.Pid(replica), syscall.SIGSTOP))
				direct := redis.NewClient(&redis.Options{Addr: master})
				require.NoError(t, direct.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err())
				_ = direct.Close()
				time.Sleep(lag) // the fault's length, not a wait for a result
				old, err := sent.KillMaster()
				require.NoError(t, err)
				require.NoError(t, syscall.Kill(sent.Pid(replica), syscall.SIGCONT))
				killed, sends := time.Now(), progress.Load()
				next, err := sent.WaitFailover(ctx, master)
				require.NoError(t, err)
				took := time.Since(killed)
				require.NoError(t, sent.Start(old))
				waitReplicated(ctx, t, sent)
				t.Logf("kill %d: the replica cut off for %v, then the master %s SIGKILLed after %d sends; %s promoted after %v; the old master back as its replica after %v",
					k, lag, master, sends, next, took.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
			}
			s := wait()
			l := countLosses(t, env, s)
			t.Logf("REDIS_WAIT_REPLICAS=%d: %d commands, %d answered keys; lost after %d failover(s): %d records, %d outcomes changed, %d disagreeing keys; %d ledger lines off (%d cart lines, %d provider charges, %d refund lines); %d locks lost under a worker; %d answers held back for replicas; send errors %v",
				waitReplicas, s.Commands, len(s.Outcomes), kills, l.records, l.changed, l.disagreeing, len(l.ledger), l.carts, l.charges,
				l.refunds, l.lockLost, l.shortfalls, s.Errors)
			for i, m := range l.ledger {
				if i == 5 {
					break
				}
				t.Logf("  e.g. %s", m)
			}
			require.Zero(t, s.Unanswered)
			if waitReplicas > 0 {
				require.Empty(t, s.Errors, "every send answered")
				require.Zero(t, l.records, "no answered outcome lost")
				require.Zero(t, l.changed)
				env.Audit(t, s)
			}
		})
	}
}
