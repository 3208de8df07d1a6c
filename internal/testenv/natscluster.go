package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of nats-server child processes on
// loopback, each with its own client port, route port, store directory and
// server_name. Nodes are numbered from 0; a node keeps its ports and store
// across Kill and Start, as a server restarted by its supervisor would.
//
// Its methods may be called from several goroutines, but a node must not be
// started and killed concurrently by two of them.
type NATSCluster struct {
	bin        string
	root       string
	name       string // cluster name, unique per cluster
	syncAlways bool
	nodes      []*natsNode
	ports      func(n int) ([]int, error) // freePorts; tests make it lose a race

	shutdownOnce sync.Once
}

type natsNode struct {
	server string // server_name
	port   int    // clients
	route  int    // cluster routes
	proc   *child
}

const (
	natsStartAttempts = 5
	natsReadyTimeout  = 60 * time.Second // a first meta leader election can take 10s on a loaded machine
	natsStopGrace     = 30 * time.Second
	natsReadyStream   = "TESTENV_READY"
)

// StartNATSCluster starts an n-node JetStream cluster (n >= 2; 3 is the
// usual size) of the nats-server NATSServerBinary returns (NATS_SERVER_BIN
// when set, else the version go.mod pins), with file storage and, when the
// binary supports it (2.15 does, Debian's 2.9 does not), sync_interval:
// always, so that an acknowledged publish is on disk on the nodes that
// acknowledged it.
//
// It returns once the cluster can serve JetStream: every node answers an
// account-info request (so the meta group has a leader and every node has
// joined it), and a stream with min(n, 3) replicas could be created, written
// to and deleted. If a node exits during start-up (another process took one
// of the free ports first), it starts the whole cluster again on fresh ports,
// up to five times. On error nothing is left running. Call Shutdown when done.
func StartNATSCluster(n int) (*NATSCluster, error) { return startNATSCluster(n, freePorts) }

func startNATSCluster(n int, ports func(int) ([]int, error)) (*NATSCluster, error) {
	if n < 2 {
		// nats-server refuses a JetStream cluster without routes.
		return nil, fmt.Errorf("testenv: a NATS cluster needs at least two nodes, not %d (StartNATS or StartNATSBinary start one server)", n)
	}
	bin, err := NATSServerBinary()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "idempay-natscluster-*")
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{bin: bin, root: root, name: "idempay-" + Namespace(), ports: ports}
	if c.syncAlways, err = natsSupportsSyncAlways(bin, root); err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	if err := startAttempts("NATS cluster", natsStartAttempts, root, func() error { return c.start(n) }, c.killAll); err != nil {
		return nil, err
	}
	return c, nil
}

