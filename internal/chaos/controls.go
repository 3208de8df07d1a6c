package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Controls returns the negative controls, one per row of docs/guarantees.md's "Not
// covered" table that a single-server deployment can show. Each runs the
// fault of its row in the setting the row names, and must show the
// violation the row promises. ResultTTLExpired comes first: it waits out a
// RESULT_TTL, idle, while the others run.
func Controls() []*Scenario {
	return []*Scenario{
		{
			Name:    "result-ttl-expired",
			Proves:  "A retry later than RESULT_TTL: the command runs as new",
			Control: &Control{Expect: []Invariant{Agree, Carts}},
			Workers: 2,
			// The shortest RESULT_TTL the worker accepts with one try:
			// MAX_DELIVER x (ACK_WAIT + 30s, the longest retry delay) +
			// DEDUPE_WINDOW = 32s.
			WorkerEnv: []string{"MAX_DELIVER=1", "RESULT_TTL=34s"},
			Drive:     driveResultTTLExpired,
		},
		{
			Name:               "redis-no-persistence",
			Proves:             "Redis without persistence, restarted: every record is forgotten and a duplicate runs again",
			Control:            &Control{Expect: []Invariant{Agree, Charges}},
			Workers:            2,
			RedisNoPersistence: true,
			Drive:              driveRedisForgets,
		},
		{
			Name: "nats-unsynced-loss",
			Proves: "OS crash or power loss of NATS without sync_interval: always: commands whose publish was acknowledged are lost " +
				"(the writes NATS had not fsynced are dropped by hand, as a power cut would)",
			Control:    &Control{Expect: []Invariant{Answered}},
			Workers:    2,
			NATSNoSync: true,
			Drive:      driveNATSLosesUnsynced,
		},
		{
			Name:         "redis-failover",
			Proves:       "Redis failover with asynchronous replication: writes the old primary acknowledged are lost, and a duplicate runs again",
			Control:      &Control{Expect: []Invariant{Agree}},
			Workers:      2,
			RedisReplica: true,
			Drive:        driveRedisFailover,
		},
	}
}

// driveRedisForgets answers commands, restarts a Redis that persists
// nothing, and re-sends them after the dedupe window.
func driveRedisForgets(ctx context.Context, e *Env) error {
	cmds := e.Commands(60)
	if err := e.SendAll(ctx, cmds, load.KindOriginal); err != nil {
		return err
	}
	if err := e.inject(ctx, "redis-server SIGKILL without persistence, restarted", "redis", 0,
		func() error { e.srv.redis.Kill(); return e.srv.redis.Start() }, nil); err != nil { //nolint:contextcheck // the server outlives ctx; Start bounds its own readiness wait
		return err
	}
	e.pastDedupeWindow()
	return e.SendAll(ctx, cmds, load.KindLate)
}

// pastDedupeWindow waits until a re-send is past the dedupe window of
// every send so far.
func (e *Env) pastDedupeWindow() {
	time.Sleep(dedupeWindow + 500*time.Millisecond) // the window is a length of time; nothing to poll
}

// driveResultTTLExpired answers commands, waits until their outcomes have
// expired (RESULTS holds none of them), and re-sends them.
func driveResultTTLExpired(ctx context.Context, e *Env) error {
	cmds := e.Commands(40)
	if err := e.SendAll(ctx, cmds, load.KindOriginal); err != nil {
		return err
	}
	f := e.log.add("RESULT_TTL (34s) passes", "every outcome", time.Now())
	var err error
	e.idle(func() {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		err = testenv.PollUntil(wctx, time.Second, func() (bool, error) {
			for key := range cmds {
				if _, err := e.client.Status(wctx, key); !errors.Is(err, client.ErrNotFound) {
					return false, nil
				}
			}
			return true, nil
		})
	})
	if err != nil {
		return fmt.Errorf("the outcomes did not expire: %w", err)
	}
	e.heal(ctx, f)
	return e.SendAll(ctx, cmds, load.KindLate)
}

// driveNATSLosesUnsynced publishes commands while no worker runs, kills
// nats-server, drops what it had not fsynced (sync_interval is the default
// two minutes, and the server is younger than that: the command stream's
// message blocks), and restarts it and the workers.
func driveNATSLosesUnsynced(ctx context.Context, e *Env) error {
	for _, w := range e.ws.live() {
		if err := e.ws.term(ctx, w); err != nil {
			return err
		}
	}
	cmds := e.Commands(40)
	e.Publish(ctx, cmds, 2*time.Second)
	top := messages.DefaultTopology()
	return e.inject(ctx, "nats-server SIGKILL, its unsynced writes lost", "nats", 0, func() error {
		e.srv.nats.Kill()
		if err := dropUnsynced(e.srv.nats, top.CommandStream); err != nil {
			return err
		}
		if err := e.srv.nats.Start(); err != nil { //nolint:contextcheck // the server outlives ctx; Start bounds its own readiness wait
			return err
		}
		return e.restoreWorkers(ctx) // so that the recovery probe gets an answer
	}, nil)
}

