package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/idempay/idempay/internal/testenv"
)

// Defaults of Config.
const (
	CountDefault          = 30_000
	RoundsDefault         = 3
	ClientInFlightDefault = 128
	// InFlightDefault is the in-flight limit of the headline pair: the bare
	// consumer's slots and the worker's CONCURRENCY, the same on both sides.
	// At 64 a worker's five sequential round trips per command leave the
	// CPU partly idle; 128 keeps it busy (the 64 row is measured too).
	InFlightDefault = 128

	// ShortCount and ShortRounds size the CI variant (-short).
	ShortCount  = 1000
	ShortRounds = 1
)

// Config configures a Run.
type Config struct {
	// Count is the commands of every scenario: the preload of a drain, the
	// keys of an end-to-end run. Defaults to 30000.
	Count int
	// Rounds is how often the headline pair (ceiling, then payment.charge
	// at InFlight) is repeated. Defaults to 3.
	Rounds int
	// InFlight is the headline pair's in-flight limit. Defaults to 128.
	InFlight int
	// ClientInFlight is the end-to-end client's commands in flight
	// (load.Config.Concurrency): twice the worker's, so the worker always
	// has work queued while answers travel back. Defaults to 128.
	ClientInFlight int
	// Durable runs the servers with the README's production settings
	// (JetStream sync_interval always, Redis AOF appendfsync always)
	// instead of their defaults.
	Durable bool
	// GoMaxProcs, when above 0, is GOMAXPROCS for every Go process of the
	// run alike: nats-server, the workers, the gateway and this process
	// (the bare consumer, the end-to-end client). 0 leaves each at Go's
	// default (the CPU count).
	GoMaxProcs int
	// WorkerBin is a worker binary to measure; empty builds ./cmd/worker
	// of this module.
	WorkerBin string
	// CPUProfileDir, when set, receives a CPU profile of the (first) worker
	// during each drain, taken from its /debug/pprof/profile for
	// CPUProfileSeconds, as <scenario>.pprof (for go tool pprof).
	CPUProfileDir string
	// CPUProfileSeconds is how long each profile runs. Defaults to 3.
	CPUProfileSeconds int
	// HeadlineOnly runs only the headline pair's rounds: a quick way to
	// compare two builds (WorkerBin) or settings.
	HeadlineOnly bool
	// Progress receives a line per scenario; nil discards them.
	Progress io.Writer
}

// WithDefaults returns a copy of c with every unset field set.
func (c *Config) WithDefaults() *Config {
	out := *c
	out.Count = cmp.Or(out.Count, CountDefault)
	out.Rounds = cmp.Or(out.Rounds, RoundsDefault)
	out.InFlight = cmp.Or(out.InFlight, InFlightDefault)
	out.ClientInFlight = cmp.Or(out.ClientInFlight, ClientInFlightDefault)
	out.CPUProfileSeconds = cmp.Or(out.CPUProfileSeconds, 3)
	if out.Progress == nil {
		out.Progress = io.Discard
	}
	return &out
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.Count < 2:
		return fmt.Errorf("bench: count must be at least 2, got %d", c.Count)
	case c.Count > 1_000_000:
		return fmt.Errorf("bench: count must be at most 1000000, got %d", c.Count)
	case c.InFlight < 1 || c.InFlight > 4096:
		return fmt.Errorf("bench: in-flight must be 1 to 4096, got %d", c.InFlight)
	case c.Rounds < 1:
		return fmt.Errorf("bench: rounds must be at least 1, got %d", c.Rounds)
	case c.ClientInFlight < 1:
		return fmt.Errorf("bench: client in-flight must be at least 1, got %d", c.ClientInFlight)
	case c.GoMaxProcs < 0:
		return fmt.Errorf("bench: GOMAXPROCS must be 0 (Go's default) or more, got %d", c.GoMaxProcs)
	}
	return nil
}

