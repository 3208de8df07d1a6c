package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/idempay/idempay/internal/testenv"
)

// stallTimeout ends a scenario in which no new key was answered for this
// long: a stuck worker fails the run instead of hanging it.
const stallTimeout = 30 * time.Second

// setupWorker starts a worker on ns and stops it again: the worker, not
// the harness, creates the streams and the consumer, so the harness never
// needs to know their configuration.
func (b *bencher) setupWorker(ctx context.Context, ns *namespace, ws workerSettings) error {
	w, err := startWorker(ctx, b.s.dir, b.workerBin, ns.workerEnv(b.s, ws))
	if err != nil {
		return err
	}
	return w.Stop(ctx)
}

// drain measures workers worker processes at inFlight each draining a
// preload of Count commands of kind.
func (b *bencher) drain(ctx context.Context, kind string, inFlight, workers, round int) (*Result, error) {
	ns := b.nextNamespace()
	defer b.s.reset(ctx, ns)
	ws := workerSettings{Concurrency: inFlight, Pprof: b.cfg.CPUProfileDir != ""}
	if err := b.setupWorker(ctx, ns, ws); err != nil {
		return nil, err
	}
	if err := preload(ctx, b.s.js, ns.commandRoot()+"."+kind, kind, b.cfg.Count); err != nil {
		return nil, err
	}
	if err := expectMessages(ctx, b.s.js, ns.commandStream(), b.cfg.Count); err != nil {
		return nil, err
	}

	name := fmt.Sprintf("%s @%d", kind, inFlight)
	if workers > 1 {
		name = fmt.Sprintf("%s @%d x%d workers", kind, inFlight, workers)
	}
	r := &Result{Name: name, Kind: "drain", Command: kind, InFlight: inFlight, Workers: workers, Round: round}
	watch, err := watchAcks(ctx, b.s.js, ns.commandStream(), b.cfg.Count)
	if err != nil {
		return nil, err
	}
	defer watch.stop()
	m := b.s.begin(ctx)
	procs, err := b.startWorkers(ctx, ns, ws, workers, m)
	if err != nil {
		return nil, err
	}
	profiled := b.profile(ctx, procs[0], name, round)
	if err := watch.wait(ctx, stallTimeout); err != nil {
		killAll(procs)
		return nil, fmt.Errorf("%s: %w; first worker's output:\n%s", name, err, procs[0].LogTail())
	}
	n, span := watch.span()
	r.Commands, r.Seconds, r.PerSecond = n, span.Seconds(), rate(n, span)
	m.end(ctx, r, procs, false)
	// Every ack stands for a stored outcome: check that RESULTS holds one
	// per key.
	if err := expectMessages(ctx, b.s.js, ns.resultStream(), b.cfg.Count); err != nil {
		killAll(procs)
		return nil, fmt.Errorf("%s: after %d acks: %w", name, n, err)
	}
	if err := <-profiled; err != nil {
		b.progressf("cpu profile of %s: %v", name, err)
	}
	return r, stopAll(ctx, procs)
}

// profile takes a CPU profile of w from its /debug/pprof/profile, when
// Config.CPUProfileDir is set, into <dir>/<scenario>.pprof. The returned
// channel yields the outcome once the profile is written.
func (b *bencher) profile(ctx context.Context, w *testenv.ProcessWorker, name string, round int) <-chan error {
	done := make(chan error, 1)
	if b.cfg.CPUProfileDir == "" || w.MetricsAddr() == "" {
		done <- nil
		return done
	}
	file := strings.NewReplacer(" ", "_", "@", "at", ".", "_").Replace(name)
	if round > 0 {
		file += fmt.Sprintf("_round%d", round)
	}
	path := filepath.Join(b.cfg.CPUProfileDir, file+".pprof")
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", w.MetricsAddr(), b.cfg.CPUProfileSeconds)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("%s: %s (does the worker serve /debug/pprof?)", url, resp.Status)
			return
		}
		f, err := os.Create(path)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		done <- errors.Join(err, f.Close())
	}()
	return done
}

// startWorkers starts count workers on ns, sampling each as it becomes
// ready.
func (b *bencher) startWorkers(ctx context.Context, ns *namespace, ws workerSettings, count int, m *meter) ([]*testenv.ProcessWorker, error) {
	procs := make([]*testenv.ProcessWorker, 0, count)
	for range count {
		w, err := startWorker(ctx, b.s.dir, b.workerBin, ns.workerEnv(b.s, ws))
		if err != nil {
			killAll(procs)
			return nil, err
		}
		m.addWorker(w)
		procs = append(procs, w)
	}
	return procs, nil
}

func stopAll(ctx context.Context, procs []*testenv.ProcessWorker) error {
	var first error
	for _, w := range procs {
		if err := w.Stop(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func killAll(procs []*testenv.ProcessWorker) {
	for _, w := range procs {
		_ = w.Kill()
	}
}

// rate is n events over d, 0 for an empty span.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
