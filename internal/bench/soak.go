package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/testenv"
)

// Defaults of SoakConfig.
const (
	SoakDurationDefault  = 5 * time.Minute
	SoakIntervalDefault  = 10 * time.Second
	SoakPeakCountDefault = 5000
	// SoakResultTTLDefault is the worker's RESULT_TTL during a soak unless
	// SoakConfig.ResultTTL says otherwise: long enough to outlive the
	// dedupe window, short enough that Redis and RESULTS reach a steady
	// size within the run instead of growing with every outcome kept for
	// 24h, which would hide the worker's own drift among the servers'.
	// The production retention (24h) is what a day of traffic costs:
	// docs/performance.md.
	SoakResultTTLDefault = 2 * time.Minute
	// soakDedupeWindow is the worker's DEDUPE_WINDOW during a soak.
	soakDedupeWindow = 30 * time.Second
)

// SoakConfig configures a Soak.
type SoakConfig struct {
	// Duration is how long the steady load runs. Defaults to 5m.
	Duration time.Duration
	// Interval is the time between samples. Defaults to 10s.
	Interval time.Duration
	// PeakCount is the commands of the quick peak measurement that sets
	// the rate (half of it). Defaults to 5000.
	PeakCount int
	// ResultTTL is the worker's RESULT_TTL. Defaults to 2m.
	ResultTTL time.Duration
	// ResultsMaxAge is the worker's RESULTS_MAX_AGE: how long RESULTS
	// keeps an outcome's message. 0: ResultTTL.
	ResultsMaxAge time.Duration
	// ClientInFlight, Durable, GoMaxProcs, WorkerBin and Progress are as in
	// Config.
	ClientInFlight int
	Durable        bool
	GoMaxProcs     int
	WorkerBin      string
	Progress       io.Writer
}

// WithDefaults returns a copy of c with every unset field set.
func (c *SoakConfig) WithDefaults() *SoakConfig {
	out := *c
	out.Duration = cmp.Or(out.Duration, SoakDurationDefault)
	out.Interval = cmp.Or(out.Interval, SoakIntervalDefault)
	out.PeakCount = cmp.Or(out.PeakCount, SoakPeakCountDefault)
	out.ResultTTL = cmp.Or(out.ResultTTL, SoakResultTTLDefault)
	out.ClientInFlight = cmp.Or(out.ClientInFlight, ClientInFlightDefault)
	if out.Progress == nil {
		out.Progress = io.Discard
	}
	return &out
}

// Validate reports the first invalid setting.
func (c *SoakConfig) Validate() error {
	switch {
	case c.Duration < time.Second:
		return fmt.Errorf("bench: soak duration must be at least 1s, got %v", c.Duration)
	case c.Interval < time.Second || c.Interval > c.Duration:
		return fmt.Errorf("bench: soak interval must be between 1s and the duration (%v), got %v", c.Duration, c.Interval)
	case c.PeakCount < 100 || c.PeakCount > load.MaxCount:
		return fmt.Errorf("bench: soak peak count must be between 100 and %d, got %d", load.MaxCount, c.PeakCount)
	case c.ClientInFlight < 1:
		return fmt.Errorf("bench: client in-flight must be at least 1, got %d", c.ClientInFlight)
	case c.ResultTTL < soakDedupeWindow:
		return fmt.Errorf("bench: soak result TTL must be at least the soak's dedupe window (%v), got %v", soakDedupeWindow, c.ResultTTL)
	case c.ResultsMaxAge != 0 && (c.ResultsMaxAge < soakDedupeWindow || c.ResultsMaxAge > c.ResultTTL):
		return fmt.Errorf("bench: soak results max age must be 0 or between the soak's dedupe window (%v) and the result TTL (%v), got %v", soakDedupeWindow, c.ResultTTL, c.ResultsMaxAge)
	}
	return nil
}

