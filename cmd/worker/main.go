// Command worker executes idempay commands: it pulls them from the shared
// durable JetStream consumer and runs each exactly once per idempotency key.
// Run as many as you like against one NATS and one Redis.
//
//	worker                      # nats://127.0.0.1:4222, redis://127.0.0.1:6379
//	worker --help               # every flag and its environment variable
//
// This main is the wiring: the operations idempay ships (package ops) on the
// provider the configuration names. A worker with other operations or a
// real provider is a main of the same shape; see examples/custom.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/autopipe"
	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/processor"
)

// gcPercent is the worker's GOGC unless the environment sets one: its live
// heap is small (about 20 MiB at 64 in flight), so collecting at 4x instead
// of 2x costs little memory and a measurable share of CPU per command.
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(cli.Exit("worker", err, os.Stderr, func(error) (int, bool) { return 1, false }))
}

const description = "Executes idempay commands from NATS JetStream exactly once per idempotency key.\n\n" +
	"Exit status: 0 after a clean stop (SIGTERM or SIGINT drain in-flight commands), " +
	"1 when it cannot start or keep running, 64 usage error."

// flags is the worker's command line. The names of CONTRACT.md come first.
type flags struct {
	cli.Common

	cli.NATSFlags
	cli.RedisFlags
	DedupeWindow    time.Duration `name:"dedupe-window" env:"DEDUPE_WINDOW" default:"2m" help:"JetStream duplicate window of the command stream: a re-publish of a key within it is dropped before any worker sees it. A worker sets it on an existing command stream too (with a warning naming the old value)."`
	ResultTTL       time.Duration `name:"result-ttl" env:"RESULT_TTL" default:"24h" help:"How long an outcome is kept after it was last answered, in Redis and in the results stream. A key retried later than this runs again. It must cover the longest time a command can still be delivered: --max-deliver x (--ack-wait + ${max_nak_delay}, the longest redelivery delay) + --dedupe-window (12m with the defaults)."`
	ResultsMaxAge   time.Duration `name:"results-max-age" env:"RESULTS_MAX_AGE" default:"0s" help:"How long the results stream keeps an outcome's message; 0 (the default): --result-ttl, as the contract has it. Between --dedupe-window and --result-ttl: shorter bounds nats-server's memory for the stream (one subject per outcome it keeps: docs/performance.md) while Redis keeps the outcome for --result-ttl; a duplicate inside the dedupe window still finds it in the stream, older outcomes are read by key from the workers' lookup service (pkg/client's Status does)."`
	AckWait         time.Duration `name:"ack-wait" env:"ACK_WAIT" default:"30s" help:"How long a delivery may go without ack or progress before JetStream redelivers it (the worker reports progress while an operation runs)."`
	MaxDeliver      int           `name:"max-deliver" env:"MAX_DELIVER" default:"10" help:"Tries a key gets before its command goes to the dead letters (dlq.<kind>); kept in the key's record when it is created. Deliveries that only find the key locked by another worker do not count."`
	ResolveAfter    time.Duration `name:"resolve-after" env:"RESOLVE_AFTER" default:"30s" help:"When workers first ask the provider about a key answered outcome_unknown, and the shortest wait between two asks (the waits grow to at most ten times it); the final outcome is published on result.<key>, or dead_lettered on rejected.<key>."`
	DeadLetterFence time.Duration `name:"dead-letter-fence" env:"DEAD_LETTER_FENCE" default:"1s" help:"How long past a dead letter a copy of its key reaching the command stream still ends as that dead letter instead of running as a re-drive: the notice's way out, a copy the client sent before it read the answer still on its way, and the clocks of workers and NATS servers. A re-drive sooner is answered dead_lettered again (certainly not done). Raise it for clients on slow links."`
	SimLatency      time.Duration `name:"sim-latency" env:"SIM_LATENCY" default:"0s" help:"Simulated payment provider: time one call takes."`
	SimFailureRate  float64       `name:"sim-failure-rate" env:"SIM_FAILURE_RATE" default:"0" help:"Simulated payment provider: share of calls (0-1) that fail transiently."`

	MetricsAddr      string        `name:"metrics-addr" env:"METRICS_ADDR" default:"" help:"Where /metrics (Prometheus), /healthz and /readyz are served, e.g. 127.0.0.1:9464; empty: not served."`
	Healthcheck      bool          `name:"healthcheck" help:"Do not run: check the /readyz of the worker serving on --metrics-addr (METRICS_ADDR; an all-interfaces address is reached on loopback) and exit 0 if it is ready, 1 if not. For container health checks: the image has no curl."`
	Pprof            bool          `name:"pprof" env:"PPROF" help:"Also serve Go's profiler, /debug/pprof/, on --metrics-addr. Off by default: whoever reaches that address could take profiles and read the program's internals."`
	Provider         string        `name:"provider" env:"PROVIDER" default:"sim" enum:"sim,stripe" help:"Payment provider: sim (the simulated one, which keeps its ledger in Redis) or stripe (Stripe's API: --stripe-api-key, --stripe-api-base; docs/stripe.md). Another provider is wired in a main of your own; see examples/custom."`
	SimAmbiguousRate float64       `name:"sim-ambiguous-rate" env:"SIM_AMBIGUOUS_RATE" default:"0" help:"Simulated payment provider: share of calls (0-1) that take effect and then answer with an ambiguous error (a lost response)."`
	Concurrency      int           `name:"concurrency" env:"CONCURRENCY" default:"64" help:"Commands this worker keeps in flight: each waits on a few round trips in turn, so it takes tens to keep a CPU busy."`
	LockTTL          time.Duration `name:"lock-ttl" env:"LOCK_TTL" default:"10s" help:"Expiry of a key's lock; extended every third of it while the operation runs, so it only bounds how long a crashed worker blocks its key."`
	RedisPipeline    bool          `name:"redis-pipeline" env:"REDIS_PIPELINE" default:"true" negatable:"" help:"Send the Redis calls of the commands in flight together, as pipelines (one round trip for many calls under load); --no-redis-pipeline sends each alone. Not on a Redis Cluster, where each call goes alone."`
	KeyPrefix        string        `name:"redis-key-prefix" env:"REDIS_KEY_PREFIX" default:"" help:"Prefix put before every Redis key (idem:rec:, idem:lock:, cart:, sim:)."`
	Retry            []string      `name:"retry" env:"RETRY_POLICIES" sep:"," placeholder:"KIND:CLASS=INITIAL/MAX/ELAPSED/RETRIES" help:"Override the retry policy of one command kind for one error class (transient, ambiguous, rate_limited) inside a delivery, e.g. payment.refund:transient=1s/10s/2m/30 (first wait, longest wait, time in all, retries). Repeat the flag, or separate with commas."`
	StatsInterval    time.Duration `name:"stats-interval" env:"STATS_INTERVAL" default:"30s" help:"How often to log what the worker did (deliveries, outcomes, replays, rejections, dead letters); 0 turns it off."`
	ShutdownTimeout  time.Duration `name:"shutdown-timeout" env:"SHUTDOWN_TIMEOUT" default:"25s" help:"On SIGTERM/SIGINT, how long in-flight commands may take to finish; the rest are left for redelivery."`
	LogLevel         string        `name:"log-level" env:"LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error."`
	LogFormat        string        `name:"log-format" env:"LOG_FORMAT" default:"text" enum:"text,json" help:"Log format: text or json."`

	cli.TopologyFlags
	stripeFlags
	streamFlags
	waitFlags
	failpointFlags
}

