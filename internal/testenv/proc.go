package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// child is one server process of a multi-node deployment: it can be killed,
// stopped and started again with the same binary, arguments and log file, as
// a supervisor would restart it after a crash. Its stdout and stderr go to
// log, appended across restarts, so a failure can quote what the server said
// (including configuration errors printed before any log file is opened).
type child struct {
	name string // for errors: "nats-server n1", "redis-server 127.0.0.1:7001"
	bin  string
	args []string
	env  []string // the whole environment; nil inherits this process's
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited and been reaped
	exitErr error         // what the last run's Wait returned; set before done closes
	wanted  bool          // started, and not since killed or stopped through this type
}

// start starts the process. It fails if it is already running.
func (c *child) start() error { return c.startContext(context.Background()) }

// startContext is start for a caller with a context: the process takes
// ctx's values but not its end (it lives until killed or stopped).
func (c *child) startContext(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runningLocked() {
		return fmt.Errorf("testenv: %s is already running (pid %d)", c.name, c.cmd.Process.Pid)
	}
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close() // the child has its own copy of the descriptor
	// The process lives until it is killed or stopped, not for a context.
	cmd := exec.CommandContext(context.WithoutCancel(ctx), c.bin, c.args...) //nolint:gosec // G204: a server binary this package chose, with arguments it wrote
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = c.env
	cmd.SysProcAttr = childAttr() // dies with the test binary, even on SIGKILL
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start %s (%s): %w", c.name, c.bin, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.exitErr = err
		c.mu.Unlock()
		close(done)
	}()
	c.cmd, c.done, c.exitErr, c.wanted = cmd, done, nil, true
	return nil
}

func (c *child) runningLocked() bool {
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// running reports whether the process was started and has not exited.
func (c *child) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runningLocked()
}

// crashed reports whether the process exited although nobody killed or
// stopped it through this type: a failed start, or a crash.
func (c *child) crashed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wanted && !c.runningLocked()
}

// wantedUp reports whether the process was started and not killed or
// stopped on purpose since (it may have crashed: see crashed).
func (c *child) wantedUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wanted
}

// pid is the process id while it runs, else 0.
func (c *child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.runningLocked() {
		return 0
	}
	return c.cmd.Process.Pid
}

// exited reports whether the process was started and has exited, and
// what its Wait returned (nil for exit status 0).
func (c *child) exited() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.runningLocked() {
		return false, nil
	}
	return true, c.exitErr
}

// kill sends SIGKILL and returns once the process is reaped, so that its
// ports and files are released. It does nothing if the process is not running.
func (c *child) kill() { c.stop(syscall.SIGKILL, 0) }

// stop sends sig and waits up to grace for the process to exit, then kills
// it. It returns whether the process exited on its own within grace. The
// lock is not held while waiting, so pid and running answer meanwhile.
func (c *child) stop(sig os.Signal, grace time.Duration) bool {
	c.mu.Lock()
	c.wanted = false
	if !c.runningLocked() {
		c.mu.Unlock()
		return true
	}
	proc, done := c.cmd.Process, c.done
	_ = proc.Signal(sig)
	c.mu.Unlock()
	if sig == syscall.SIGKILL {
		<-done
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = proc.Kill()
		<-done
		return false
	}
}

// logTail returns the last lines of the process's log, for error messages.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// errExited reports that a child exited while we waited for it.
func (c *child) errExited() error {
	return fmt.Errorf("testenv: %s exited; the end of %s:\n%s", c.name, c.log, c.logTail())
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. It holds every
// listener until all n are found, so the kernel cannot hand out one port
// twice; another process can still take a port before the server binds it,
// which is why every Start* function retries with fresh ports when a server
// exits at start-up.
func freePorts(n int) ([]int, error) {
	var lc net.ListenConfig
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok {
			return nil, fmt.Errorf("testenv: unexpected listener address %v", l.Addr())
		}
		ports = append(ports, addr.Port)
	}
	return ports, nil
}
