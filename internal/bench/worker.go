package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/idempay/idempay/internal/testenv"
)

// passEnv are the variables of this process a worker inherits: enough to
// run a Go binary, and the runtime's own knobs for experiments. Nothing
// else, so that a NATS_URL or SIM_LATENCY in the caller's shell cannot
// change what is measured.
var passEnv = []string{"PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"}

// startWorker starts bin with env (plus METRICS_ADDR on a free port) and
// waits until it is running; its output goes to a log in dir.
func startWorker(ctx context.Context, dir, bin string, env []string) (*testenv.ProcessWorker, error) {
	return startProcess(ctx, dir, bin, env, "worker running")
}

// startProcess starts one of idempay's programs (the worker, the gateway)
// as the harness's one process wrapper and waits until it logs readyLine.
// SIGTERM drains it: Stop waits 40s for the exit (the worker's own drain
// timeout is 25s) and wants exit status 0.
func startProcess(ctx context.Context, dir, bin string, env []string, readyLine string) (*testenv.ProcessWorker, error) {
	port, err := testenv.FreePort() //nolint:contextcheck // binding a loopback port does not wait
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env = append(env, "METRICS_ADDR="+addr)
	for _, name := range passEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	log, err := os.CreateTemp(dir, filepath.Base(bin)+"-*.log")
	if err != nil {
		return nil, err
	}
	_ = log.Close()
	w := testenv.NewProcessWorker(testenv.ProcessOptions{Bin: bin, Env: env, Log: log.Name(), ReadyLine: readyLine,
		MetricsAddr: addr, StopGrace: 40 * time.Second})
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := w.Start(startCtx); err != nil {
		_ = w.Kill()
		return nil, err
	}
	return w, nil
}

// goroutines reads go_goroutines from a program's /metrics; a program
// that does not serve them (yet) reports false.
func goroutines(ctx context.Context, w *testenv.ProcessWorker) (int, bool) {
	if w.MetricsAddr() == "" {
		return 0, false
	}
	m, err := w.Metrics(ctx, "go_goroutines")
	if err != nil {
		return 0, false
	}
	v, ok := m["go_goroutines"]
	return int(v), ok
}
