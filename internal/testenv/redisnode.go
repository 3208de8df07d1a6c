package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOption tunes StartRedisCluster and StartSentinel.
type RedisOption func(*redisOptions)

type redisOptions struct {
	aof         bool
	replicas    int
	nodeTimeout time.Duration
}

// WithAOF makes every data node persist with an append-only file fsynced on
// every write (appendonly yes, appendfsync always), the setting the README
// requires in production: a node killed and started again comes back with
// every write it acknowledged. Without it nodes keep nothing on disk.
func WithAOF() RedisOption { return func(o *redisOptions) { o.aof = true } }

// WithReplicas sets how many replicas each master gets: for
// StartRedisCluster 0 by default, for StartSentinel 1 by default (and at
// least 1, or there is nothing to fail over to).
func WithReplicas(n int) RedisOption { return func(o *redisOptions) { o.replicas = n } }

// WithNodeTimeout sets how long a node may be unreachable before it counts
// as failed: cluster-node-timeout for StartRedisCluster (default 3s),
// sentinel down-after-milliseconds for StartSentinel (default 1s). Longer
// is steadier on a loaded machine, shorter fails over sooner.
func WithNodeTimeout(d time.Duration) RedisOption {
	return func(o *redisOptions) { o.nodeTimeout = d }
}

// ErrNoRedisCLI is returned by StartRedisCluster when no redis-cli binary is
// on PATH.
var ErrNoRedisCLI = errors.New("testenv: redis-cli not found on PATH; install it (Debian/Ubuntu: apt-get install -y redis-tools, which redis-server depends on; macOS: brew install redis)")

// redisNode is one redis-server (a data node or a sentinel) with its own
// directory and configuration file. The file, not the command line, holds
// its settings, because Redis rewrites it (a cluster node keeps its
// identity in nodes.conf next to it, and Sentinel records every role change
// with CONFIG REWRITE), so a node started again comes back in the role it
// last had, as in a real deployment.
type redisNode struct {
	port     int
	dir      string
	conf     string
	sentinel bool
	proc     *child
	rdb      *redis.Client // for this package's own checks
}

// newRedisNode empties dir (a failed start-up attempt may have left a node
// there), writes dir/redis.conf (or sentinel.conf) with the settings every
// node needs - port, loopback bind, directory - followed by extra, and
// prepares, but does not start, its process.
func newRedisNode(bin, dir string, port int, sentinel bool, extra ...string) (*redisNode, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	name, kind := "redis.conf", "redis-server"
	if sentinel {
		name, kind = "sentinel.conf", "redis-sentinel"
	}
	conf := filepath.Join(dir, name)
	lines := append([]string{
		"# written by internal/testenv for one test run",
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"dir " + strconv.Quote(dir),
		"daemonize no",
	}, extra...)
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := []string{conf}
	if sentinel {
		args = append(args, "--sentinel")
	}
	n := &redisNode{port: port, dir: dir, conf: conf, sentinel: sentinel}
	n.proc = &child{name: fmt.Sprintf("%s 127.0.0.1:%d", kind, port), bin: bin, args: args, log: filepath.Join(dir, "redis.log")}
	n.rdb = redis.NewClient(&redis.Options{
		Addr: n.addr(), DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1, PoolSize: 2,
	})
	return n, nil
}

// dataNodeConf is the configuration every data node gets.
func dataNodeConf(o redisOptions) []string {
	lines := []string{
		"save \"\"",
		"maxmemory-policy noeviction",
		// A replica's first full sync starts at once, not after the default
		// 5s wait for more replicas to share one transfer.
		"repl-diskless-sync-delay 0",
	}
	if o.aof {
		lines = append(lines, "appendonly yes", "appendfsync always")
	} else {
		lines = append(lines, "appendonly no")
	}
	return lines
}

func (n *redisNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// startRedisNodes starts every node, then waits until each is up (waitUp).
func startRedisNodes(ctx context.Context, nodes []*redisNode) error {
	for _, node := range nodes {
		if err := node.proc.start(); err != nil { //nolint:contextcheck // the servers outlive ctx, which bounds only the wait
			return err
		}
	}
	for _, node := range nodes {
		if err := node.waitUp(ctx); err != nil {
			return err
		}
	}
	return nil
}

// redisNodesExited returns a *nodeExitedError for the first of the nodes
// that exited without being killed through this package, or nil.
func redisNodesExited(groups ...[]*redisNode) error {
	for _, node := range slices.Concat(groups...) {
		if node.proc.crashed() {
			return &nodeExitedError{node.proc.errExited()}
		}
	}
	return nil
}

// waitUp waits until the node answers PING and, for a data node, has loaded
// its data set (a node replaying a long AOF answers PING before it serves
// reads). It fails at once if the process exits.
func (n *redisNode) waitUp(ctx context.Context) error {
	return Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		if n.proc.crashed() {
			return &stopPollingError{&nodeExitedError{n.proc.errExited()}}
		}
		if err := n.rdb.Ping(ctx).Err(); err != nil {
			return err
		}
		if n.sentinel {
			return nil
		}
		info, err := n.rdb.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if infoField(info, "loading") != "0" {
			return errors.New(n.proc.name + " is loading its data")
		}
		return nil
	})
}

// startAgain starts the node's process (again) and waits until it is up.
// A node that exits at once, typically because its port is not free yet, is
// started again for up to 10s.
func (n *redisNode) startAgain(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := n.proc.start(); err != nil { //nolint:contextcheck // the server outlives ctx, which bounds only the wait
			return err
		}
		err := n.waitUp(ctx)
		if _, exited := errors.AsType[*nodeExitedError](err); exited && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		return err
	}
}

// close kills the process and closes the client.
func (n *redisNode) close() {
	if n == nil {
		return
	}
	n.proc.kill()
	_ = n.rdb.Close()
}

// infoField returns a field of an INFO reply ("" when absent).
func infoField(info, field string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

func redisBinaries(cli bool) (server, client string, err error) {
	server, err = exec.LookPath("redis-server")
	if err != nil {
		return "", "", ErrNoRedisServer
	}
	if cli {
		client, err = exec.LookPath("redis-cli")
		if err != nil {
			return "", "", ErrNoRedisCLI
		}
	}
	return server, client, nil
}