// SoakSample is one row of the soak table: the state at the end of one
// interval, and the load of that interval.
type SoakSample struct {
	// At is the time since the steady load started.
	At time.Duration `json:"at_ns"`
	// Commands is the keys answered in this interval; PerSecond their rate.
	Commands  int     `json:"commands"`
	PerSecond float64 `json:"commands_per_s"`
	Latency   Latency `json:"latency_ms"`
	// Failures counts sends without an answer or with disagreeing answers.
	Failures int `json:"failures"`
	// WorkerRSS (VmRSS) and Goroutines (from /metrics, 0 when not served).
	WorkerRSS  int64 `json:"worker_rss_bytes"`
	Goroutines int   `json:"worker_goroutines,omitempty"`
	// WorkerCPU is the worker's CPU time so far, of the steady load;
	// WorkerCPUPerCommand its growth over this interval's commands, in
	// microseconds.
	WorkerCPU           time.Duration `json:"worker_cpu_ns"`
	WorkerCPUPerCommand float64       `json:"worker_cpu_us_per_command"`
	// NATSRSS and RedisMemory (INFO used_memory) show the servers' growth.
	NATSRSS     int64 `json:"nats_rss_bytes,omitempty"`
	RedisMemory int64 `json:"redis_used_memory_bytes"`
	// NATSCPU and RedisCPU are the servers' CPU time so far, of the steady
	// load, and the PerCommand figures their growth over this interval's
	// commands: a server whose cost per command grows as its state does
	// shows here.
	NATSCPU            time.Duration `json:"nats_cpu_ns,omitempty"`
	RedisCPU           time.Duration `json:"redis_cpu_ns,omitempty"`
	NATSCPUPerCommand  float64       `json:"nats_cpu_us_per_command,omitempty"`
	RedisCPUPerCommand float64       `json:"redis_cpu_us_per_command,omitempty"`
}

// SoakReport is what a Soak measured.
type SoakReport struct {
	Setup []string `json:"setup"`
	// Peak is the quick peak measurement's keys per second; Rate the
	// steady rate, half of it.
	Peak    float64      `json:"peak_per_s"`
	Rate    float64      `json:"rate_per_s"`
	Samples []SoakSample `json:"samples"`
}

