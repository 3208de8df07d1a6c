package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/testenv"
)

// servers are the nats-server and redis-server of one run (a
// testenv.Deployment), and the harness's own connections to them (the
// deployment's).
type servers struct {
	natsURL, redisURL string
	natsPid, redisPid int // 0 when the process cannot be observed
	// describe says which servers run and how, for the output.
	describe []string

	d   *testenv.Deployment
	nc  *nats.Conn
	js  jetstream.JetStream
	rdb *redis.Client
	dir string // the run's builds and files

	// restoreProcs puts this process's GOMAXPROCS and environment back.
	restoreProcs func()
}

// startServers starts a nats-server child (built from the version go.mod
// pins) with file storage, falling back to an in-process server when the
// binary cannot be built, and a redis-server child. durable turns on the
// settings the README prescribes for production: JetStream fsync before
// every ack, Redis AOF with appendfsync always.
//
// gomaxprocs above 0 is GOMAXPROCS for every Go process of the run: set
// here for this process and, through the environment, for every child
// (nats-server now, the workers and the gateway later; workers inherit
// GOMAXPROCS, see passEnv), until close.
func startServers(durable bool, gomaxprocs int) (_ *servers, err error) {
	s := &servers{restoreProcs: func() {}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if gomaxprocs > 0 {
		s.restoreProcs = setGoMaxProcs(gomaxprocs)
		s.describe = append(s.describe, fmt.Sprintf("Go:    GOMAXPROCS=%d for nats-server, the workers, the gateway and this process (the bare consumer, the client)", gomaxprocs))
	}

	if s.dir, err = os.MkdirTemp("", "idempay-bench-*"); err != nil {
		return nil, err
	}
	redisArgs, persist := testenv.RedisVolatile, "no persistence"
	if durable {
		redisArgs, persist = testenv.RedisAOF, "AOF, appendfsync always"
	}
	sync := "default sync_interval (2m)"
	if durable {
		sync = "sync_interval always"
	}
	// The servers as every harness runs them (testenv.Deployment): a
	// nats-server child built from the version go.mod pins, falling back
	// to an in-process server when it cannot be built, and a redis-server
	// child.
	// The harness's async publishes are chunked (see preload) far below
	// the JetStream limit set here; it is set explicitly so the two stay
	// visibly related.
	opts := &testenv.DeploymentOptions{Name: "idempay-bench", NATSChild: true, NoSyncAlways: !durable, RedisArgs: redisArgs,
		NATSOptions:      []nats.Option{nats.Timeout(5 * time.Second)},
		JetStreamOptions: []jetstream.JetStreamOpt{jetstream.WithPublishAsyncMaxPending(4 * preloadChunk)}}
	bin, buildErr := testenv.NATSServerBinary()
	if buildErr != nil {
		opts.NATSChild = false
	}
	if s.d, err = testenv.StartDeployment(opts); err != nil {
		return nil, err
	}
	if buildErr == nil {
		s.natsPid = s.d.NATSNode.Pid()
		s.describe = append(s.describe, fmt.Sprintf("NATS:  %s (child process, pid %d, file storage, %s)", natsVersion(bin), s.natsPid, sync))
	} else {
		s.describe = append(s.describe,
			"NATS:  IN-PROCESS server (file storage, sync always): building the nats-server binary failed, so the broker shares this process and its CPU is not measured",
			"       build error: "+firstLine(buildErr.Error()))
	}
	s.natsURL = s.d.NATSURL()
	s.redisURL, s.redisPid = s.d.Redis.URL, s.d.Redis.Pid()
	s.describe = append(s.describe, fmt.Sprintf("Redis: %s (child process, pid %d, %s)", redisVersion(), s.redisPid, persist))
	if durable {
		s.describe = append(s.describe, "       (fsync work done by kernel threads for these servers counts under others cpu%)")
	}
	s.nc, s.js, s.rdb = s.d.NC, s.d.JS, s.d.RDB
	return s, nil
}

func (s *servers) close() {
	s.d.Close()
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
	s.restoreProcs()
}

// setGoMaxProcs sets GOMAXPROCS to n in this process and in its
// environment, which the children started from now on inherit, and
// returns what puts both back.
func setGoMaxProcs(n int) (restore func()) {
	prevProcs := runtime.GOMAXPROCS(n)
	prevEnv, had := os.LookupEnv("GOMAXPROCS")
	_ = os.Setenv("GOMAXPROCS", strconv.Itoa(n))
	return func() {
		runtime.GOMAXPROCS(prevProcs)
		if had {
			_ = os.Setenv("GOMAXPROCS", prevEnv)
		} else {
			_ = os.Unsetenv("GOMAXPROCS")
		}
	}
}

// reset removes what a scenario left behind: its streams (and with them
// their consumers) and every Redis key. The Redis server is the run's own.
func (s *servers) reset(ctx context.Context, ns *namespace) {
	for _, name := range ns.streams() {
		_ = s.js.DeleteStream(ctx, name)
	}
	_ = s.rdb.FlushAll(ctx).Err()
}

func natsVersion(bin string) string {
	out, err := exec.CommandContext(context.Background(), bin, "--version").Output()
	if err != nil {
		return "nats-server (version unknown)"
	}
	return strings.TrimSpace(string(out)) // "nats-server: v2.15.2"
}

func redisVersion() string {
	out, err := exec.CommandContext(context.Background(), "redis-server", "--version").Output()
	if err != nil {
		return "redis-server"
	}
	// "Redis server v=7.0.15 sha=..."
	for w := range strings.FieldsSeq(string(out)) {
		if v, ok := strings.CutPrefix(w, "v="); ok {
			return "redis-server " + v
		}
	}
	return "redis-server"
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
