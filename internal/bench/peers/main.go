package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
)

// cli is the command line: the comparison (run, the default) and one
// system's worker (work, which the comparison starts as a child process).
type cli struct {
	Run  runCmd  `cmd:"" default:"withargs" help:"Run the job on every --systems, --runs times, and print the table."`
	Work workCmd `cmd:"" hidden:"" help:"Run one system's worker until SIGTERM (started by run)."`
}

type runCmd struct {
	Count        int           `default:"30000" help:"Keys charged per run; every key is sent once, plus --resend-share re-sends."`
	ResendShare  float64       `default:"0.2" help:"Re-sends of keys already sent, as a share of --count: half racing the original (one of the last 32 keys), half late (one of the first half)."`
	InFlight     int           `default:"64" help:"Concurrent senders, and the worker's concurrency."`
	Runs         int           `default:"3" help:"Runs per system; the table gives min/median/max."`
	Systems      []string      `default:"bare,idempay,river,asynq,watermill-mem,watermill-redis" help:"Systems to run, in order: ${systems}."`
	RiverDefault bool          `help:"Also run River with its default FetchCooldown (100ms)."`
	PG           string        `default:"postgres://root@127.0.0.1:5432/postgres?sslmode=disable" env:"PEERS_PG" help:"A PostgreSQL server River may create its database on (idempay_peers)."`
	FailureRate  float64       `default:"0" help:"Share of provider calls (0-1) that fail transiently before charging, in every system's worker: who retries, and who loses the key."`
	Timeout      time.Duration `default:"5m" help:"Longest a run may take before it is reported unfinished."`
	Worker       string        `help:"idempay worker binary to measure instead of building ./cmd/worker."`
	JSON         string        `help:"Also write the runs as JSON to this file."`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func run() error {
	var c cli
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx := kong.Parse(&c, kong.Name("peers"),
		kong.Description("The same charge job on idempay and its peers (River, asynq, Watermill) and the bare JetStream consumer, on this machine, in one run."),
		kong.Vars{"systems": systemNames()}, kong.UsageOnError(), kong.BindTo(ctx, (*context.Context)(nil)))
	return kctx.Run(ctx)
}

func (r *runCmd) Validate() error {
	switch {
	case r.Count < 1:
		return fmt.Errorf("--count must be at least 1, got %d", r.Count)
	case r.ResendShare < 0 || r.ResendShare > 1:
		return fmt.Errorf("--resend-share must be within 0-1, got %v", r.ResendShare)
	case r.InFlight < 1:
		return fmt.Errorf("--in-flight must be at least 1, got %d", r.InFlight)
	case r.FailureRate < 0 || r.FailureRate >= 1:
		return fmt.Errorf("--failure-rate must be within 0-1 (1 excluded), got %v", r.FailureRate)
	case r.Runs < 1:
		return fmt.Errorf("--runs must be at least 1, got %d", r.Runs)
	}
	for _, s := range r.Systems {
		if _, ok := systems[s]; !ok {
			return fmt.Errorf("--systems: unknown system %q (known: %s)", s, systemNames())
		}
	}
	return nil
}