// Soak runs one worker (CONCURRENCY 64) under internal/load at half of a
// quick peak measurement for Duration, one load.Run per Interval, and
// samples the worker after each. It fails only when it cannot run; it
// never judges a drift.
func Soak(ctx context.Context, cfg *SoakConfig) (*SoakReport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &bencher{cfg: &Config{ClientInFlight: cfg.ClientInFlight, WorkerBin: cfg.WorkerBin, Progress: cfg.Progress}, started: time.Now()}
	b.progressf("starting nats-server and redis-server; building the worker")
	var err error
	if b.s, err = startServers(cfg.Durable, cfg.GoMaxProcs); err != nil { //nolint:contextcheck // testenv bounds each start by its own readiness wait; started before any work
		return nil, err
	}
	defer b.s.close() //nolint:contextcheck // the servers outlive ctx: Deployment.Close bounds its own stop
	if b.workerBin, err = b.worker(ctx); err != nil {
		return nil, err
	}
	ns := b.nextNamespace()
	// RESULT_TTL must cover the redelivery horizon (the worker checks):
	// a soak has no failures, so one try and a 30s duplicate window fit.
	w, err := startWorker(ctx, b.s.dir, b.workerBin, ns.workerEnv(b.s, workerSettings{Concurrency: e2eInFlight, ResultTTL: cfg.ResultTTL,
		ResultsMaxAge: cfg.ResultsMaxAge, MaxDeliver: 1, DedupeWindow: soakDedupeWindow}))
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Kill() }() // after Stop, a no-op

	rep := &SoakReport{Setup: append(slices.Clone(b.s.describe),
		fmt.Sprintf("Worker: %s, one process, CONCURRENCY=%d, RESULT_TTL=%v, RESULTS_MAX_AGE=%v, MAX_DELIVER=1, DEDUPE_WINDOW=%v", b.workerBin, e2eInFlight, cfg.ResultTTL, cmp.Or(cfg.ResultsMaxAge, cfg.ResultTTL), soakDedupeWindow),
		fmt.Sprintf("Load: internal/load's mix through pkg/client, %d in flight, one run per %v sample; %s", cfg.ClientInFlight, cfg.Interval, machine()))}

	peak, err := b.sendLoad(ctx, ns, cfg.PeakCount, 0, false)
	if err != nil {
		return nil, err
	}
	rep.Peak, rep.Rate = peak.CommandsPerSecond, peak.CommandsPerSecond/2
	b.progressf("peak: %d commands at %.0f/s; soaking at %.0f/s for %v, a sample every %v",
		peak.Commands, rep.Peak, rep.Rate, cfg.Duration, cfg.Interval)

	var cpu0 soakCPU
	if p, err := readProc(w.Pid()); err == nil {
		cpu0.worker = p.CPU
	}
	if p, err := readProc(b.s.natsPid); err == nil {
		cpu0.nats = p.CPU
	}
	if p, err := readProc(b.s.redisPid); err == nil {
		cpu0.redis = p.CPU
	}
	start := time.Now()
	rep.Samples = append(rep.Samples, b.soakSample(ctx, w, 0, cpu0))
	perRun := max(1, int(rep.Rate*cfg.Interval.Seconds()))
	for time.Since(start) < cfg.Duration {
		if ctx.Err() != nil {
			break // interrupted: report what was sampled
		}
		sum, err := b.sendLoad(ctx, ns, perRun, rep.Rate, false)
		if err != nil {
			return nil, err
		}
		s := b.soakSample(ctx, w, time.Since(start), cpu0)
		s.Commands, s.PerSecond = len(sum.Outcomes), sum.CommandsPerSecond
		s.Latency = Latency{P50: ms(sum.Latency.P50), P95: ms(sum.Latency.P95), P99: ms(sum.Latency.P99)}
		for _, n := range sum.Errors {
			s.Failures += n
		}
		s.Failures += len(sum.Disagreeing)
		if prev := rep.Samples[len(rep.Samples)-1]; s.Commands > 0 {
			perCommand := func(now, before time.Duration) float64 {
				return float64((now - before).Microseconds()) / float64(s.Commands)
			}
			s.WorkerCPUPerCommand = perCommand(s.WorkerCPU, prev.WorkerCPU)
			s.NATSCPUPerCommand = perCommand(s.NATSCPU, prev.NATSCPU)
			s.RedisCPUPerCommand = perCommand(s.RedisCPU, prev.RedisCPU)
		}
		rep.Samples = append(rep.Samples, s)
		b.progressf("%7s  %5d commands  %6.0f/s  p99 %6.1fms  worker RSS %6.1f MiB  goroutines %s",
			s.At.Round(time.Second), s.Commands, s.PerSecond, s.Latency.P99, mib(s.WorkerRSS), intOrDash(s.Goroutines))
	}
	if err := w.Stop(ctx); err != nil {
		return nil, err
	}
	return rep, nil
}

// soakCPU is the CPU time of the worker and the servers when the steady
// load started.
type soakCPU struct{ worker, nats, redis time.Duration }

func (b *bencher) soakSample(ctx context.Context, w *testenv.ProcessWorker, at time.Duration, cpu0 soakCPU) SoakSample {
	s := SoakSample{At: at}
	if p, err := readProc(w.Pid()); err == nil {
		s.WorkerRSS, s.WorkerCPU = p.RSS, p.CPU-cpu0.worker
	}
	s.Goroutines, _ = goroutines(ctx, w)
	if p, err := readProc(b.s.natsPid); err == nil {
		s.NATSRSS, s.NATSCPU = p.RSS, p.CPU-cpu0.nats
	}
	if p, err := readProc(b.s.redisPid); err == nil {
		s.RedisCPU = p.CPU - cpu0.redis
	}
	if info, err := b.s.rdb.Info(ctx, "memory").Result(); err == nil {
		s.RedisMemory = infoInt(info, "used_memory")
	}
	return s
}

