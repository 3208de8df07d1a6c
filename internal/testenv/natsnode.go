package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSNode is one nats-server child process with JetStream and file
// storage, on a loopback port it keeps across Kill, Stop and Start, with its
// store in a directory of its own: a single server restarted by its
// supervisor. The chaos suite kills and restarts it under load.
//
// Its methods may be called from several goroutines, but it must not be
// started and killed concurrently by two of them.
type NATSNode struct {
	// URL is the client URL, nats://127.0.0.1:<port>.
	URL string
	// StoreDir is the JetStream store directory.
	StoreDir string

	root       string
	syncAlways bool
	proc       *child
}

// NATSNodeOptions tune StartNATSNode.
type NATSNodeOptions struct {
	// NoSyncAlways leaves sync_interval at the server's default (an fsync
	// every two minutes) instead of "always": for a negative control, never
	// for a test of what idempay guarantees.
	NoSyncAlways bool
}

// StartNATSNode starts the nats-server NATSServerBinary returns with
// JetStream, file storage and, unless opts says otherwise and when the
// binary supports it, sync_interval: always (the setting the README
// requires). It returns once JetStream answers. Call Shutdown when done.
func StartNATSNode(opts *NATSNodeOptions) (*NATSNode, error) {
	if opts == nil {
		opts = &NATSNodeOptions{}
	}
	bin, err := NATSServerBinary()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "idempay-natsnode-*")
	if err != nil {
		return nil, err
	}
	n := &NATSNode{root: root, StoreDir: filepath.Join(root, "store")}
	if !opts.NoSyncAlways {
		if n.syncAlways, err = natsSupportsSyncAlways(bin, root); err != nil {
			_ = os.RemoveAll(root)
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		err = n.start(bin)
		if err == nil {
			return n, nil
		}
		if n.proc != nil {
			n.proc.kill()
		}
		if _, exited := errors.AsType[*nodeExitedError](err); !exited || attempt == natsStartAttempts {
			_ = os.RemoveAll(root)
			return nil, fmt.Errorf("testenv: nats-server did not start (attempt %d): %w", attempt, err)
		}
	}
}

// start writes the configuration for a fresh free port and starts the
// server.
func (n *NATSNode) start(bin string) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	sync := ""
	if n.syncAlways {
		sync = "\n  sync_interval: always"
	}
	conf := filepath.Join(n.root, "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `# written by internal/testenv for one test run
listen: "127.0.0.1:%d"
jetstream {
  store_dir: %q%s
  # Size-limited streams reserve their limit against this: see testMaxStore.
  max_file_store: 1T
}
`, port, n.StoreDir, sync), 0o600); err != nil {
		return err
	}
	n.proc = &child{name: "nats-server", bin: bin, args: []string{"-c", conf}, log: filepath.Join(n.root, "nats.log")}
	return n.Start()
}

// SyncAlways reports whether the server runs with sync_interval: always.
func (n *NATSNode) SyncAlways() bool { return n.syncAlways }

// Pid returns the server's process id, or 0 while it is not running.
func (n *NATSNode) Pid() int { return n.proc.pid() }

// Running reports whether the server process runs.
func (n *NATSNode) Running() bool { return n.proc.running() }

// Kill sends the server SIGKILL, as a crash would, and returns once the
// process is gone. Its store stays for Start.
func (n *NATSNode) Kill() { n.proc.kill() }

// Stop stops the server gracefully with SIGTERM and waits for it to exit;
// after 30s it is killed and Stop returns an error.
func (n *NATSNode) Stop() error {
	if !n.proc.stop(syscall.SIGTERM, natsStopGrace) {
		return fmt.Errorf("testenv: %s did not exit within %s of SIGTERM; killed", n.proc.name, natsStopGrace)
	}
	return nil
}

// Start starts the server (again, after Kill or Stop) with the same port,
// configuration and store, and returns once JetStream answers through it.
// A server that exits at once (its port not yet free) is started again, for
// up to 10s.
func (n *NATSNode) Start() error {
	ctx, cancel := context.WithTimeout(context.Background(), natsReadyTimeout)
	defer cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := n.proc.start(); err != nil {
			return err
		}
		err := Poll(ctx, 50*time.Millisecond, func(ctx context.Context) error {
			if !n.proc.running() {
				return &stopPollingError{&nodeExitedError{n.proc.errExited()}}
			}
			return jetStreamAnswers(ctx, n.URL)
		})
		if _, exited := errors.AsType[*nodeExitedError](err); exited && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // let the port go
			continue
		}
		return err
	}
}

// jetStreamAnswers connects to the server at url on its own and asks
// JetStream for the account's information: it answers once JetStream is up
// (in a cluster, once the server has joined a meta group with a leader).
func jetStreamAnswers(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.AccountInfo(ctx)
	return err
}

// LogTail returns the last lines the server logged, for error messages.
func (n *NATSNode) LogTail() string { return n.proc.logTail() }

// Shutdown kills the server and removes its store. It is safe to call more
// than once, and on a nil node.
func (n *NATSNode) Shutdown() {
	if n == nil || n.proc == nil {
		return
	}
	n.proc.kill()
	_ = os.RemoveAll(n.root)
}