// bencher is one Run's state.
type bencher struct {
	cfg        *Config
	s          *servers
	workerBin  string
	gatewayBin string // built on first use
	// apiKeyFile and apiKeySecret are the gateway's key file and the
	// tenant's secret, for the runs with authentication (written on first
	// use).
	apiKeyFile, apiKeySecret string
	seq                      int
	// step and steps number the progress lines.
	step, steps int
	started     time.Time
}

func (b *bencher) nextNamespace() *namespace {
	b.seq++
	return newNamespace(b.seq)
}

// Run starts the servers, runs every scenario once (the headline pair
// Rounds times) and returns what it measured. It fails when a scenario
// cannot complete; it never judges a speed.
func Run(ctx context.Context, cfg *Config) (*Report, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &bencher{cfg: cfg, started: time.Now()}
	b.progressf("starting nats-server and redis-server; building the worker")
	var err error
	if b.s, err = startServers(cfg.Durable, cfg.GoMaxProcs); err != nil { //nolint:contextcheck // testenv bounds each start by its own readiness wait; started before any work
		return nil, err
	}
	defer b.s.close() //nolint:contextcheck // the servers outlive ctx: Deployment.Close bounds its own stop
	if b.workerBin, err = b.worker(ctx); err != nil {
		return nil, err
	}

	headline := cfg.InFlight
	rep := &Report{Rounds: cfg.Rounds, HeadlineInFlight: headline}
	rep.Setup = append(rep.Setup, b.s.describe...)
	rep.Setup = append(rep.Setup,
		fmt.Sprintf("Worker: %s, one process per worker, CONCURRENCY as shown, the servers' and worker's defaults otherwise", b.workerBin),
		fmt.Sprintf("Load: %d commands per scenario; headline pair repeated %d times; end to end through pkg/client with %d in flight, in this process; %s",
			cfg.Count, cfg.Rounds, cfg.ClientInFlight, machine()))

	type drainCase struct {
		kind              string
		inFlight, workers int
	}
	drains := []drainCase{
		{kindCharge, 1, 1}, {kindCharge, 16, 1},
		{kindCart, 1, 1}, {kindCart, 16, 1}, {kindCart, 64, 1}, {kindCart, headline, 1},
		{kindCharge, 64, 2}, {kindCharge, headline, 2},
	}
	if headline != 64 {
		drains = append(drains, drainCase{kindCharge, 64, 1})
	}
	drains = uniqueDrains(drains)
	b.steps = 3*cfg.Rounds + len(drains) + 6
	if cfg.HeadlineOnly {
		b.steps = 3 * cfg.Rounds
	}

	var ceilings, ratios, floors, overFloor []float64
	for round := 1; round <= cfg.Rounds; round++ {
		c, err := b.measure(ctx, fmt.Sprintf("round %d: ceiling", round), func() (*Result, error) { return b.ceiling(ctx, round, headline) })
		if err != nil {
			return nil, err
		}
		c.Ratio = 1
		fl, err := b.measure(ctx, fmt.Sprintf("round %d: floor", round), func() (*Result, error) { return b.floor(ctx, round, headline) })
		if err != nil {
			return nil, err
		}
		fl.Ratio = fl.PerSecond / c.PerSecond
		w, err := b.measure(ctx, fmt.Sprintf("round %d: payment.charge @%d", round, headline), func() (*Result, error) {
			return b.drain(ctx, kindCharge, headline, 1, round)
		})
		if err != nil {
			return nil, err
		}
		w.Ratio = w.PerSecond / c.PerSecond
		ceilings, ratios = append(ceilings, c.PerSecond), append(ratios, w.Ratio)
		floors, overFloor = append(floors, fl.Ratio), append(overFloor, w.PerSecond/fl.PerSecond)
		for _, r := range []*Result{c, fl, w} {
			r.Name = fmt.Sprintf("%s (round %d)", r.Name, round)
		}
		rep.Results = append(rep.Results, *c, *fl, *w)
	}
	rep.Ceiling, rep.Ratio = spreadOf(ceilings), spreadOf(ratios)
	rep.Floor, rep.OverFloor = spreadOf(floors), spreadOf(overFloor)
	if cfg.HeadlineOnly {
		rep.Seconds = time.Since(b.started).Seconds()
		return rep, nil
	}

	var others []*Result
	var clientPeak *Result
	for _, d := range drains {
		r, err := b.measure(ctx, fmt.Sprintf("%s @%d, %d worker(s)", d.kind, d.inFlight, d.workers), func() (*Result, error) {
			return b.drain(ctx, d.kind, d.inFlight, d.workers, 0)
		})
		if err != nil {
			return nil, err
		}
		others = append(others, r)
	}
	for _, dup := range []bool{false, true} {
		label := "e2e"
		if dup {
			label = "e2e 20% dup"
		}
		peak, err := b.measure(ctx, label+" at peak", func() (*Result, error) {
			return b.e2e(ctx, e2eRun{name: label + " peak", duplicates: dup})
		})
		if err != nil {
			return nil, err
		}
		half, err := b.measure(ctx, label+" at half the peak", func() (*Result, error) {
			return b.e2e(ctx, e2eRun{name: label + " half", rate: peak.PerSecond / 2, duplicates: dup})
		})
		if err != nil {
			return nil, err
		}
		others = append(others, peak, half)
		if !dup {
			clientPeak = peak
		}
	}
	// The gateway's overhead: the same peak, as HTTP requests, without
	// authentication and with API keys (the default), one after the other.
	open, err := b.measure(ctx, "e2e via gateway at peak, no auth", func() (*Result, error) {
		return b.e2eGateway(ctx, "e2e peak via gateway, no auth", false)
	})
	if err != nil {
		return nil, err
	}
	gw, err := b.measure(ctx, "e2e via gateway at peak, API key", func() (*Result, error) {
		return b.e2eGateway(ctx, "e2e peak via gateway, API key", true)
	})
	if err != nil {
		return nil, err
	}
	gr, ar := gw.PerSecond/clientPeak.PerSecond, gw.PerSecond/open.PerSecond
	open.Notes = append(open.Notes, fmt.Sprintf("%.3f of e2e peak (through pkg/client) in this run", open.PerSecond/clientPeak.PerSecond))
	gw.Notes = append(gw.Notes, fmt.Sprintf("%.3f of e2e peak (through pkg/client), %.3f of the gateway without auth, in this run", gr, ar))
	rep.GatewayRatio, rep.GatewayAuthRatio, rep.GatewayPairs = &Spread{Min: gr, Median: gr, Max: gr}, &Spread{Min: ar, Median: ar, Max: ar}, 1
	others = append(others, open, gw)
	for _, r := range others {
		r.Ratio = r.PerSecond / rep.Ceiling.Median
		rep.Results = append(rep.Results, *r)
	}
	rep.Seconds = time.Since(b.started).Seconds()
	return rep, nil
}

