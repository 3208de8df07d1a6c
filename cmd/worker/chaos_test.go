//go:build chaos

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/chaos"
)

// TestChaos runs every scenario of the chaos suite (package chaos), each on
// its own fresh servers with real worker processes (this package's binary,
// built with -race and its failpoints), then every negative control, and
// prints and writes the report: CHAOS_REPORT, or idempay-chaos-report.md in
// the temporary directory.
//
// CHAOS_DURATION is each scenario's load and faults (20s by default),
// CHAOS_RATE its new commands a second (50). When every scenario ran (no
// -run filter), the run must reach CHAOS_MIN_COMMANDS commands and
// CHAOS_MIN_FAULTS faults (0 by default; make chaos asks for 10000 and 50):
// a run too small proves nothing. With either set, a scenario must also
// exercise what it claims (every failpoint fired, a late commit refused).
//
// One scenario runs at a time; the control that waits out a RESULT_TTL
// lets the next one run while it waits.
func TestChaos(t *testing.T) {
	t.Parallel()
	opts := &chaos.Options{WorkerBin: workerBin, Duration: envDuration(t, "CHAOS_DURATION", 20*time.Second),
		Rate: envFloat(t, "CHAOS_RATE", 50), Logf: t.Logf,
		// At the size that must prove everything, a scenario that did not
		// exercise what it claims (a failpoint that never fired) fails.
		Strict: envInt(t, "CHAOS_MIN_COMMANDS") > 0 || envInt(t, "CHAOS_MIN_FAULTS") > 0}
	report := os.Getenv("CHAOS_REPORT")
	if report == "" {
		report = filepath.Join(os.TempDir(), "idempay-chaos-report.md")
	}
	// The control that waits out a RESULT_TTL first, so that it waits while
	// the others run.
	controls := chaos.Controls()
	all := make([]*chaos.Scenario, 0, len(controls)+len(chaos.Scenarios()))
	all = append(all, controls[0])
	all = append(all, chaos.Scenarios()...)
	all = append(all, controls[1:]...)

	// One scenario at a time uses the machine: the workers run with the
	// race detector on two cores shared with the suite itself.
	machine := make(chan struct{}, 1)
	opts.Idle = func(f func()) {
		<-machine
		defer func() { machine <- struct{}{} }()
		f()
	}
	var (
		mu      sync.Mutex
		results []*chaos.Result
		ran     int
	)
	started := time.Now()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		sortLike(results, all)
		meta := chaos.ReportMeta{Started: started, Elapsed: time.Since(started), Duration: opts.Duration, Rate: opts.Rate,
			Command: fmt.Sprintf("make chaos CHAOS_DURATION=%v CHAOS_RATE=%v", opts.Duration, opts.Rate)}
		var text strings.Builder
		chaos.WriteReport(&text, meta, results, false)
		fmt.Println("\n" + text.String())
		f, err := os.Create(report) //nolint:gosec // G703: the path the user chose with CHAOS_REPORT
		if err != nil {
			t.Errorf("write the report: %v", err)
			return
		}
		defer f.Close()
		chaos.WriteReport(f, meta, results, true)
		fmt.Printf("report: %s\n", report)
		if ran == len(all) {
			checkSize(t, results)
		}
	})
	for _, sc := range all {
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			machine <- struct{}{}
			defer func() { <-machine }()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			res, err := chaos.Run(ctx, opts, sc)
			require.NoError(t, err)
			mu.Lock()
			results = append(results, res)
			ran++
			mu.Unlock()
			var b strings.Builder
			chaos.WriteReport(&b, chaos.ReportMeta{Started: res.Start, Elapsed: res.Duration, Duration: opts.Duration, Rate: opts.Rate},
				[]*chaos.Result{res}, false)
			t.Log(b.String())
			if !res.Passed() {
				t.Errorf("%s: see the violations above; the workers' logs are in %s", sc.Name, res.Dir)
			}
		})
	}
}

// checkSize fails a run too small to prove anything.
func checkSize(t *testing.T, results []*chaos.Result) {
	t.Helper()
	commands, faults := 0, 0
	for _, r := range results {
		if !r.Scenario.IsControl() {
			commands += r.Stats.Commands
			faults += len(r.Faults)
		}
	}
	if minCommands := envInt(t, "CHAOS_MIN_COMMANDS"); commands < minCommands {
		t.Errorf("the scenarios sent %d commands, fewer than CHAOS_MIN_COMMANDS=%d", commands, minCommands)
	}
	if minFaults := envInt(t, "CHAOS_MIN_FAULTS"); faults < minFaults {
		t.Errorf("the scenarios injected %d faults, fewer than CHAOS_MIN_FAULTS=%d", faults, minFaults)
	}
}

// sortLike orders results as their scenarios are in order.
func sortLike(results []*chaos.Result, order []*chaos.Scenario) {
	pos := map[*chaos.Scenario]int{}
	for i, sc := range order {
		pos[sc] = i
	}
	for i := 1; i < len(results); i++ {
		for j := i; j > 0 && pos[results[j].Scenario] < pos[results[j-1].Scenario]; j-- {
			results[j], results[j-1] = results[j-1], results[j]
		}
	}
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, name)
	return d
}

func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, name)
	return v
}

// envInt reads a count, 0 when unset.
func envInt(t *testing.T, name string) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return 0
	}
	v, err := strconv.Atoi(s)
	require.NoError(t, err, name)
	return v
}