// Validate is kong's hook: every error names its flag and variable.
func (f *flags) Validate() error {
	for name, v := range map[string]float64{"--sim-failure-rate (SIM_FAILURE_RATE)": f.SimFailureRate,
		"--sim-ambiguous-rate (SIM_AMBIGUOUS_RATE)": f.SimAmbiguousRate} {
		if v < 0 || v > 1 {
			return fmt.Errorf("%s must be between 0 and 1, got %v", name, v)
		}
	}
	switch {
	case f.SimLatency < 0:
		return fmt.Errorf("--sim-latency (SIM_LATENCY) must not be negative, got %v", f.SimLatency)
	case f.MaxDeliver < 1:
		return fmt.Errorf("--max-deliver (MAX_DELIVER) must be at least 1, got %d", f.MaxDeliver)
	case f.Concurrency < 1:
		return fmt.Errorf("--concurrency (CONCURRENCY) must be at least 1, got %d", f.Concurrency)
	case f.AckWait < 100*time.Millisecond:
		return fmt.Errorf("--ack-wait (ACK_WAIT) must be at least 100ms, got %v", f.AckWait)
	case f.DedupeWindow < 100*time.Millisecond:
		return fmt.Errorf("--dedupe-window (DEDUPE_WINDOW) must be at least 100ms, got %v", f.DedupeWindow)
	case f.ResultTTL < f.DedupeWindow:
		return fmt.Errorf("--result-ttl (RESULT_TTL) must not be shorter than --dedupe-window (%v), got %v", f.DedupeWindow, f.ResultTTL)
	case f.ResultsMaxAge != 0 && (f.ResultsMaxAge < f.DedupeWindow || f.ResultsMaxAge > f.ResultTTL):
		return fmt.Errorf("--results-max-age (RESULTS_MAX_AGE) must be 0 or between --dedupe-window (%v) and --result-ttl (%v), got %v", f.DedupeWindow, f.ResultTTL, f.ResultsMaxAge)
	case f.DeadLetterFence <= 0:
		return fmt.Errorf("--dead-letter-fence (DEAD_LETTER_FENCE) must be positive, got %v", f.DeadLetterFence)
	case f.ResolveAfter < 10*time.Millisecond:
		return fmt.Errorf("--resolve-after (RESOLVE_AFTER) must be at least 10ms, got %v", f.ResolveAfter)
	case f.LockTTL < 30*time.Millisecond:
		return fmt.Errorf("--lock-ttl (LOCK_TTL) must be at least 30ms, got %v", f.LockTTL)
	case f.MetricsAddr != "" && cli.ListenAddr(f.MetricsAddr) != nil:
		return fmt.Errorf("--metrics-addr (METRICS_ADDR) %w", cli.ListenAddr(f.MetricsAddr))
	case f.Healthcheck && f.MetricsAddr == "":
		return errors.New("--healthcheck needs --metrics-addr (METRICS_ADDR): /readyz is served there")
	case f.Pprof && f.MetricsAddr == "":
		return errors.New("--pprof (PPROF) needs --metrics-addr (METRICS_ADDR): the profiler is served there")
	case f.LockTTL > 10*f.AckWait:
		return fmt.Errorf("--lock-ttl (LOCK_TTL) %v must not exceed 10 x --ack-wait (ACK_WAIT) %v: a crashed worker would block its key that long", f.LockTTL, f.AckWait)
	}
	// The engine's own check, in the flags' words: the record of a key must
	// outlive every delivery of its command.
	if horizon := time.Duration(f.MaxDeliver)*(f.AckWait+processor.MaxNakDelayDefault) + f.DedupeWindow; f.ResultTTL < horizon {
		return fmt.Errorf("--result-ttl (RESULT_TTL) %v must cover the longest redelivery horizon: --max-deliver (MAX_DELIVER) %d x (--ack-wait (ACK_WAIT) %v + the longest redelivery delay %v) + --dedupe-window (DEDUPE_WINDOW) %v = %v",
			f.ResultTTL, f.MaxDeliver, f.AckWait, processor.MaxNakDelayDefault, f.DedupeWindow, horizon)
	}
	if _, err := retryOverrides(f.Retry); err != nil {
		return err
	}
	if err := f.check(f.Provider); err != nil {
		return err
	}
	if err := f.streamFlags.Validate(); err != nil {
		return err
	}
	if err := f.waitFlags.Validate(); err != nil {
		return err
	}
	return f.validate()
}

