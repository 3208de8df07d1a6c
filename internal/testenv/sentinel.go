package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a Redis deployment watched by Redis Sentinel, on loopback:
// data nodes (0 starts as the master, 1.. as its replicas) and three
// sentinels, each a redis-server child with its own directory and
// configuration file. A data node keeps its port, directory and last role
// (Sentinel rewrites its configuration when it changes it) across Kill and
// Start.
//
// Replication is asynchronous: a failover can lose writes the old master
// acknowledged, which is exactly what the README lists as not covered.
//
// Its methods may be called from several goroutines, but a node must not be
// started and killed concurrently by two of them.
type Sentinel struct {
	root      string
	opts      redisOptions
	data      []*redisNode
	sentinels []*redisNode
	ports     func(n int) ([]int, error) // freePorts; tests make it lose a race

	shutdownOnce sync.Once
}

const (
	sentinelMaster = "idempay"
	sentinelCount  = 3
	sentinelQuorum = 2
)

// StartSentinel starts one master, its replicas (one by default; see
// WithReplicas) and three sentinels monitoring the master under MasterName
// with a quorum of 2. A master is considered down after 1s without an
// answer (WithNodeTimeout changes it) and a failover may take 3s before
// another is tried, so a failover completes within a few seconds. Data nodes
// persist nothing unless WithAOF is given.
//
// It returns once every replica's link to the master is up, and every
// sentinel names the master, sees all replicas and knows the other two
// sentinels: without that, a failover could not be authorised. If a node
// exits during start-up (another process took its port), it starts
// everything again on fresh ports, up to five times. On error nothing is
// left running. Call Shutdown when done.
func StartSentinel(opts ...RedisOption) (*Sentinel, error) { return startSentinel(freePorts, opts...) }

func startSentinel(ports func(int) ([]int, error), opts ...RedisOption) (*Sentinel, error) {
	o := redisOptions{replicas: 1, nodeTimeout: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.replicas < 1 {
		return nil, fmt.Errorf("testenv: Sentinel needs at least one replica to fail over to, not %d", o.replicas)
	}
	bin, _, err := redisBinaries(false)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "idempay-sentinel-*")
	if err != nil {
		return nil, err
	}
	s := &Sentinel{root: root, opts: o, ports: ports}
	if err := startAttempts("Redis Sentinel", redisStartAttempts, root, func() error { return s.start(bin) }, s.closeNodes); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sentinel) start(bin string) error {
	ports, err := s.ports(1 + s.opts.replicas + sentinelCount)
	if err != nil {
		return err
	}
	s.data, s.sentinels = nil, nil
	masterPort := ports[0]
	for i := range 1 + s.opts.replicas {
		extra := dataNodeConf(s.opts)
		if i > 0 {
			extra = append(extra, fmt.Sprintf("replicaof 127.0.0.1 %d", masterPort))
		}
		node, err := newRedisNode(bin, filepath.Join(s.root, "data"+strconv.Itoa(i)), ports[i], false, extra...)
		if err != nil {
			return err
		}
		s.data = append(s.data, node)
	}
	for i := range sentinelCount {
		node, err := newRedisNode(bin, filepath.Join(s.root, "sentinel"+strconv.Itoa(i)), ports[1+s.opts.replicas+i], true,
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", sentinelMaster, masterPort, sentinelQuorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", sentinelMaster, s.opts.nodeTimeout.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", sentinelMaster, 3000),
			fmt.Sprintf("sentinel parallel-syncs %s %d", sentinelMaster, s.opts.replicas),
		)
		if err != nil {
			return err
		}
		s.sentinels = append(s.sentinels, node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisReadyTimeout)
	defer cancel()
	// The data nodes first, replicas synced, so that each sentinel's first
	// look at the master already lists every replica.
	if err := startRedisNodes(ctx, s.data); err != nil {
		return err
	}
	for _, node := range s.data[1:] {
		if err := s.waitReplicaOf(ctx, node, s.data[0].addr()); err != nil {
			return err
		}
	}
	if err := startRedisNodes(ctx, s.sentinels); err != nil {
		return err
	}
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		if err := s.checkExits(); err != nil {
			return &stopPollingError{err}
		}
		for _, node := range s.sentinels {
			if err := s.sentinelReady(ctx, node); err != nil {
				return err
			}
		}
		return nil
	})
}

// sentinelReady checks that a sentinel monitors the first master, sees all
// its replicas and knows the other sentinels.
func (s *Sentinel) sentinelReady(ctx context.Context, node *redisNode) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: node.addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer sc.Close()
	m, err := sc.Master(ctx, sentinelMaster).Result()
	if err != nil {
		return err
	}
	for field, want := range map[string]string{
		"ip":                  "127.0.0.1",
		"port":                strconv.Itoa(s.data[0].port),
		"flags":               "master",
		"num-slaves":          strconv.Itoa(s.opts.replicas),
		"num-other-sentinels": strconv.Itoa(sentinelCount - 1),
	} {
		if m[field] != want {
			return fmt.Errorf("%s: %s is %q, not %q", node.proc.name, field, m[field], want)
		}
	}
	return nil
}

// waitReplicaOf waits until node reports itself a replica of master with its
// link up (its initial sync done).
func (s *Sentinel) waitReplicaOf(ctx context.Context, node *redisNode, master string) error {
	return Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		return replicaOf(ctx, node, master)
	})
}