// start lays out fresh directories and configurations on fresh ports, starts
// every node and waits until the cluster is ready.
func (c *NATSCluster) start(n int) error {
	ports, err := c.ports(2 * n)
	if err != nil {
		return err
	}
	c.nodes = make([]*natsNode, n)
	for i := range n {
		c.nodes[i] = &natsNode{server: fmt.Sprintf("n%d", i), port: ports[2*i], route: ports[2*i+1]}
	}
	for i, node := range c.nodes {
		dir := filepath.Join(c.root, node.server)
		if err := os.RemoveAll(dir); err != nil { // a store from a failed attempt
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		conf := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(conf, []byte(c.config(i, dir)), 0o600); err != nil {
			return err
		}
		node.proc = &child{name: "nats-server " + node.server, bin: c.bin, args: []string{"-c", conf}, log: filepath.Join(dir, "nats.log")}
	}
	for _, node := range c.nodes {
		if err := node.proc.start(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsReadyTimeout)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	return c.probeReplicatedStream(ctx)
}

// config is node i's configuration file.
func (c *NATSCluster) config(i int, dir string) string {
	node := c.nodes[i]
	var routes []string
	for j, other := range c.nodes {
		if j != i {
			routes = append(routes, strconv.Quote(fmt.Sprintf("nats-route://127.0.0.1:%d", other.route)))
		}
	}
	sync := ""
	if c.syncAlways {
		// fsync before every acknowledgement, as the README requires in
		// production (the default syncs every two minutes).
		sync = "\n  sync_interval: always"
	}
	return fmt.Sprintf(`# written by internal/testenv for one test run
server_name: %q
listen: "127.0.0.1:%d"
jetstream {
  store_dir: %q%s
}
cluster {
  name: %q
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, node.server, node.port, dir, sync, c.name, node.route, strings.Join(routes, ", "))
}

var (
	syncAlwaysMu      sync.Mutex
	syncAlwaysSupport = map[string]bool{} // binary path -> accepts sync_interval: always
)

// natsSupportsSyncAlways asks bin whether it accepts sync_interval: always,
// by testing (-t) a configuration that sets it: feature detection, not a
// guess from the version number.
func natsSupportsSyncAlways(bin, dir string) (bool, error) {
	syncAlwaysMu.Lock()
	defer syncAlwaysMu.Unlock()
	if ok, found := syncAlwaysSupport[bin]; found {
		return ok, nil
	}
	conf := filepath.Join(dir, "sync-probe.conf")
	if err := os.WriteFile(conf, []byte("jetstream {\n  sync_interval: always\n}\n"), 0o600); err != nil {
		return false, err
	}
	defer os.Remove(conf)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-t", "-c", conf).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		syncAlwaysSupport[bin] = true
		return true, nil
	case errors.As(err, &exit) && strings.Contains(string(out), "sync_interval"):
		syncAlwaysSupport[bin] = false
		return false, nil
	default:
		return false, fmt.Errorf("testenv: %s -t: %w\n%s", bin, err, out)
	}
}

// nodeExitedError is a node that exited while the cluster waited for it.
type nodeExitedError struct{ err error }

func (e *nodeExitedError) Error() string { return e.err.Error() }
func (e *nodeExitedError) Unwrap() error { return e.err }

// startAttempts calls start until it succeeds, calling stop after each
// failure to leave nothing running. A failure because a node exited during
// start-up (another process took one of its free ports first) is tried
// again on fresh ports, up to attempts in all; any other failure, or the
// last, removes root and is returned, naming what did not start.
func startAttempts(what string, attempts int, root string, start func() error, stop func()) error {
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil {
			return nil
		}
		stop()
		if _, exited := errors.AsType[*nodeExitedError](err); !exited || attempt == attempts {
			_ = os.RemoveAll(root)
			return fmt.Errorf("testenv: %s did not start (attempt %d): %w", what, attempt, err)
		}
	}
}

// WaitReady waits until every running node answers a JetStream account-info
// request through its own client port, which needs a meta leader and the
// node to have joined the meta group. It fails at once if a running node
// exits.
func (c *NATSCluster) WaitReady(ctx context.Context) error {
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		if err := c.checkExits(); err != nil {
			return &stopPollingError{err}
		}
		for i, node := range c.nodes {
			if !node.proc.wantedUp() {
				continue // killed or stopped on purpose
			}
			if err := jetStreamAnswers(ctx, c.NodeURL(i)); err != nil {
				return fmt.Errorf("node %d (%s): %w", i, node.proc.name, err)
			}
		}
		return nil
	})
}

// probeReplicatedStream creates a min(n,3)-replica stream, publishes to it
// (which needs a quorum of its replicas), waits for every replica to be
// current and deletes it: placement and replication work, not only the meta
// group.
func (c *NATSCluster) probeReplicatedStream(ctx context.Context) error {
	replicas := min(len(c.nodes), 3)
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		if err := c.checkExits(); err != nil {
			return &stopPollingError{err}
		}
		nc, js, err := c.connect()
		if err != nil {
			return err
		}
		defer nc.Close()
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: natsReadyStream, Subjects: []string{"_testenv.ready"}, Replicas: replicas, Storage: jetstream.FileStorage,
		}); err != nil {
			return fmt.Errorf("create an R%d stream: %w", replicas, err)
		}
		if _, err := js.Publish(ctx, "_testenv.ready", nil); err != nil {
			return fmt.Errorf("publish to the R%d stream: %w", replicas, err)
		}
		if err := c.streamCurrent(ctx, js, natsReadyStream); err != nil {
			return err
		}
		return js.DeleteStream(ctx, natsReadyStream)
	})
}

func (c *NATSCluster) checkExits() error {
	for _, node := range c.nodes {
		if node.proc.crashed() {
			return &nodeExitedError{node.proc.errExited()}
		}
	}
	return nil
}

// connect connects to the running nodes (any of them) for one request.
func (c *NATSCluster) connect() (*nats.Conn, jetstream.JetStream, error) {
	var urls []string
	for i, node := range c.nodes {
		if node.proc.running() {
			urls = append(urls, c.NodeURL(i))
		}
	}
	if len(urls) == 0 {
		return nil, nil, errors.New("testenv: no NATS node is running")
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// URLs returns every node's client URL, comma-separated, for nats.Connect:
// a client given all of them reconnects to a surviving node when its own dies.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL returns node i's client URL.
func (c *NATSCluster) NodeURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].port)
}

// Nodes returns the number of nodes.
func (c *NATSCluster) Nodes() int { return len(c.nodes) }

// ServerName returns node i's server_name, the name JetStream reports for
// stream leaders and replicas.
func (c *NATSCluster) ServerName(i int) string { return c.nodes[i].server }

// SyncAlways reports whether the nodes run with sync_interval: always (false
// when the binary does not know the setting, as Debian's 2.9).
func (c *NATSCluster) SyncAlways() bool { return c.syncAlways }

// Pid returns node i's process id, or 0 while it is not running.
func (c *NATSCluster) Pid(i int) int { return c.nodes[i].proc.pid() }

// Kill sends node i SIGKILL, as a crash would, and returns once the process
// is gone. Its store stays for Start.
func (c *NATSCluster) Kill(i int) { c.nodes[i].proc.kill() }

// Stop stops node i gracefully with SIGTERM and waits for it to exit (after
// 30s it is killed and Stop returns an error). SIGTERM is what systemd and
// Kubernetes send, and nats-server then shuts down at once, first stepping
// down from the Raft groups it leads: its streams had a new leader within
// 0.5s in our runs, on 2.15 and 2.9 alike, where after Kill they wait out an
// election timeout (4-9s). Lame-duck mode (SIGUSR2) was not chosen: it
// waits out lame_duck_grace_period (10s by default) and spreads client
// disconnects over lame_duck_duration (2m), too slow for a test, and ends
// in the same shutdown.
func (c *NATSCluster) Stop(i int) error {
	node := c.nodes[i]
	if !node.proc.stop(syscall.SIGTERM, natsStopGrace) {
		return fmt.Errorf("testenv: %s did not exit within %s of SIGTERM; killed", node.proc.name, natsStopGrace)
	}
	return nil
}

// Start starts a killed or stopped node again, with the same ports,
// configuration and store. It returns once the node accepts clients and, if
// with it a majority of the nodes run, once JetStream answers through it
// (it has rejoined the meta group); when restarting a cluster that lost its
// quorum, start enough nodes and then call WaitReady. A node that exits at
// once (its port not yet free) is started again, for up to 10s.
func (c *NATSCluster) Start(i int) error {
	node := c.nodes[i]
	ctx, cancel := context.WithTimeout(context.Background(), natsReadyTimeout)
	defer cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := node.proc.start(); err != nil {
			return err
		}
		err := Poll(ctx, 50*time.Millisecond, func(context.Context) error {
			if !node.proc.running() {
				return &stopPollingError{&nodeExitedError{node.proc.errExited()}}
			}
			nc, err := nats.Connect(c.NodeURL(i), nats.Timeout(time.Second), nats.NoReconnect())
			if err != nil {
				return err
			}
			nc.Close()
			return nil
		})
		if _, exited := errors.AsType[*nodeExitedError](err); exited && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // let the port go
			continue
		}
		if err != nil {
			return fmt.Errorf("testenv: restart %s: %w", node.proc.name, err)
		}
		break
	}
	running := 0
	for _, n := range c.nodes {
		if n.proc.running() {
			running++
		}
	}
	if 2*running <= len(c.nodes) {
		return nil
	}
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		if !node.proc.running() {
			return &stopPollingError{node.proc.errExited()}
		}
		return jetStreamAnswers(ctx, c.NodeURL(i))
	})
}

// StreamLeader returns the node that leads stream now, as the stream's
// leader reports in its stream info. It fails while the stream has no
// leader (during an election).
func (c *NATSCluster) StreamLeader(stream string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, js, err := c.connect()
	if err != nil {
		return -1, err
	}
	defer nc.Close()
	return c.streamLeader(ctx, js, stream)
}

func (c *NATSCluster) streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, fmt.Errorf("testenv: stream %s info: %w", stream, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("testenv: stream %s has no leader", stream)
	}
	for i, node := range c.nodes {
		if node.server == info.Cluster.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("testenv: stream %s is led by %q, which is not a node of this cluster", stream, info.Cluster.Leader)
}

// WaitStreamLeader waits until stream has a leader other than node not (-1:
// any leader) that is running, and returns it: after killing a leader, the
// node that took over.
func (c *NATSCluster) WaitStreamLeader(ctx context.Context, stream string, not int) (int, error) {
	leader := -1
	err := Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		// A leaderless stream does not answer: ask again soon.
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		nc, js, err := c.connect()
		if err != nil {
			return err
		}
		defer nc.Close()
		i, err := c.streamLeader(ctx, js, stream)
		switch {
		case err != nil:
			return err
		case i == not:
			return fmt.Errorf("stream %s is still led by node %d", stream, i)
		case !c.nodes[i].proc.running():
			return fmt.Errorf("stream %s names node %d, which is down, as its leader", stream, i)
		}
		leader = i
		return nil
	})
	return leader, err
}

// WaitStreamCurrent waits until stream has a leader and every one of its
// replicas is online and current: after Start, the restarted node has
// caught up.
func (c *NATSCluster) WaitStreamCurrent(ctx context.Context, stream string) error {
	return Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		nc, js, err := c.connect()
		if err != nil {
			return err
		}
		defer nc.Close()
		return c.streamCurrent(ctx, js, stream)
	})
}

func (c *NATSCluster) streamCurrent(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return fmt.Errorf("stream %s has no leader", stream)
	}
	if want := info.Config.Replicas - 1; len(info.Cluster.Replicas) != want {
		return fmt.Errorf("stream %s reports %d followers, wants %d", stream, len(info.Cluster.Replicas), want)
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return fmt.Errorf("stream %s: replica %s is not current (offline %t, lag %d)", stream, p.Name, p.Offline, p.Lag)
		}
	}
	return nil
}

func (c *NATSCluster) killAll() {
	for _, node := range c.nodes {
		if node != nil && node.proc != nil {
			node.proc.kill()
		}
	}
}

// Shutdown kills every node and removes their stores. It is safe to call
// more than once, and on a nil cluster.
func (c *NATSCluster) Shutdown() {
	if c == nil {
		return
	}
	c.shutdownOnce.Do(func() {
		c.killAll()
		_ = os.RemoveAll(c.root)
	})
}
