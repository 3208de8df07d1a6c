// Command bench measures idempay against the bare JetStream ceiling on this
// machine, in one run: it starts its own nats-server and redis-server,
// builds and runs the real worker binary, and prints a table whose last
// line is throughput_ratio=<payment.charge at 64 in flight / ceiling>.
//
//	bench                 # the full run (make bench): 30000 commands per scenario, 3 rounds
//	bench -short          # the CI-sized run (make bench/short), under a minute
//	bench soak            # 5 minutes at a steady rate, sampling the worker (make soak)
//	bench gateway         # the HTTP gateway against pkg/client, end to end (make bench/gateway)
//	bench --help          # every flag and its environment variable
//
// Go-style single-dash flags (-short, -count=1000) are accepted as well as
// --short. Exit status: 0 measured, 1 a scenario could not run, 64 usage
// error, as in every idempay program. No speed is ever a failure.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/alecthomas/kong"

	"github.com/idempay/idempay/internal/bench"
	"github.com/idempay/idempay/internal/cli"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(exitCode(err, os.Stderr))
}

// grammar is the command line: the benchmark (the default command), soak
// and gateway.
type grammar struct {
	cli.Common

	Run     runCmd     `cmd:"" default:"withargs" help:"Measure the bare JetStream ceiling, the worker draining a preload at CONCURRENCY 1, 16 and 64, and the end-to-end path, and print the table (the default command)."`
	Soak    soakCmd    `cmd:"" help:"Run an end-to-end load at half of a quick peak for --duration and sample the worker's RSS and goroutines every --interval."`
	Gateway gatewayCmd `cmd:"" help:"Measure the HTTP gateway's overhead: the end-to-end peak through pkg/client, then through ./cmd/gateway without authentication, then with an API key, --rounds times; gateway_auth_ratio=<with / without authentication>, then, last, gateway_ratio=<gateway with API keys / pkg/client>."`
}

// shared are the flags both commands take.
type shared struct {
	JSON           string `name:"json" placeholder:"FILE" help:"Also write the results as JSON to FILE."`
	Durable        bool   `name:"durable" env:"BENCH_DURABLE" help:"Run the servers with the production settings of deploy/ and docs/guarantees.md (JetStream sync_interval always, Redis AOF appendfsync always) instead of their defaults."`
	Worker         string `name:"worker" env:"BENCH_WORKER" placeholder:"PATH" help:"Measure this worker binary instead of building ./cmd/worker."`
	ClientInFlight int    `name:"client-in-flight" env:"BENCH_CLIENT_IN_FLIGHT" default:"128" help:"Commands the end-to-end client keeps in flight."`
	GoMaxProcs     int    `name:"gomaxprocs" env:"BENCH_GOMAXPROCS" default:"0" help:"GOMAXPROCS for every Go process of the run alike: nats-server, the workers, the gateway, and this one (the bare consumer, the client); 0 leaves Go's default, the CPU count. On a small host the three share, 1 is faster for all of them."`
}

func (s *shared) validate() error {
	if s.ClientInFlight < 1 {
		return fmt.Errorf("--client-in-flight must be at least 1, got %d", s.ClientInFlight)
	}
	if s.GoMaxProcs < 0 {
		return fmt.Errorf("--gomaxprocs (BENCH_GOMAXPROCS) must be 0 (Go's default) or more, got %d", s.GoMaxProcs)
	}
	return nil
}

// report is what a command measured: a *bench.Report or *bench.SoakReport.
type report interface {
	WriteJSON(w io.Writer) error
	WriteTable(w io.Writer)
}

// write writes rep to the --json file, if one is named, then its table to
// stdout.
func (s *shared) write(rep report, out *streams) error {
	if err := s.writeJSON(rep.WriteJSON); err != nil {
		return err
	}
	rep.WriteTable(out.stdout)
	return nil
}

func (s *shared) writeJSON(write func(io.Writer) error) error {
	if s.JSON == "" {
		return nil
	}
	f, err := os.Create(s.JSON)
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("--json: %w", err)
	}
	return f.Close()
}

