package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/idempay/idempay/internal/testenv"
)

// intent is what the suite last did to a worker process: an exit it caused
// is expected, any other is a finding.
type intent int

const (
	intentNone intent = iota
	intentKill        // SIGKILL
	intentTerm        // SIGTERM: must exit 0
)

// worker is one worker process (testenv's process wrapper), with what the
// suite knows of it: its slot number, its failpoint, and what the suite
// did to it. Its output goes to a file in the scenario's directory, which
// the suite scans for race reports and panics.
type worker struct {
	*testenv.ProcessWorker
	n     int    // from 1, in start order
	armed string // its IDEMPAY_FAILPOINT, "" for none
	log   string

	mu        sync.Mutex
	intent    intent
	stoppedBy string // while stopped: "suite" or "failpoint"
}

// exited reports whether the process has ended (it was started at spawn).
func (w *worker) exited() bool {
	done, _ := w.Exited()
	return done
}

func (w *worker) setIntent(i intent) {
	w.mu.Lock()
	w.intent = i
	w.mu.Unlock()
}

func (w *worker) getIntent() intent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.intent
}

// signaled returns the signal that ended the process, if one did.
func (w *worker) signaled() (syscall.Signal, bool) {
	_, err := w.Exited()
	return testenv.ExitSignal(err)
}

// exitStatus describes how the process ended, for findings.
func (w *worker) exitStatus() string {
	if _, err := w.Exited(); err != nil {
		return err.Error()
	}
	return "exit status 0"
}

// armedKill returns the failpoint at which the worker kills itself, "" for
// none.
func (w *worker) armedKill() string {
	point, action, _ := strings.Cut(w.armed, "=")
	if w.armed == "" || (action != "" && action != "kill") {
		return ""
	}
	point, _, _ = strings.Cut(point, "@")
	return point
}

// stopped reports whether the process is stopped (SIGSTOP).
func (w *worker) stopped() bool { return !w.exited() && w.State() == "T" }

// workers starts and tracks the worker processes of one scenario. The live
// set is its slots; a worker that dies is replaced in its slot.
type workers struct {
	bin  string
	dir  string
	env  []string
	arm  func(n int) string
	logf func(string, ...any)

	mu    sync.Mutex
	all   []*worker
	slots []*worker
}

// spawn starts one more worker process, without waiting for it.
func (ws *workers) spawn(ctx context.Context) (*worker, error) {
	ws.mu.Lock()
	n := len(ws.all) + 1
	ws.mu.Unlock()
	port, err := testenv.FreePort() //nolint:contextcheck // binding a loopback port does not wait
	if err != nil {
		return nil, err
	}
	w := &worker{n: n, log: filepath.Join(ws.dir, fmt.Sprintf("worker-%d.log", n))}
	if ws.arm != nil {
		w.armed = ws.arm(n)
	}
	metricsAddr := "127.0.0.1:" + strconv.Itoa(port)
	w.ProcessWorker = testenv.NewProcessWorker(testenv.ProcessOptions{Name: fmt.Sprintf("worker %d", n), Bin: ws.bin, Log: w.log,
		Env:       append(append(os.Environ(), ws.env...), "METRICS_ADDR="+metricsAddr, "IDEMPAY_FAILPOINT="+w.armed),
		ReadyLine: "worker running", MetricsAddr: metricsAddr, StopGrace: termGrace})
	if err := w.Launch(ctx); err != nil {
		return nil, fmt.Errorf("chaos: start worker: %w", err)
	}
	ws.mu.Lock()
	ws.all = append(ws.all, w)
	ws.mu.Unlock()
	return w, nil
}

// waitRunning waits until w logs that it consumes.
func (ws *workers) waitRunning(ctx context.Context, w *worker) error {
	if err := w.WaitReady(ctx); err != nil {
		return fmt.Errorf("chaos: worker %d (%s): %w", w.n, w.exitStatus(), err)
	}
	return nil
}

// start fills n slots with running workers.
func (ws *workers) start(ctx context.Context, n int) error {
	started := make([]*worker, 0, n)
	for range n {
		w, err := ws.spawn(ctx)
		if err != nil {
			return err
		}
		started = append(started, w)
	}
	for _, w := range started {
		if err := ws.waitRunning(ctx, w); err != nil {
			return err
		}
	}
	ws.mu.Lock()
	ws.slots = append(ws.slots, started...)
	ws.mu.Unlock()
	return nil
}