func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var f flags
	if _, err := cli.Parse("worker", description, &f, args, env, stdout, stderr,
		kong.Vars{"max_nak_delay": processor.MaxNakDelayDefault.String()}); err != nil {
		return err
	}
	if f.Healthcheck {
		return cli.Healthcheck(ctx, f.MetricsAddr, stdout)
	}
	return serve(ctx, &f, stderr)
}

func serve(ctx context.Context, f *flags, stderr io.Writer) error {
	log := cli.NewLogger(stderr, f.LogFormat, f.LogLevel)
	redis.SetLogger(cli.RedisLogger{Log: log})

	nc, err := f.NATSFlags.Connect("idempay-worker", cli.Reconnecting(log)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	cli.WarnOldNATS(log, nc)

	rdb, redisAt, err := f.RedisFlags.Connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if f.RedisPipeline {
		defer pipeline(rdb, log)() // runs before rdb.Close: deferred later
	}

	provider, err := newProvider(f, rdb)
	if err != nil {
		return err
	}
	shutdownTracing, tracing, err := telemetry.SetupTracing(ctx, "idempay-worker", cli.Version)
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	var reg *prometheus.Registry
	var metrics *processor.Metrics
	opsProvider := provider
	if f.MetricsAddr != "" {
		reg = telemetry.NewRegistry()
		reg.MustRegister(telemetry.BuildInfo(cli.Version))
		if metrics, err = processor.NewMetrics(reg); err != nil {
			return err
		}
	}
	if reg != nil || tracing {
		var r prometheus.Registerer
		if reg != nil {
			r = reg
		}
		if opsProvider, err = ops.Instrument(provider, r, nil); err != nil {
			return err
		}
	}
	mux := processor.NewMux()
	ops.Register(mux, opsProvider, f.KeyPrefix)
	overrides, _ := retryOverrides(f.Retry) // checked by Validate
	cfg := &processor.Config{
		Topology:        f.Topology(),
		DedupeWindow:    f.DedupeWindow,
		ResultTTL:       f.ResultTTL,
		ResultsMaxAge:   f.ResultsMaxAge,
		AckWait:         f.AckWait,
		MaxTries:        f.MaxDeliver,
		ResolveAfter:    f.ResolveAfter,
		DeadLetterFence: f.DeadLetterFence,
		Concurrency:     f.Concurrency,
		LockTTL:         f.LockTTL,
		KeyPrefix:       f.KeyPrefix,
		RetryOverrides:  overrides,
		Logger:          log,
		Metrics:         metrics,
		Failpoint:       f.failpoint(log),
	}
	f.streamFlags.apply(cfg)
	f.waitFlags.apply(cfg)
	p, err := processor.New(nc, rdb, mux, cfg)
	if err != nil {
		return err
	}
	if reg != nil {
		reg.MustRegister(p.ConsumerCollector())
		srv, err := telemetry.Serve(ctx, f.MetricsAddr, reg, p.Ready, log, f.Pprof)
		if err != nil {
			return fmt.Errorf("--metrics-addr (METRICS_ADDR): %w", err)
		}
		defer srv.Close(ctx)
		log.Info("serving /metrics, /healthz, /readyz", "addr", srv.Addr(), "pprof", f.Pprof)
	}
	if err := p.Start(ctx); err != nil {
		return startErr(err)
	}
	log.Info("worker running", "version", cli.Version, "nats", nc.ConnectedUrlRedacted(), "redis", redisAt,
		"provider", f.Provider, "concurrency", f.Concurrency, "max_deliver", f.MaxDeliver, "ack_wait", f.AckWait,
		"tracing", tracing)

	if f.StatsInterval > 0 {
		go logStats(ctx, log, p, f.StatsInterval)
	}
	<-ctx.Done()
	log.Info("draining: no new commands; waiting for in-flight ones", "timeout", f.ShutdownTimeout)
	// ctx is done by now; the drain gets its own deadline.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.ShutdownTimeout)
	defer cancel()
	if err := p.Stop(stopCtx); err != nil {
		log.Warn("drain timed out; unfinished commands will be redelivered", "error", err)
	}
	log.Info("worker stopped", statsAttrs(p.Stats())...)
	return nil
}

// pipeline adds the auto-pipelining hook to rdb and returns its Close, or
// leaves a Redis Cluster client alone and says so. On a cluster client a
// hook runs before go-redis routes the command, and the hook's pipeline
// sends each command to the one node of its slot: a command go-redis would
// send to every shard and aggregate is answered by one node (DBSIZE said 4
// of a cluster's 10 keys through the hook), one of special routing can
// reach the wrong node, and go-redis refuses a whole cluster pipeline once
// it knows a command in it must not be pipelined, failing every caller
// that shared it. The worker's own calls are keyed and would survive, but
// nothing keeps them so. A Sentinel master's client is a plain client and
// keeps the hook.
func pipeline(rdb redis.UniversalClient, log *slog.Logger) (closeHook func()) {
	if _, cluster := rdb.(*redis.ClusterClient); cluster {
		log.Info("Redis Cluster: --redis-pipeline (REDIS_PIPELINE) does not apply; each Redis call goes out alone")
		return func() {}
	}
	pipe := autopipe.New(rdb, nil)
	rdb.AddHook(pipe)
	return pipe.Close
}

// retryOverrides reads --retry: KIND:CLASS=INITIAL/MAX/ELAPSED/RETRIES,
// each replacing one class of one kind's policy; the classes not named keep
// the policy the operation registered with.
func retryOverrides(specs []string) (map[string]processor.RetryPolicy, error) {
	if len(specs) == 0 {
		return nil, nil //nolint:nilnil // no overrides
	}
	policies := map[string]*processor.Policy{}
	for _, spec := range specs {
		target, value, ok := strings.Cut(strings.TrimSpace(spec), "=")
		kind, class, ok2 := strings.Cut(target, ":")
		if !ok || !ok2 || kind == "" {
			return nil, fmt.Errorf("--retry (RETRY_POLICIES) %q: want KIND:CLASS=INITIAL/MAX/ELAPSED/RETRIES, e.g. payment.refund:transient=1s/10s/2m/30", spec)
		}
		c, err := processor.ParseClass(class)
		if err != nil {
			return nil, fmt.Errorf("--retry (RETRY_POLICIES) %q: %w", spec, err)
		}
		b, err := processor.ParseBackoff(value)
		if err != nil {
			return nil, fmt.Errorf("--retry (RETRY_POLICIES) %q: %w", spec, err)
		}
		p, ok := policies[kind]
		if !ok {
			p = ops.RetryPolicy(kind)
			policies[kind] = p
		}
		p.Set(c, b)
	}
	out := make(map[string]processor.RetryPolicy, len(policies))
	for k, p := range policies {
		out[k] = p
	}
	return out, nil
}

// logStats logs the processor's counters every interval while they change,
// so an operator sees progress on a long run without enabling debug logs.
func logStats(ctx context.Context, log *slog.Logger, p *processor.Processor, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last processor.Stats
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s := p.Stats(); s != last {
			log.Info("progress", statsAttrs(s)...)
			last = s
		}
	}
}

func statsAttrs(s processor.Stats) []any {
	return []any{"deliveries", s.Deliveries, "succeeded", s.Succeeded, "failed", s.Failed,
		"replayed", s.Replayed, "rejected", s.Rejected, "redelivered", s.Redelivered, "lock_busy", s.LockBusy,
		"lock_lost", s.LockLost, "dead_lettered", s.DeadLettered, "outcome_unknown", s.OutcomeUnknown,
		"replica_shortfall", s.ReplicaShortfall}
}
