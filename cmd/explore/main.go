// Command explore is the fault explorer (make explore): it plays seeds of
// faults against the real engine on servers it starts itself - an
// in-process nats-server and a redis-server child - and checks every
// key's answers against the provider's ledger. See docs/explore.md.
//
//	explore                      # 200 seeds x 100 keys (make explore)
//	explore -seed 17             # replay seed 17 (make explore SEED=17)
//	explore -seed 17 -keys 300   # seed 17 with more keys
//	explore -seeds 20 -first-seed 1000
//
// Progress goes to stderr, a line per seed; the Markdown report to
// stdout (and --report FILE); every violation as one line with the
// command that replays its seed. Exit status: 0 nothing found, 1 a
// violation found, 3 the harness could not run, 64 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/explore"
	"github.com/idempay/idempay/pkg/messages"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(exitCode(err, os.Stderr))
}

// grammar is the command line.
type grammar struct {
	cli.Common

	Seed      uint64 `name:"seed" env:"EXPLORE_SEED" help:"Play this one seed (a replay): the same as --first-seed N --seeds 1 --parallel 1. 0 (the default): play --seeds seeds from --first-seed."`
	FirstSeed uint64 `name:"first-seed" env:"EXPLORE_FIRST_SEED" default:"1" help:"The first seed played."`
	Seeds     int    `name:"seeds" env:"EXPLORE_SEEDS" default:"200" help:"How many seeds to play, from --first-seed."`
	Keys      int    `name:"keys" env:"EXPLORE_KEYS" default:"100" help:"Keys of each seed (charges and refunds; two seeds in five add one cart.add per five keys after them). A seed's first keys have the same plan whatever --keys is."`
	Parallel  int    `name:"parallel" env:"EXPLORE_PARALLEL" default:"4" help:"Seeds played at once on the shared servers (a seed mostly waits)."`
	Report    string `name:"report" env:"EXPLORE_REPORT" placeholder:"FILE" help:"Also write the Markdown report to FILE."`
	Key       string `name:"key" env:"EXPLORE_KEY" placeholder:"UUID" help:"Print this key's whole history after the report: every send (through pkg/client or the gateway) and what it was told, every answer heard, dead-letter copy and provider call, in time order, then what RESULTS, its record and the provider hold. With --seed N: the story of a violation's key (each violation prints the command)."`
	LogLevel  string `name:"log-level" env:"EXPLORE_LOG_LEVEL" default:"off" enum:"off,error,warn,info,debug" help:"The workers' logs on stderr, each line with its seed, at this level and above: off (the default), error, warn, info or debug. For a replay (--seed N): how the violation came about, delivery by delivery."`
}

// Validate implements kong's validation hook: a usage error names the flag.
func (g *grammar) Validate() error {
	switch {
	case g.Seeds < 1:
		return fmt.Errorf("--seeds must be at least 1, got %d", g.Seeds)
	case g.Keys < 1 || g.Keys > 10_000:
		return fmt.Errorf("--keys must be between 1 and 10000, got %d", g.Keys)
	case g.Parallel < 1 || g.Parallel > 16:
		return fmt.Errorf("--parallel must be between 1 and 16, got %d", g.Parallel)
	case g.Key != "" && !messages.ValidKey(g.Key):
		return fmt.Errorf("--key %q is not a key (a UUID in canonical form, as the violations print them)", g.Key)
	}
	return nil
}

// Exit statuses besides 0 and cli.ExitUsage.
const (
	exitFound   = 1 // a violation found
	exitHarness = 3 // the harness could not run
)

// errFound: the run found a violation.
var errFound = errors.New("violations found")

// harnessError: the harness could not run (a server that would not start).
type harnessError struct{ err error }

func (e harnessError) Error() string { return "the harness could not run: " + e.err.Error() }
func (e harnessError) Unwrap() error { return e.err }

// streams are where the command writes: the report to stdout, progress
// and violations to stderr. A struct, because kong binds Run's parameters
// by type and two io.Writers would be one.
type streams struct{ stdout, stderr io.Writer }