// replace puts a new worker in old's slot (old has exited or is being
// killed), without waiting for it to consume.
func (ws *workers) replace(ctx context.Context, old *worker) error {
	w, err := ws.spawn(ctx)
	if err != nil {
		return err
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for i, s := range ws.slots {
		if s == old {
			ws.slots[i] = w
			return nil
		}
	}
	ws.slots = append(ws.slots, w)
	return nil
}

// live returns the workers in the slots.
func (ws *workers) live() []*worker {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return append([]*worker(nil), ws.slots...)
}

// pick returns a random worker of the slots that runs and is not stopped,
// nil if there is none.
func (ws *workers) pick(rng *rand.Rand) *worker {
	var ok []*worker
	for _, w := range ws.live() {
		if !w.exited() && !w.stopped() {
			ok = append(ok, w)
		}
	}
	if len(ok) == 0 {
		return nil
	}
	return ok[rng.IntN(len(ok))]
}

// kill sends SIGKILL and waits until the process is reaped.
func (ws *workers) kill(w *worker) {
	w.setIntent(intentKill)
	_ = w.Kill()
}

// term sends SIGTERM (resuming a stopped worker first) and waits up to
// termGrace for the exit; the audit checks that it was exit status 0. After
// the grace the process is killed and term returns an error.
func (ws *workers) term(ctx context.Context, w *worker) error {
	w.setIntent(intentTerm)
	if err := w.Stop(ctx); errors.Is(err, testenv.ErrNotStopped) {
		return fmt.Errorf("chaos: worker %d did not exit within %v of SIGTERM", w.n, termGrace)
	}
	return nil // another exit than status 0 is the audit's finding
}

// stop sends SIGSTOP; cont sends SIGCONT.
func (ws *workers) stop(w *worker, by string) {
	w.mu.Lock()
	w.stoppedBy = by
	w.mu.Unlock()
	_ = w.Pause()
}

func (ws *workers) cont(w *worker) {
	_ = w.Resume()
	w.mu.Lock()
	w.stoppedBy = ""
	w.mu.Unlock()
}

// claimSelfStop marks a worker found stopped that the suite did not stop
// (it stopped itself at a failpoint) and reports whether it was such a one.
func (w *worker) claimSelfStop() bool {
	if !w.stopped() {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stoppedBy != "" {
		return false
	}
	w.stoppedBy = "failpoint"
	return true
}

// killAll kills every process still running, for cleanup.
func (ws *workers) killAll() {
	ws.mu.Lock()
	all := append([]*worker(nil), ws.all...)
	ws.mu.Unlock()
	for _, w := range all {
		_ = w.Kill()
	}
}

// workerFindings returns what the suite finds in the workers' exits and
// output: race reports, panics, exits it did not cause, SIGTERMs that did
// not end in exit status 0. It also counts what happened, for the report.
func (ws *workers) findings() (violations []string, stats workerStats) {
	ws.mu.Lock()
	all := append([]*worker(nil), ws.all...)
	ws.mu.Unlock()
	stats.selfKills = map[string]int{}
	for _, w := range all {
		stats.started++
		switch sig, signaled := w.signaled(); {
		case !w.exited():
			violations = append(violations, fmt.Sprintf("worker %d still runs at the end", w.n))
		case w.getIntent() == intentKill:
			stats.killed++
		case w.getIntent() == intentTerm:
			stats.terminated++
			if w.exitStatus() != "exit status 0" {
				violations = append(violations, fmt.Sprintf("worker %d: %s after SIGTERM, want exit status 0:\n%s", w.n, w.exitStatus(), tail(w.log, 15)))
			}
		case signaled && sig == syscall.SIGKILL && w.armedKill() != "":
			stats.selfKills[w.armedKill()]++
		default:
			violations = append(violations, fmt.Sprintf("worker %d exited on its own (%s; failpoint %q):\n%s", w.n, w.exitStatus(), w.armed, tail(w.log, 30)))
		}
		violations = append(violations, scanOutput(w)...)
	}
	return violations, stats
}

// workerStats counts what happened to a scenario's worker processes.
type workerStats struct {
	started, killed, terminated int
	selfKills                   map[string]int // by failpoint
}

// scanOutput finds race reports and panics in a worker's output.
func scanOutput(w *worker) []string {
	f, err := os.Open(w.log)
	if err != nil {
		return []string{fmt.Sprintf("worker %d: its output cannot be read: %v", w.n, err)}
	}
	defer f.Close()
	var found []string
	var lines []string // the report being collected
	collecting := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if collecting > 0 {
			lines = append(lines, line)
			collecting--
			if collecting == 0 {
				found = append(found, strings.Join(lines, "\n"))
			}
			continue
		}
		var what string
		switch {
		case strings.Contains(line, "WARNING: DATA RACE"):
			what = "a race report"
		case strings.HasPrefix(line, "panic:"), strings.HasPrefix(line, "fatal error:"):
			what = "a panic"
		case strings.Contains(line, "delivery panicked"):
			what = "a recovered panic"
		default:
			continue
		}
		lines = []string{fmt.Sprintf("worker %d printed %s (%s):", w.n, what, w.log), line}
		collecting = 25
	}
	if collecting > 0 {
		found = append(found, strings.Join(lines, "\n"))
	}
	return found
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
