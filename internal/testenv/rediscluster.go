package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of redis-server child processes on
// loopback. Nodes are numbered from 0; each keeps its port, cluster bus
// port, directory and node id (nodes.conf) across Kill and Start.
//
// Its methods may be called from several goroutines, but a node must not be
// started and killed concurrently by two of them.
type RedisCluster struct {
	bin, cli string
	root     string
	opts     redisOptions
	masters  int
	nodes    []*redisNode
	ports    func(n int) ([]int, error) // freePorts; tests make it lose a race

	shutdownOnce sync.Once
}

const (
	redisStartAttempts = 5
	redisReadyTimeout  = 60 * time.Second
	redisClusterSlots  = 16384
)

// StartRedisCluster starts a Redis Cluster with the given number of
// masters (at least 3, which redis-cli requires) and, with WithReplicas,
// that many replicas per master: redis-server children with cluster-enabled yes, each with its own
// directory and configuration file and an explicit cluster-port (a free
// port, not port+10000, which may not exist), joined with redis-cli
// --cluster create. Nodes persist nothing unless WithAOF is given.
//
// It returns once every node reports cluster_state:ok with all 16384 slots
// served, every node knows all the others and they agree on which master
// serves which slots, and every replica's link to its master is up. If a
// node exits during start-up (another process took one of its ports), it
// starts the whole cluster again on fresh ports, up to five times. On error
// nothing is left running. Call Shutdown when done.
func StartRedisCluster(masters int, opts ...RedisOption) (*RedisCluster, error) {
	return startRedisCluster(masters, freePorts, opts...)
}

func startRedisCluster(masters int, ports func(int) ([]int, error), opts ...RedisOption) (*RedisCluster, error) {
	o := redisOptions{nodeTimeout: 3 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if masters < 3 || o.replicas < 0 {
		return nil, fmt.Errorf("testenv: a Redis Cluster needs at least 3 masters and no negative replica count, not %d and %d", masters, o.replicas)
	}
	bin, cli, err := redisBinaries(true)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "idempay-rediscluster-*")
	if err != nil {
		return nil, err
	}
	c := &RedisCluster{bin: bin, cli: cli, root: root, opts: o, masters: masters, ports: ports}
	if err := startAttempts("Redis Cluster", redisStartAttempts, root, c.start, c.closeNodes); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *RedisCluster) start() error {
	total := c.masters * (1 + c.opts.replicas)
	ports, err := c.ports(2 * total)
	if err != nil {
		return err
	}
	c.nodes = make([]*redisNode, 0, total)
	for i := range total {
		dir := filepath.Join(c.root, "node"+strconv.Itoa(i))
		extra := append(dataNodeConf(c.opts),
			"cluster-enabled yes",
			"cluster-config-file nodes.conf",
			"cluster-port "+strconv.Itoa(ports[2*i+1]),
			"cluster-node-timeout "+strconv.FormatInt(c.opts.nodeTimeout.Milliseconds(), 10),
		)
		node, err := newRedisNode(c.bin, dir, ports[2*i], false, extra...)
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisReadyTimeout)
	defer cancel()
	if err := startRedisNodes(ctx, c.nodes); err != nil {
		return err
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(c.opts.replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, c.cli, args...).CombinedOutput() //nolint:gosec // G204: redis-cli from PATH with our own nodes
	if err != nil {
		if err := c.checkExits(); err != nil {
			return err
		}
		return fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	return c.WaitOK(ctx)
}

func (c *RedisCluster) checkExits() error { return redisNodesExited(c.nodes) }

// WaitOK waits until the running nodes form a healthy cluster: each
// reports cluster_state:ok with all 16384 slots ok and knows every node;
// they agree on which master serves which slots, and every such master is
// a running node (so after Kill of a master with a replica, WaitOK returns
// once the replica has taken over, not before the failure is noticed);
// every running replica's link to its master is up. It fails at once if a
// node exits that was not killed through Kill. With a master killed that
// has no replica, the cluster cannot become healthy and WaitOK times out.
func (c *RedisCluster) WaitOK(ctx context.Context) error {
	return Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		if err := c.checkExits(); err != nil {
			return &stopPollingError{err}
		}
		running := map[string]bool{}
		for _, node := range c.nodes {
			if node.proc.wantedUp() {
				running[node.addr()] = true
			}
		}
		var agreed string
		for _, node := range c.nodes {
			if !running[node.addr()] {
				continue
			}
			if err := c.nodeHealthy(ctx, node); err != nil {
				return err
			}
			raw, err := node.rdb.ClusterNodes(ctx).Result()
			if err != nil {
				return err
			}
			view, serving := slotOwners(raw)
			for _, addr := range serving {
				if !running[addr] {
					return fmt.Errorf("%s still sees the stopped node %s serving slots", node.proc.name, addr)
				}
			}
			if agreed == "" {
				agreed = view
			} else if view != agreed {
				return fmt.Errorf("the nodes do not agree on the slots yet (%s sees %s, another %s)", node.proc.name, view, agreed)
			}
		}
		return nil
	})
}