func (g *grammar) Run(ctx context.Context, out *streams) error {
	cfg := &explore.Config{FirstSeed: g.FirstSeed, Seeds: g.Seeds, Keys: g.Keys, Parallel: g.Parallel, Logger: workerLogger(g.LogLevel, out.stderr), Key: g.Key}
	if g.Seed != 0 {
		cfg.FirstSeed, cfg.Seeds, cfg.Parallel = g.Seed, 1, 1
	}
	engine := engineVersion(ctx) // the tree as it is now, not after the run's minutes of edits
	fmt.Fprintf(out.stderr, "explore: %d seeds from %d, %d keys each, %d at a time, on %s\n", cfg.Seeds, cfg.FirstSeed, cfg.Keys, cfg.Parallel, engine)
	cfg.Progress = func(done, total int, s *explore.SeedResult) {
		fmt.Fprintf(out.stderr, "[%d/%d] %s\n", done, total, s.Line())
	}
	sum, err := explore.Run(ctx, cfg)
	if sum == nil {
		return harnessError{err}
	}
	var report strings.Builder
	sum.WriteMarkdown(&report, engine)
	fmt.Fprint(out.stdout, report.String())
	for _, r := range sum.Seeds {
		if len(r.History) > 0 {
			fmt.Fprintf(out.stdout, "\n## The history of key %s in seed %d\n\n", g.Key, r.Seed)
			for _, line := range r.History {
				fmt.Fprintf(out.stdout, "    %s\n", line)
			}
		}
	}
	if g.Report != "" {
		if werr := os.WriteFile(g.Report, []byte(report.String()), 0o600); werr != nil {
			return fmt.Errorf("--report: %w", werr)
		}
		fmt.Fprintf(out.stderr, "explore: report written to %s\n", g.Report)
	}
	if sum.Violations() > 0 {
		fmt.Fprintf(out.stderr, "\nexplore: %d violations; each with the command that replays its seed:\n", sum.Violations())
		sum.WriteViolations(out.stderr)
	}
	switch {
	case err != nil:
		return harnessError{err}
	case sum.Stopped:
		return errors.New("interrupted; the report covers the seeds that finished")
	case sum.Violations() > 0:
		return errFound
	}
	fmt.Fprintf(out.stderr, "explore: %d seeds, %d keys: no violation\n", len(sum.Seeds), sum.Keys())
	return nil
}

// engineVersion names the engine explored: the tree's git description.
func engineVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "this tree (git describe failed)"
	}
	return "this tree at " + strings.TrimSpace(string(out))
}

const description = "The fault explorer: plays seeds of provider faults, worker crashes and pauses, and client re-sends against the real engine " +
	"(several processors sharing one consumer) on its own NATS and Redis, then checks every key's answers against the provider's ledger. " +
	"A seed's schedule is the same on every run: replay a finding with --seed N (make explore SEED=N). " +
	"Go-style -flag spellings (-seed 17) work too.\n\n" +
	"Exit status: 0 nothing found, 1 violations found, 3 the harness could not run, 64 usage error."

// run parses args (without the program name), with env ("NAME=value"
// entries) supplying the flags' variables, and runs the explorer.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var g grammar
	kctx, err := cli.Parse("explore", description, &g, cli.GoFlags(args), env, stdout, stderr,
		kong.ConfigureHelp(kong.HelpOptions{Compact: false}),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&streams{stdout: stdout, stderr: stderr}),
	)
	if err != nil {
		return err
	}
	return kctx.Run()
}

// exitCode maps run's error to the exit status, printing it.
func exitCode(err error, stderr io.Writer) int {
	return cli.Exit("explore", err, stderr, func(err error) (int, bool) {
		switch {
		case errors.Is(err, errFound):
			return exitFound, true // every violation is printed already
		case errors.As(err, new(harnessError)):
			return exitHarness, false
		}
		return 1, false
	})
}

// workerLogger is the workers' logger for --log-level: nil when off.
func workerLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	switch level {
	case "error":
		l = slog.LevelError
	case "warn":
		l = slog.LevelWarn
	case "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	default:
		return nil
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