// WriteTable writes the setup, a row per sample and the drift between the
// first and the last sample.
func (r *SoakReport) WriteTable(w io.Writer) {
	for _, line := range r.Setup {
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "peak %.0f commands/s; steady rate %.0f/s (half)\n\n", r.Peak, r.Rate)
	rows := make([][]string, 0, 1+len(r.Samples))
	rows = append(rows, []string{"at", "cmds", "cmd/s", "p50ms", "p95ms", "p99ms", "failures", "worker RSS MiB", "goroutines", "worker cpu us/cmd", "nats cpu us/cmd", "redis cpu us/cmd", "nats RSS MiB", "redis used MiB"})
	for _, s := range r.Samples {
		row := make([]string, 0, len(rows[0]))
		row = append(row, s.At.Round(time.Second).String())
		if s.At == 0 {
			// The state before the steady load: no load figures yet.
			row = append(row, "-", "-", "-", "-", "-", "-")
		} else {
			row = append(row, itoa(s.Commands), fmt.Sprintf("%.0f", s.PerSecond), fmt.Sprintf("%.1f", s.Latency.P50),
				fmt.Sprintf("%.1f", s.Latency.P95), fmt.Sprintf("%.1f", s.Latency.P99), itoa(s.Failures))
		}
		row = append(row, fmt.Sprintf("%.1f", mib(s.WorkerRSS)), intOrDash(s.Goroutines))
		if s.At == 0 {
			row = append(row, "-", "-", "-")
		} else {
			row = append(row, fmt.Sprintf("%.0f", s.WorkerCPUPerCommand), fmt.Sprintf("%.0f", s.NATSCPUPerCommand),
				fmt.Sprintf("%.0f", s.RedisCPUPerCommand))
		}
		rows = append(rows, append(row, fmt.Sprintf("%.1f", mib(s.NATSRSS)), fmt.Sprintf("%.1f", mib(s.RedisMemory))))
	}
	writeAligned(w, rows)
	if len(r.Samples) < 2 {
		return
	}
	first, last := r.Samples[0], r.Samples[len(r.Samples)-1]
	fmt.Fprintf(w, "\ndrift from %v to %v (measured, not judged):\n", first.At.Round(time.Second), last.At.Round(time.Second))
	fmt.Fprintf(w, "  worker RSS      %s\n", drift(mib(first.WorkerRSS), mib(last.WorkerRSS), "MiB"))
	if first.Goroutines > 0 && last.Goroutines > 0 {
		fmt.Fprintf(w, "  goroutines      %s\n", drift(float64(first.Goroutines), float64(last.Goroutines), ""))
	} else {
		fmt.Fprintln(w, "  goroutines      - (the worker serves no /metrics on METRICS_ADDR)")
	}
	fmt.Fprintf(w, "  nats-server RSS %s\n", drift(mib(first.NATSRSS), mib(last.NATSRSS), "MiB"))
	fmt.Fprintf(w, "  redis memory    %s\n", drift(mib(first.RedisMemory), mib(last.RedisMemory), "MiB"))
	p99s := make([]float64, 0, len(r.Samples))
	for _, s := range r.Samples[1:] {
		p99s = append(p99s, s.Latency.P99)
	}
	sp := spreadOf(p99s)
	fmt.Fprintf(w, "  worker cpu/cmd  %s\n", drift(r.Samples[1].WorkerCPUPerCommand, last.WorkerCPUPerCommand, "us"))
	fmt.Fprintf(w, "  nats cpu/cmd    %s\n", drift(r.Samples[1].NATSCPUPerCommand, last.NATSCPUPerCommand, "us"))
	fmt.Fprintf(w, "  redis cpu/cmd   %s\n", drift(r.Samples[1].RedisCPUPerCommand, last.RedisCPUPerCommand, "us"))
	fmt.Fprintf(w, "  p99 latency     first %.1fms, last %.1fms (min %.1f, median %.1f, max %.1f over the samples)\n",
		r.Samples[1].Latency.P99, last.Latency.P99, sp.Min, sp.Median, sp.Max)
}

func drift(first, last float64, unit string) string {
	d := last - first
	pct := ""
	if first != 0 {
		pct = fmt.Sprintf(" (%+.1f%%)", 100*d/first)
	}
	return fmt.Sprintf("%.1f -> %.1f %s: %+.1f%s", first, last, unit, d, pct)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func intOrDash(n int) string {
	if n <= 0 {
		return "-"
	}
	return itoa(n)
}

// WriteJSON writes r as indented JSON.
func (r *SoakReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