// nodeHealthy checks one node's own view: cluster state, slots, known
// nodes, and its replication link if it is a replica.
func (c *RedisCluster) nodeHealthy(ctx context.Context, node *redisNode) error {
	info, err := node.rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	for field, want := range map[string]string{
		"cluster_state":       "ok",
		"cluster_slots_ok":    strconv.Itoa(redisClusterSlots),
		"cluster_known_nodes": strconv.Itoa(len(c.nodes)),
	} {
		if got := infoField(info, field); got != want {
			return fmt.Errorf("%s: %s is %q, not %q", node.proc.name, field, got, want)
		}
	}
	repl, err := node.rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if infoField(repl, "role") == "slave" && infoField(repl, "master_link_status") != "up" {
		return fmt.Errorf("%s: replica link to its master is %s", node.proc.name, infoField(repl, "master_link_status"))
	}
	return nil
}

// slotOwners reduces a CLUSTER NODES reply to the masters that serve slots,
// as a canonical string to compare between nodes ("id@addr slots; ...") and
// the list of their addresses.
func slotOwners(raw string) (view string, addrs []string) {
	var owners []string
	for line := range strings.SplitSeq(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(line)
		// <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...
		if len(f) < 9 || !slices.Contains(strings.Split(f[2], ","), "master") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		owners = append(owners, f[0]+"@"+addr+" "+strings.Join(f[8:], " "))
		addrs = append(addrs, addr)
	}
	slices.Sort(owners)
	return strings.Join(owners, "; "), addrs
}

// Addrs returns every node's host:port, for redis.ClusterOptions.Addrs (a
// cluster client learns the rest from whichever answers).
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, node := range c.nodes {
		addrs[i] = node.addr()
	}
	return addrs
}

// Addr returns node i's host:port.
func (c *RedisCluster) Addr(i int) string { return c.nodes[i].addr() }

// URL returns the cluster as one URL in the form go-redis's
// redis.ParseClusterURL reads: the first node as the host, the others as
// addr query parameters (redis://127.0.0.1:7000?addr=127.0.0.1:7001&...).
// go-redis's NewUniversalClient does not take URLs; a component configured
// by one URL can thus still reach a cluster.
func (c *RedisCluster) URL() string {
	addrs := c.Addrs()
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

// Nodes returns the number of nodes (masters and replicas).
func (c *RedisCluster) Nodes() int { return len(c.nodes) }

// Pid returns node i's process id, or 0 while it is not running.
func (c *RedisCluster) Pid(i int) int { return c.nodes[i].proc.pid() }

// Kill sends node i SIGKILL, as a crash would, and returns once the process
// is gone. Its directory (nodes.conf, and the AOF with WithAOF) stays for
// Start.
func (c *RedisCluster) Kill(i int) { c.nodes[i].proc.kill() }

// Start starts a killed node again on the same ports, with the same
// directory and node id. It returns once the node answers and has loaded
// its data and, when no other node is down, once WaitOK succeeds (a master
// that a replica replaced rejoins as that replica's replica). When several
// nodes are down, start them all and call WaitOK.
func (c *RedisCluster) Start(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), redisReadyTimeout)
	defer cancel()
	if err := c.nodes[i].startAgain(ctx); err != nil {
		return fmt.Errorf("testenv: restart %s: %w", c.nodes[i].proc.name, err)
	}
	for _, node := range c.nodes {
		if !node.proc.wantedUp() {
			return nil
		}
	}
	return c.WaitOK(ctx)
}

// MasterFor returns the node that serves key's slot, as the first running
// node sees it (CLUSTER KEYSLOT and CLUSTER SHARDS).
func (c *RedisCluster) MasterFor(ctx context.Context, key string) (int, error) {
	for _, node := range c.nodes {
		if !node.proc.running() {
			continue
		}
		slot, err := node.rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return -1, err
		}
		shards, err := node.rdb.ClusterShards(ctx).Result()
		if err != nil {
			return -1, err
		}
		for _, shard := range shards {
			if !slices.ContainsFunc(shard.Slots, func(r redis.SlotRange) bool { return r.Start <= slot && slot <= r.End }) {
				continue
			}
			for _, n := range shard.Nodes {
				if n.Role != "master" {
					continue
				}
				addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
				for i, mine := range c.nodes {
					if mine.addr() == addr {
						return i, nil
					}
				}
				return -1, fmt.Errorf("testenv: slot %d is served by %s, not a node of this cluster", slot, addr)
			}
		}
		return -1, fmt.Errorf("testenv: no master serves slot %d", slot)
	}
	return -1, errors.New("testenv: no Redis Cluster node is running")
}

func (c *RedisCluster) closeNodes() {
	for _, node := range c.nodes {
		node.close()
	}
}

// Shutdown kills every node and removes their directories. It is safe to
// call more than once, and on a nil cluster.
func (c *RedisCluster) Shutdown() {
	if c == nil {
		return
	}
	c.shutdownOnce.Do(func() {
		c.closeNodes()
		_ = os.RemoveAll(c.root)
	})
}