// dropUnsynced truncates the message blocks of stream in a stopped
// server's store: the data a power cut loses when nothing was fsynced.
func dropUnsynced(n *testenv.NATSNode, stream string) error {
	var dirs []string
	err := filepath.WalkDir(n.StoreDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "msgs" && filepath.Base(filepath.Dir(path)) == stream {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(dirs) == 0 {
		return fmt.Errorf("no message blocks of %s under %s", stream, n.StoreDir)
	}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, ent := range entries {
			path := filepath.Join(dir, ent.Name())
			switch {
			case strings.HasSuffix(ent.Name(), ".blk"):
				err = os.Truncate(path, 0)
			default: // indexes of what the blocks held
				err = os.Remove(path)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// driveFrozenPastLastTry: the only worker freezes after it began the one
// try of a charge; a second worker, started once it is frozen, finds the
// key with no tries left, asks the provider (no charge) and dead-letters it
// as dead_lettered; then the frozen worker resumes and calls the provider.
func driveFrozenPastLastTry(ctx context.Context, e *Env) error {
	cmds := map[string]messages.Command{
		client.NewKey(): messages.ChargeRequest{AccountID: "acct_frozen", Amount: 500, Currency: "EUR"},
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.SendAll(ctx, cmds, load.KindOriginal) })
	defer wg.Wait()
	frozen := e.ws.live()[0]
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.PollUntil(wctx, 20*time.Millisecond, func() (bool, error) { return frozen.stopped(), nil }); err != nil {
		return fmt.Errorf("worker 1 never froze: %w", err)
	}
	if err := e.ws.start(wctx, 1); err != nil {
		return err
	}
	err := testenv.PollUntil(wctx, 100*time.Millisecond, func() (bool, error) {
		dls, err := e.client.DeadLetters(wctx)
		return err == nil && len(dls) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("no dead letter while worker 1 was frozen (%s): %w", e.consumerState(ctx), err)
	}
	e.ws.cont(frozen)
	return nil
}

// driveRedisFailover: answers on a primary whose replica is up to date,
// then more answers while the link to the replica hangs (asynchronous
// replication: the primary answers without waiting for it), then the
// primary dies and the replica is promoted behind the workers' proxy, as a
// Sentinel would; the commands answered during the hang are re-sent after
// the dedupe window.
func driveRedisFailover(ctx context.Context, e *Env) error {
	primary, replica := e.srv.redis, e.srv.replica
	if err := e.SendAll(ctx, e.Commands(30), load.KindOriginal); err != nil {
		return err
	}
	rrep, err := testenv.ConnectRedis(replica.URL)
	if err != nil {
		return err
	}
	defer rrep.Close()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.PollUntil(wctx, 50*time.Millisecond, func() (bool, error) {
		return replOffset(wctx, e.rdb, "master_repl_offset") == replOffset(wctx, rrep, "slave_repl_offset"), nil
	}); err != nil {
		return fmt.Errorf("the replica never caught up: %w", err)
	}
	lagging := e.Commands(30)
	f := e.log.add("the link to the replica hangs, the primary dies (SIGKILL), the replica is promoted", "redis", time.Now())
	if err := e.srv.replProxy.Hang(ctx); err != nil {
		return err
	}
	if err := e.SendAll(ctx, lagging, load.KindOriginal); err != nil {
		return err
	}
	primary.Kill()
	if err := rrep.Do(wctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		return err
	}
	addr, err := hostPort(replica.URL)
	if err != nil {
		return err
	}
	if err := e.srv.redisProxy.SetUpstream(addr); err != nil {
		return err
	}
	// The auditor reads the ledger and the carts where the workers now
	// write them.
	_ = e.rdb.Close()
	if e.rdb, err = testenv.ConnectRedis(replica.URL); err != nil {
		return err
	}
	e.heal(ctx, f)
	e.pastDedupeWindow()
	return e.SendAll(ctx, lagging, load.KindLate)
}

// replOffset reads a replication offset from INFO replication, -1 when it
// cannot.
func replOffset(ctx context.Context, rdb *redis.Client, field string) string {
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return "-1"
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return "-1"
}

// Publish sends every command without waiting long for its answer (no
// worker may be running): each send gives up after wait. A send whose
// PubAck came is accepted, answered or not.
func (e *Env) Publish(ctx context.Context, cmds map[string]messages.Command, wait time.Duration) {
	var wg sync.WaitGroup
	for key, cmd := range cmds {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			_, _ = e.Send(sctx, key, cmd, load.KindOriginal)
		})
	}
	wg.Wait()
}

// idle runs f, which only waits, letting another scenario use the machine
// meanwhile.
func (e *Env) idle(f func()) {
	if e.opts.Idle != nil {
		e.opts.Idle(f)
		return
	}
	f()
}

// consumerState describes the command consumer, for an error message.
func (e *Env) consumerState(ctx context.Context) string {
	top := messages.DefaultTopology()
	c, err := e.js.Consumer(ctx, top.CommandStream, top.Consumer)
	if err != nil {
		return err.Error()
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("consumer %s: %d pending, %d unacknowledged, %d redelivered, %d pull requests waiting",
		top.Consumer, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
}