// replicaOf checks once that node is a replica of master with its link up.
func replicaOf(ctx context.Context, node *redisNode, master string) error {
	if node.proc.crashed() {
		return &stopPollingError{&nodeExitedError{node.proc.errExited()}}
	}
	info, err := node.rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	got := infoField(info, "master_host") + ":" + infoField(info, "master_port")
	if infoField(info, "role") != "slave" || got != master || infoField(info, "master_link_status") != "up" {
		return fmt.Errorf("%s is not yet a synced replica of %s (role %s, master %s, link %s)",
			node.proc.name, master, infoField(info, "role"), got, infoField(info, "master_link_status"))
	}
	return nil
}

func (s *Sentinel) checkExits() error { return redisNodesExited(s.data, s.sentinels) }

// MasterName returns the name the sentinels monitor the master under, for
// redis.FailoverOptions.MasterName.
func (s *Sentinel) MasterName() string { return sentinelMaster }

// SentinelAddrs returns the sentinels' host:port addresses, for
// redis.FailoverOptions.SentinelAddrs (or UniversalOptions.Addrs with
// MasterName).
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, node := range s.sentinels {
		addrs[i] = node.addr()
	}
	return addrs
}

// URL returns the deployment as one URL in the form go-redis's
// redis.ParseFailoverURL reads: the first sentinel as the host, the others
// as addr parameters, and master_name.
func (s *Sentinel) URL() string {
	addrs := s.SentinelAddrs()
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=") + "&master_name=" + sentinelMaster
}

// Addr returns data node i's host:port (node 0 was the first master).
func (s *Sentinel) Addr(i int) string { return s.data[i].addr() }

// Nodes returns the number of data nodes (the master and its replicas).
func (s *Sentinel) Nodes() int { return len(s.data) }

// Pid returns data node i's process id, or 0 while it is not running.
func (s *Sentinel) Pid(i int) int { return s.data[i].proc.pid() }

// MasterAddr asks the sentinels, in turn until one answers, which host:port
// is the master now. During a failover sentinels may disagree for a moment;
// WaitFailover waits for them to agree.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, node := range s.sentinels {
		addr, err := s.askMaster(ctx, node)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("testenv: no sentinel named the master: %w", errors.Join(errs...))
}

func (s *Sentinel) askMaster(ctx context.Context, node *redisNode) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: node.addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer sc.Close()
	hp, err := sc.GetMasterAddrByName(ctx, sentinelMaster).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("testenv: %s answered %q for the master", node.proc.name, hp)
	}
	return hp[0] + ":" + hp[1], nil
}

// index returns the data node at addr.
func (s *Sentinel) index(addr string) (int, error) {
	for i, node := range s.data {
		if node.addr() == addr {
			return i, nil
		}
	}
	return -1, fmt.Errorf("testenv: %s is not a data node of this deployment", addr)
}

// KillMaster asks the sentinels which data node is the master, kills it
// with SIGKILL and returns its index, for Start later.
func (s *Sentinel) KillMaster() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		return -1, err
	}
	i, err := s.index(addr)
	if err != nil {
		return -1, err
	}
	s.Kill(i)
	return i, nil
}

// Kill sends data node i SIGKILL and returns once the process is gone.
func (s *Sentinel) Kill(i int) { s.data[i].proc.kill() }

// Start starts a killed data node again on the same port and directory, with
// its configuration as Sentinel last rewrote it, and returns once it answers
// and has loaded its data. A master that was failed over comes back as a
// master with its old data until the sentinels notice it and turn it into a
// replica of the new master; WaitReplica waits for that.
func (s *Sentinel) Start(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), redisReadyTimeout)
	defer cancel()
	if err := s.data[i].startAgain(ctx); err != nil {
		return fmt.Errorf("testenv: restart %s: %w", s.data[i].proc.name, err)
	}
	return nil
}

// WaitReplica waits until data node i is a replica of the master the
// sentinels name, with its link up (its sync done).
func (s *Sentinel) WaitReplica(ctx context.Context, i int) error {
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		master, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if master == s.data[i].addr() {
			return fmt.Errorf("data node %d is the master", i)
		}
		return replicaOf(ctx, s.data[i], master)
	})
}

// WaitFailover waits until every running sentinel names the same master,
// other than oldAddr, and that node answers as a master (ROLE), and returns
// its address: from then on a go-redis failover client, asking any
// sentinel, reaches the new master.
func (s *Sentinel) WaitFailover(ctx context.Context, oldAddr string) (string, error) {
	var newAddr string
	err := Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		addr := ""
		for _, node := range s.sentinels {
			if !node.proc.running() {
				continue
			}
			got, err := s.askMaster(ctx, node)
			if err != nil {
				return err
			}
			switch {
			case got == oldAddr:
				return fmt.Errorf("%s still names %s", node.proc.name, oldAddr)
			case addr != "" && got != addr:
				return fmt.Errorf("sentinels disagree: %s and %s", addr, got)
			}
			addr = got
		}
		i, err := s.index(addr)
		if err != nil {
			return err
		}
		role, err := s.data[i].rdb.Do(ctx, "ROLE").Slice()
		if err != nil {
			return err
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s is named master but answers ROLE %v", addr, role)
		}
		newAddr = addr
		return nil
	})
	return newAddr, err
}

func (s *Sentinel) closeNodes() {
	for _, node := range s.sentinels {
		node.close()
	}
	for _, node := range s.data {
		node.close()
	}
}

// Shutdown kills every data node and sentinel and removes their
// directories. It is safe to call more than once, and on a nil Sentinel.
func (s *Sentinel) Shutdown() {
	if s == nil {
		return
	}
	s.shutdownOnce.Do(func() {
		s.closeNodes()
		_ = os.RemoveAll(s.root)
	})
}
