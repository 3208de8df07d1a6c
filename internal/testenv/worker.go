package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Worker is one worker of a Deployment, in this process (EngineWorker) or
// a child process (ProcessWorker), with the one set of verbs every harness
// uses to hurt it: Stop drains it as a deploy does (SIGTERM), Start brings
// it back, Restart does both; Kill ends it as a crash does (SIGKILL),
// Pause and Resume freeze and thaw it (SIGSTOP, SIGCONT). An in-process
// worker cannot be killed or paused whole - its harness crashes and pauses
// single deliveries at the engine's failpoints instead - and says so with
// ErrUnsupported.
type Worker interface {
	Name() string
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Restart(ctx context.Context) error
	Kill() error
	Pause() error
	Resume() error
	// Running reports whether it was started and has not stopped or died.
	Running() bool
}

// ErrUnsupported is a Worker's answer to a verb it cannot carry out.
var ErrUnsupported = errors.New("testenv: not supported by this kind of worker")

// Engine is what an EngineWorker runs: pkg/processor's Processor, or
// anything with its lifecycle. An Engine starts once; a restart makes a
// new one.
type Engine interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// EngineWorker is a worker in this process: an Engine, made afresh by its
// factory at every Start, as a supervisor starts a fresh process.
type EngineWorker struct {
	name      string
	newEngine func() (Engine, error)

	mu     sync.Mutex
	eng    Engine // nil while stopped
	starts int
}

var _ Worker = (*EngineWorker)(nil)

// NewEngineWorker returns a stopped in-process worker; newEngine makes its
// engine at each Start.
func NewEngineWorker(name string, newEngine func() (Engine, error)) *EngineWorker {
	return &EngineWorker{name: name, newEngine: newEngine}
}

// RunEngine adds an in-process worker to the deployment and starts it.
func (d *Deployment) RunEngine(ctx context.Context, name string, newEngine func() (Engine, error)) (*EngineWorker, error) {
	w := NewEngineWorker(name, newEngine)
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	d.Add(w)
	return w, nil
}

// Name implements Worker.
func (w *EngineWorker) Name() string { return w.name }

// Starts returns how often the worker was started.
func (w *EngineWorker) Starts() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.starts
}

// Start makes a new engine and starts it; it fails if one runs.
func (w *EngineWorker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.eng != nil {
		return fmt.Errorf("testenv: %s is already running", w.name)
	}
	eng, err := w.newEngine()
	if err != nil {
		return fmt.Errorf("testenv: make %s: %w", w.name, err)
	}
	if err := eng.Start(ctx); err != nil {
		return fmt.Errorf("testenv: start %s: %w", w.name, err)
	}
	w.eng = eng
	w.starts++
	return nil
}

// Stop stops the engine (its Stop drains in-flight work until ctx ends)
// and returns its error. Stopping a stopped worker does nothing.
func (w *EngineWorker) Stop(ctx context.Context) error {
	w.mu.Lock()
	eng := w.eng
	w.eng = nil
	w.mu.Unlock()
	if eng == nil {
		return nil
	}
	return eng.Stop(ctx)
}

// Restart stops the worker and starts a new engine.
func (w *EngineWorker) Restart(ctx context.Context) error {
	if err := w.Stop(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return w.Start(ctx)
}

// Running implements Worker.
func (w *EngineWorker) Running() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.eng != nil
}

// Kill is ErrUnsupported: crash deliveries at the engine's failpoints.
func (w *EngineWorker) Kill() error { return ErrUnsupported }

// Pause is ErrUnsupported: block in the engine's failpoints.
func (w *EngineWorker) Pause() error { return ErrUnsupported }

// Resume is ErrUnsupported (see Pause).
func (w *EngineWorker) Resume() error { return ErrUnsupported }