type runCmd struct {
	Count             int    `name:"count" env:"BENCH_COUNT" help:"Commands per scenario: the preload of every drain, the keys of every end-to-end run (default 30000; 1000 with --short)."`
	Rounds            int    `name:"rounds" env:"BENCH_ROUNDS" help:"How often the headline rounds (the ceiling, the floor, then payment.charge at --in-flight, each on a fresh preload) are repeated; the table gives min/median/max of their ratios. 0 (the default) means 3, or 1 with --short."`
	InFlight          int    `name:"in-flight" env:"BENCH_IN_FLIGHT" default:"128" help:"In-flight limit of the headline rounds, the same for the bare consumer, the floor and the worker (CONCURRENCY); the 64 row is measured as well."`
	Short             bool   `name:"short" env:"BENCH_SHORT" help:"CI-sized run: every scenario with 1000 commands and one round, in well under a minute."`
	HeadlineOnly      bool   `name:"headline-only" help:"Run only the headline rounds (the ceiling, the floor, then payment.charge at --in-flight) for --rounds rounds: a quick comparison of two builds (--worker) or settings."`
	CPUProfile        string `name:"cpu-profile" placeholder:"DIR" type:"path" help:"Write a CPU profile of the worker during each drain to DIR/<scenario>.pprof (go tool pprof -top FILE), taken from its /debug/pprof for --cpu-profile-seconds."`
	CPUProfileSeconds int    `name:"cpu-profile-seconds" default:"3" help:"How long each --cpu-profile runs: at most a drain's length (30000 commands at 8000/s: under 4s)."`
	shared            `embed:""`
}

// Help is the detail of `bench --help`.
func (c *runCmd) Help() string {
	return `Scenarios, each on fresh streams and Redis keys: the bare JetStream ceiling (batched fetch, plain ack, --in-flight in flight) and the worker
draining the same preload of payment.charge at CONCURRENCY --in-flight (repeated --rounds times); payment.charge at 1, 16 and 64, cart.add at 1, 16,
64 and --in-flight; two worker processes; end to end through pkg/client at the peak rate and at half of it, without and with 20% duplicates.

For the soak (make soak): bench soak --help.`
}

func (c *runCmd) Validate() error {
	switch {
	case c.Count < 0 || c.Count == 1 || c.Count > 1_000_000:
		return fmt.Errorf("--count must be between 2 and 1000000, got %d", c.Count)
	case c.Rounds < 0:
		return fmt.Errorf("--rounds must be at least 1 (or 0 for the default), got %d", c.Rounds)
	}
	return c.validate()
}

