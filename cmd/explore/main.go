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
// violation found, 2 usage error, 3 the harness could not run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/idempay/idempay/internal/explore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// cli is the command line.
type cli struct {
	Seed      uint64 `name:"seed" env:"EXPLORE_SEED" help:"Play this one seed (a replay): the same as --first-seed N --seeds 1. 0 (the default): play --seeds seeds from --first-seed."`
	FirstSeed uint64 `name:"first-seed" env:"EXPLORE_FIRST_SEED" default:"1" help:"The first seed played."`
	Seeds     int    `name:"seeds" env:"EXPLORE_SEEDS" default:"200" help:"How many seeds to play, from --first-seed."`
	Keys      int    `name:"keys" env:"EXPLORE_KEYS" default:"100" help:"Keys of each seed (charges and refunds). A seed's first keys have the same plan whatever --keys is."`
	Parallel  int    `name:"parallel" env:"EXPLORE_PARALLEL" default:"4" help:"Seeds played at once on the shared servers (a seed mostly waits)."`
	Report    string `name:"report" env:"EXPLORE_REPORT" placeholder:"FILE" help:"Also write the Markdown report to FILE."`
}

// errFound: the run found a violation (exit status 1).
var errFound = errors.New("violations found")

func (c *cli) Run(ctx context.Context, out *streams) error {
	cfg := &explore.Config{FirstSeed: c.FirstSeed, Seeds: c.Seeds, Keys: c.Keys, Parallel: c.Parallel}
	if c.Seed != 0 {
		cfg.FirstSeed, cfg.Seeds, cfg.Parallel = c.Seed, 1, 1
	}
	fmt.Fprintf(out.stderr, "explore: %d seeds from %d, %d keys each, %d at a time\n", cfg.Seeds, cfg.FirstSeed, cfg.Keys, cfg.Parallel)
	cfg.Progress = func(done, total int, s *explore.SeedResult) {
		fmt.Fprintf(out.stderr, "[%d/%d] %s\n", done, total, s.Line())
	}
	sum, err := explore.Run(ctx, cfg)
	if sum == nil {
		return harnessError{err}
	}
	var report strings.Builder
	sum.WriteMarkdown(&report, engineVersion(ctx))
	fmt.Fprint(out.stdout, report.String())
	if c.Report != "" {
		if werr := os.WriteFile(c.Report, []byte(report.String()), 0o600); werr != nil {
			return fmt.Errorf("--report: %w", werr)
		}
		fmt.Fprintf(out.stderr, "explore: report written to %s\n", c.Report)
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

// streams are where the command writes: the report to stdout, progress
// and violations to stderr.
type streams struct{ stdout, stderr io.Writer }

// exitRequest carries kong's exit (after --help) through a panic, so that
// run returns instead of the process exiting inside the parser.
type exitRequest int

// run parses args (without the program name) and runs the explorer.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("explore"),
		kong.Description("The fault explorer: plays seeds of provider faults, worker crashes and pauses, and client re-sends against the real engine "+
			"(several processors sharing one consumer) on its own NATS and Redis, then checks every key's answers against the provider's ledger. "+
			"A seed's schedule is the same on every run: replay a finding with --seed N (make explore SEED=N). "+
			"Go-style -flag spellings (-seed 17) work too. Exit status: 0 nothing found, 1 violations found, 2 usage error, 3 harness error."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitRequest(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: false}),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&streams{stdout: stdout, stderr: stderr}),
	)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitRequest)
			if !ok {
				panic(r)
			}
			if code != 0 {
				err = errUsage
			}
		}
	}()
	kctx, err := parser.Parse(goFlags(args))
	if err != nil {
		return usageError{err}
	}
	return kctx.Run()
}

// goFlags rewrites Go-style long flags with one dash (-seed 17) to kong's
// two, up to a "--". Single letters (-h) are left alone.
func goFlags(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, _ := strings.Cut(a, "=")
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 2 {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

var errUsage = errors.New("usage error")

type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

type harnessError struct{ err error }

func (e harnessError) Error() string { return "the harness could not run: " + e.err.Error() }
func (e harnessError) Unwrap() error { return e.err }

// exitCode maps run's error to the exit status; errors are printed.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errFound):
		return 1
	}
	if ue, ok := errors.AsType[usageError](err); ok {
		fmt.Fprintf(stderr, "explore: error: %v (see explore --help)\n", ue.err)
		return 2
	}
	fmt.Fprintf(stderr, "explore: error: %v\n", err)
	if _, ok := errors.AsType[harnessError](err); ok {
		return 3
	}
	return 1
}
