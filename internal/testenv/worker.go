package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// ProcessWorker is a worker run as a child process (a worker binary),
// with its output appended to a log file across restarts.
type ProcessWorker struct {
	proc  *child
	ready func(ctx context.Context) error
	grace time.Duration
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
	// Ready, if set, is polled after each start until it returns nil: the
	// worker is up (its /readyz answers, say).
	Ready func(ctx context.Context) error
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	// Defaults to 30s.
	StopGrace time.Duration
}

// NewProcessWorker returns a stopped process worker.
func NewProcessWorker(opts ProcessOptions) *ProcessWorker {
	name := opts.Name
	if name == "" {
		name = opts.Bin
	}
	grace := opts.StopGrace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	return &ProcessWorker{proc: &child{name: name, bin: opts.Bin, args: opts.Args, env: opts.Env, log: opts.Log},
		ready: opts.Ready, grace: grace}
}

// Name implements Worker.
func (w *ProcessWorker) Name() string { return w.proc.name }

// Pid returns the process id while it runs, else 0.
func (w *ProcessWorker) Pid() int { return w.proc.pid() }

// Start starts the process and waits until Ready passes (or the process
// exits: the error then quotes its log).
func (w *ProcessWorker) Start(ctx context.Context) error {
	if err := w.proc.start(); err != nil { //nolint:contextcheck // the process lives until stopped or killed, not for ctx
		return err
	}
	if w.ready == nil {
		return nil
	}
	return Poll(ctx, 20*time.Millisecond, func(ctx context.Context) error {
		if !w.proc.running() {
			return StopPolling(w.proc.errExited())
		}
		return w.ready(ctx)
	})
}

// Stop sends SIGTERM and waits StopGrace for the exit, then kills it. It
// returns an error when the process had to be killed; its exit status is
// the caller's to judge from the log.
func (w *ProcessWorker) Stop(context.Context) error {
	if !w.proc.stop(syscall.SIGTERM, w.grace) {
		return fmt.Errorf("testenv: %s did not exit within %v of SIGTERM; killed", w.proc.name, w.grace)
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

// Crashed reports whether the process exited though nobody stopped or
// killed it.
func (w *ProcessWorker) Crashed() bool { return w.proc.crashed() }

// LogTail returns the last lines of its log.
func (w *ProcessWorker) LogTail() string { return w.proc.logTail() }