// ProcessWorker is a worker run as a child process (a worker binary, or
// the gateway), with its output appended to a log file across restarts:
// the one process wrapper of every harness (the chaos suite, the
// benchmarks, the fault explorer's process mode).
type ProcessWorker struct {
	proc        *child
	ready       func(ctx context.Context) error
	readyLine   string
	metricsAddr string
	grace       time.Duration

	mu       sync.Mutex
	logStart int64 // the log's size when the current run started
}

var _ Worker = (*ProcessWorker)(nil)

// ProcessOptions describe a ProcessWorker.
type ProcessOptions struct {
	// Name names it in errors. Defaults to the binary.
	Name string
	// Bin and Args are the program and its arguments.
	Bin  string
	Args []string
	// Env is its whole environment (NAME=value); nil inherits this
	// process's.
	Env []string
	// Log is the file its stdout and stderr are appended to.
	Log string
	// ReadyLine, if set, is a line the program logs once it is up
	// ("worker running"): Start waits until this run's output holds it.
	ReadyLine string
	// Ready, if set, is polled after each start (and after ReadyLine)
	// until it returns nil: the worker is up (its /readyz answers, say).
	Ready func(ctx context.Context) error
	// MetricsAddr is where the program serves /metrics (the harness set
	// it through Env or Args); Metrics reads it. Defaults to none.
	MetricsAddr string
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	// Defaults to 30s.
	StopGrace time.Duration
}

// NewProcessWorker returns a stopped process worker.
func NewProcessWorker(opts ProcessOptions) *ProcessWorker {
	name := opts.Name
	if name == "" {
		name = filepath.Base(opts.Bin)
	}
	grace := opts.StopGrace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	return &ProcessWorker{proc: &child{name: name, bin: opts.Bin, args: opts.Args, env: opts.Env, log: opts.Log},
		ready: opts.Ready, readyLine: opts.ReadyLine, metricsAddr: opts.MetricsAddr, grace: grace}
}

// Name implements Worker.
func (w *ProcessWorker) Name() string { return w.proc.name }

// Pid returns the process id while it runs, else 0.
func (w *ProcessWorker) Pid() int { return w.proc.pid() }

// MetricsAddr is ProcessOptions.MetricsAddr.
func (w *ProcessWorker) MetricsAddr() string { return w.metricsAddr }

// Log is the file its output goes to.
func (w *ProcessWorker) Log() string { return w.proc.log }

// Start starts the process and waits until it is ready (ReadyLine, then
// Ready); if the process exits meanwhile the error quotes its log.
func (w *ProcessWorker) Start(ctx context.Context) error {
	if err := w.Launch(ctx); err != nil {
		return err
	}
	return w.WaitReady(ctx)
}

// Launch starts the process without waiting for it to be ready. The
// process lives until Stop or Kill, not until ctx ends.
func (w *ProcessWorker) Launch(ctx context.Context) error {
	var size int64
	if fi, err := os.Stat(w.proc.log); err == nil {
		size = fi.Size()
	}
	w.mu.Lock()
	w.logStart = size
	w.mu.Unlock()
	return w.proc.startContext(ctx)
}

// WaitReady waits until the running process is ready (see Start).
func (w *ProcessWorker) WaitReady(ctx context.Context) error {
	if w.readyLine == "" && w.ready == nil {
		return nil
	}
	return Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		if !w.proc.running() {
			return StopPolling(w.proc.errExited())
		}
		if w.readyLine != "" && !w.loggedSinceStart(w.readyLine) {
			return fmt.Errorf("testenv: %s has not logged %q yet", w.proc.name, w.readyLine)
		}
		if w.ready != nil {
			return w.ready(ctx)
		}
		return nil
	})
}

// loggedSinceStart reports whether this run's output holds line.
func (w *ProcessWorker) loggedSinceStart(line string) bool {
	f, err := os.Open(w.proc.log)
	if err != nil {
		return false
	}
	defer f.Close()
	w.mu.Lock()
	start := w.logStart
	w.mu.Unlock()
	b, err := io.ReadAll(io.NewSectionReader(f, start, 1<<40))
	return err == nil && bytes.Contains(b, []byte(line))
}