// uniqueDrains drops repeated cases, keeping the first.
func uniqueDrains[T comparable](cases []T) []T {
	seen := map[T]bool{}
	out := cases[:0]
	for _, c := range cases {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// measure runs one scenario and prints its progress line.
func (b *bencher) measure(ctx context.Context, what string, f func() (*Result, error)) (*Result, error) {
	b.step++
	start := time.Now()
	r, err := f()
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = fmt.Errorf("interrupted during %s", what)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	b.progressf("[%2d/%d] %-40s %6d commands in %6.2fs: %7.0f/s (scenario %.1fs)",
		b.step, b.steps, what, r.Commands, r.Seconds, r.PerSecond, time.Since(start).Seconds())
	return r, nil
}

func (b *bencher) progressf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Progress, "bench: "+format+"\n", args...)
}

// worker returns the worker binary: Config.WorkerBin, or a fresh build of
// ./cmd/worker in the servers' temporary directory.
func (b *bencher) worker(ctx context.Context) (string, error) {
	if b.cfg.WorkerBin != "" {
		if _, err := os.Stat(b.cfg.WorkerBin); err != nil {
			return "", fmt.Errorf("bench: worker binary: %w", err)
		}
		return b.cfg.WorkerBin, nil
	}
	return testenv.BuildCommand(ctx, b.s.dir, "worker")
}
