package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildWorker builds ./cmd/worker of the module this harness belongs to
// into dir and returns the binary's path.
func buildWorker(ctx context.Context, dir string) (string, error) {
	return buildCommand(ctx, dir, "worker")
}

// buildCommand builds ./cmd/<name> of this module into dir.
func buildCommand(ctx context.Context, dir, name string) (string, error) {
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("bench: find the module root (run from the repository): %w", err)
	}
	bin := filepath.Join(dir, name)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/"+name)
	build.Dir = strings.TrimSpace(string(root))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return bin, nil
}

// workerProc is one running worker process.
type workerProc struct {
	cmd         *exec.Cmd
	metricsAddr string
	readyMarker string        // the log line that says it is running
	ready       chan struct{} // closed once the process logged readyMarker
	exited      chan struct{} // closed once the process is gone
	exitErr     error
	tail        *lineTail
}

// passEnv are the variables of this process a worker inherits: enough to
// run a Go binary, and the runtime's own knobs for experiments. Nothing
// else, so that a NATS_URL or SIM_LATENCY in the caller's shell cannot
// change what is measured.
var passEnv = []string{"PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"}

// startWorker starts bin with env (plus METRICS_ADDR on a free port) and
// waits until it is running.
func startWorker(ctx context.Context, bin string, env []string) (*workerProc, error) {
	return startProcess(ctx, bin, env, "worker running")
}

// startProcess starts one of idempay's programs and waits until it logs
// readyMarker; the worker and the gateway share the shape.
func startProcess(ctx context.Context, bin string, env []string, readyMarker string) (*workerProc, error) {
	w := &workerProc{readyMarker: readyMarker, ready: make(chan struct{}), exited: make(chan struct{}), tail: &lineTail{max: 40}}
	if addr, err := freeAddr(ctx); err == nil {
		w.metricsAddr = addr
		env = append(env, "METRICS_ADDR="+addr)
	}
	for _, name := range passEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	// The worker lives until stop, not for a context: stop drains it.
	w.cmd = exec.CommandContext(context.WithoutCancel(ctx), bin)
	w.cmd.Env = env
	// A benchmark killed midway leaves no worker behind.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w.cmd.Stderr = w.cmd.Stdout // one pipe, read by one goroutine
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", filepath.Base(bin), err)
	}
	// Read the output to the end even after "worker running": a pipe
	// nobody reads would block the worker once it fills.
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		w.scan(out)
	}()
	go func() {
		<-scanned
		w.exitErr = w.cmd.Wait()
		close(w.exited)
	}()
	select {
	case <-w.ready:
		return w, nil
	case <-w.exited:
		return nil, fmt.Errorf("bench: %s exited before it was running (%w); its output:\n%s", filepath.Base(bin), w.exitErr, w.tail)
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.exited
		return nil, fmt.Errorf("bench: %s not running after 30s; its output:\n%s", filepath.Base(bin), w.tail)
	case <-ctx.Done():
		_ = w.cmd.Process.Kill()
		<-w.exited
		return nil, ctx.Err()
	}
}

func (w *workerProc) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	once := sync.OnceFunc(func() { close(w.ready) })
	for sc.Scan() {
		line := sc.Text()
		w.tail.add(line)
		if strings.Contains(line, w.readyMarker) {
			once()
		}
	}
	_, _ = io.Copy(io.Discard, r) // a line longer than 1 MiB: keep draining
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

// stop sends SIGTERM, which makes the worker drain and exit 0, and waits
// for it; after 40s (the worker's own drain timeout is 25s) it kills it.
func (w *workerProc) stop() error {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(40 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.exited
		return fmt.Errorf("bench: worker did not exit within 40s of SIGTERM; its output:\n%s", w.tail)
	}
	if w.exitErr != nil {
		return fmt.Errorf("bench: worker exited with %w after SIGTERM; its output:\n%s", w.exitErr, w.tail)
	}
	return nil
}

// kill ends a worker without draining (on an error path).
func (w *workerProc) kill() {
	_ = w.cmd.Process.Kill()
	<-w.exited
}

// goroutines reads go_goroutines from the worker's Prometheus /metrics
// (METRICS_ADDR). Workers that do not serve metrics yet report false.
func (w *workerProc) goroutines(ctx context.Context) (int, bool) {
	if w.metricsAddr == "" {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.metricsAddr+"/metrics", http.NoBody)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	v, ok := promValue(resp.Body, "go_goroutines")
	return int(v), ok
}

// promValue returns the value of an unlabelled metric in Prometheus' text
// format.
func promValue(r io.Reader, name string) (float64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

func freeAddr(ctx context.Context) (string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// lineTail keeps the last max lines of a process's output, for error
// messages.
type lineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "  (no output)"
	}
	return "  " + strings.Join(t.lines, "\n  ")
}