func (c *runCmd) Run(ctx context.Context, out *streams) error {
	cfg := &bench.Config{Count: c.Count, Rounds: c.Rounds, InFlight: c.InFlight, ClientInFlight: c.ClientInFlight,
		Durable: c.Durable, GoMaxProcs: c.GoMaxProcs, WorkerBin: c.Worker, Progress: out.stderr,
		CPUProfileDir: c.CPUProfile, CPUProfileSeconds: c.CPUProfileSeconds, HeadlineOnly: c.HeadlineOnly}
	if c.CPUProfile != "" {
		if err := os.MkdirAll(c.CPUProfile, 0o750); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
	}
	if c.Short {
		if cfg.Count == 0 {
			cfg.Count = bench.ShortCount
		}
		if cfg.Rounds == 0 {
			cfg.Rounds = bench.ShortRounds
		}
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return c.write(rep, out)
}

type soakCmd struct {
	Duration      time.Duration `name:"duration" env:"SOAK_DURATION" default:"5m" help:"How long the steady load runs."`
	Interval      time.Duration `name:"interval" env:"SOAK_INTERVAL" default:"10s" help:"Time between samples of the worker."`
	PeakCount     int           `name:"peak-count" env:"SOAK_PEAK_COUNT" default:"5000" help:"Commands of the quick peak measurement; the soak runs at half its rate."`
	ResultTTL     time.Duration `name:"result-ttl" env:"SOAK_RESULT_TTL" default:"2m" help:"The worker's RESULT_TTL: 2m lets Redis and RESULTS reach a steady size within a short soak; 24h is the production retention, whose growth is what a day of traffic costs (docs/performance.md)."`
	ResultsMaxAge time.Duration `name:"results-max-age" env:"SOAK_RESULTS_MAX_AGE" default:"0s" help:"The worker's RESULTS_MAX_AGE (0: --result-ttl): how long RESULTS keeps an outcome's message."`
	shared        `embed:""`
}

func (c *soakCmd) Validate() error {
	switch {
	case c.Duration < time.Second:
		return fmt.Errorf("--duration (SOAK_DURATION) must be at least 1s, got %v", c.Duration)
	case c.Interval < time.Second || c.Interval > c.Duration:
		return fmt.Errorf("--interval (SOAK_INTERVAL) must be between 1s and --duration (%v), got %v", c.Duration, c.Interval)
	case c.PeakCount < 100:
		return fmt.Errorf("--peak-count must be at least 100, got %d", c.PeakCount)
	case c.ResultTTL < 30*time.Second:
		return fmt.Errorf("--result-ttl (SOAK_RESULT_TTL) must be at least the soak's dedupe window (30s), got %v", c.ResultTTL)
	case c.ResultsMaxAge != 0 && (c.ResultsMaxAge < 30*time.Second || c.ResultsMaxAge > c.ResultTTL):
		return fmt.Errorf("--results-max-age (SOAK_RESULTS_MAX_AGE) must be 0 or between the soak's dedupe window (30s) and --result-ttl (%v), got %v", c.ResultTTL, c.ResultsMaxAge)
	}
	return c.validate()
}

func (c *soakCmd) Run(ctx context.Context, out *streams) error {
	rep, err := bench.Soak(ctx, &bench.SoakConfig{Duration: c.Duration, Interval: c.Interval, PeakCount: c.PeakCount,
		ResultTTL: c.ResultTTL, ResultsMaxAge: c.ResultsMaxAge, ClientInFlight: c.ClientInFlight, Durable: c.Durable, GoMaxProcs: c.GoMaxProcs, WorkerBin: c.Worker, Progress: out.stderr})
	if err != nil {
		return err
	}
	return c.write(rep, out)
}

type gatewayCmd struct {
	Count  int `name:"count" env:"BENCH_COUNT" default:"10000" help:"Commands per scenario."`
	Rounds int `name:"rounds" env:"BENCH_ROUNDS" default:"3" help:"How often the triple (pkg/client, the gateway without authentication, with an API key) is measured; the table gives min/median/max of the ratios."`
	shared `embed:""`
}

func (c *gatewayCmd) Validate() error {
	switch {
	case c.Count < 2 || c.Count > 1_000_000:
		return fmt.Errorf("--count must be between 2 and 1000000, got %d", c.Count)
	case c.Rounds < 1:
		return fmt.Errorf("--rounds must be at least 1, got %d", c.Rounds)
	}
	return c.validate()
}

func (c *gatewayCmd) Run(ctx context.Context, out *streams) error {
	rep, err := bench.Gateway(ctx, &bench.GatewayConfig{Count: c.Count, Rounds: c.Rounds, ClientInFlight: c.ClientInFlight,
		Durable: c.Durable, GoMaxProcs: c.GoMaxProcs, WorkerBin: c.Worker, Progress: out.stderr})
	if err != nil {
		return err
	}
	return c.write(rep, out)
}

// streams are where a command writes: the table to stdout, progress to
// stderr. A struct, because kong binds Run's parameters by type and two
// io.Writers would be one.
type streams struct{ stdout, stderr io.Writer }

const description = "Measures idempay against the bare JetStream ceiling on this machine, in one run, on servers it starts " +
	"itself (nats-server built from go.mod's version, redis-server from PATH) and the real worker binary. " +
	"The table goes to stdout, its last line throughput_ratio=<payment.charge / ceiling, both at --in-flight>, the median over the rounds; " +
	"progress goes to stderr. Go-style -flag spellings (-short, -count=1000) work too. Nothing is judged: only measured.\n\n" +
	"Exit status: 0 measured, 1 a scenario could not run, 64 usage error."

// run parses args (without the program name), with env ("NAME=value"
// entries) supplying the flags' variables, and runs the command; the table
// goes to stdout, progress and errors to stderr.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var c grammar
	kctx, err := cli.Parse("bench", description, &c, helpOfRun(cli.GoFlags(args)), env, stdout, stderr,
		kong.ConfigureHelp(kong.HelpOptions{Compact: false}),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&streams{stdout: stdout, stderr: stderr}),
	)
	if err != nil {
		return err
	}
	return kctx.Run()
}

// helpOfRun makes a bare `bench --help` show the flags of run, the
// default command, which the root's help would only list as "run [flags]".
func helpOfRun(args []string) []string {
	help := false
	for _, a := range args {
		switch a {
		case "run", "soak", "gateway":
			return args
		case "-h", "--help":
			help = true
		}
	}
	if help {
		return append([]string{"run"}, args...)
	}
	return args
}

// exitCode maps run's error to the exit status: 0 ok, 64 usage error, 1
// anything else; errors are printed.
func exitCode(err error, stderr io.Writer) int {
	return cli.Exit("bench", err, stderr, func(error) (int, bool) { return 1, false })
}