// Stop sends SIGTERM, which makes an idempay program drain and exit 0, and
// waits StopGrace for the exit, then kills it. It returns an error when the
// process had to be killed or exited with anything but status 0, quoting
// the end of its log. Stopping a stopped process does nothing.
func (w *ProcessWorker) Stop(context.Context) error {
	if !w.proc.running() {
		return nil
	}
	// A paused process cannot act on SIGTERM. SIGCONT always: a SIGSTOP
	// just sent may not show in /proc yet, and SIGCONT discards it.
	_ = w.signal(syscall.SIGCONT)
	if !w.proc.stop(syscall.SIGTERM, w.grace) {
		return fmt.Errorf("testenv: %s %w within %v of SIGTERM; killed. The end of %s:\n%s", w.proc.name, ErrNotStopped, w.grace, w.proc.log, w.proc.logTail())
	}
	if _, err := w.proc.exited(); err != nil {
		return fmt.Errorf("testenv: %s: %w after SIGTERM, want exit status 0. The end of %s:\n%s", w.proc.name, err, w.proc.log, w.proc.logTail())
	}
	return nil
}

// Restart stops the process and starts it again.
func (w *ProcessWorker) Restart(ctx context.Context) error {
	_ = w.Stop(ctx) // a worker that had to be killed restarts all the same
	return w.Start(ctx)
}

// Kill sends SIGKILL and waits until the process is reaped.
func (w *ProcessWorker) Kill() error {
	w.proc.kill()
	return nil
}

// Pause sends SIGSTOP.
func (w *ProcessWorker) Pause() error { return w.signal(syscall.SIGSTOP) }

// Resume sends SIGCONT.
func (w *ProcessWorker) Resume() error { return w.signal(syscall.SIGCONT) }

func (w *ProcessWorker) signal(sig os.Signal) error {
	w.proc.mu.Lock()
	defer w.proc.mu.Unlock()
	if !w.proc.runningLocked() {
		return fmt.Errorf("testenv: %s is not running", w.proc.name)
	}
	return w.proc.cmd.Process.Signal(sig)
}

// Running implements Worker.
func (w *ProcessWorker) Running() bool { return w.proc.running() }

// Exited reports whether the process was started and has exited, and what
// ended it: nil for exit status 0, else an *exec.ExitError (ExitSignal
// reads its signal).
func (w *ProcessWorker) Exited() (bool, error) { return w.proc.exited() }

// State is the process's state letter in /proc: R, S, D, T (stopped:
// SIGSTOP), Z; "" when it does not run or /proc cannot be read.
func (w *ProcessWorker) State() string {
	pid := w.Pid()
	if pid == 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2 : i+3])
}

// Crashed reports whether the process exited though nobody stopped or
// killed it.
func (w *ProcessWorker) Crashed() bool { return w.proc.crashed() }

// LogTail returns the last lines of its log.
func (w *ProcessWorker) LogTail() string { return w.proc.logTail() }

// Metrics reads the program's /metrics (ProcessOptions.MetricsAddr): see
// ScrapeMetrics.
func (w *ProcessWorker) Metrics(ctx context.Context, names ...string) (map[string]float64, error) {
	if w.metricsAddr == "" {
		return nil, fmt.Errorf("testenv: %s serves no metrics (ProcessOptions.MetricsAddr)", w.proc.name)
	}
	return ScrapeMetrics(ctx, w.metricsAddr, names...)
}

// ErrNotStopped is Stop's answer when the process had to be killed.
var ErrNotStopped = errors.New("did not exit")

// ExitSignal returns the signal that ended a process, from the error
// Exited returned.
func ExitSignal(err error) (syscall.Signal, bool) {
	exit, ok := errors.AsType[*exec.ExitError](err)
	if !ok {
		return 0, false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}
