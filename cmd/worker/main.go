// Command worker executes idempay commands: it pulls them from the shared
// durable JetStream consumer and runs each exactly once per idempotency key.
// Run as many as you like against one NATS and one Redis.
//
//	worker                      # nats://127.0.0.1:4222, redis://127.0.0.1:6379
//	worker --help               # every flag and its environment variable
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// cli is the worker's command line. Every flag has an environment variable;
// the names of CONTRACT.md come first.
type cli struct {
	NATSURL        string        `name:"nats-url" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL(s), comma-separated."`
	RedisURL       string        `name:"redis-url" env:"REDIS_URL" default:"redis://127.0.0.1:6379" help:"Redis URL (redis:// or rediss://, optional user:password@ and /db)."`
	DedupeWindow   time.Duration `name:"dedupe-window" env:"DEDUPE_WINDOW" default:"2m" help:"JetStream duplicate window of the command stream: a re-publish of a key within it is dropped before any worker sees it."`
	ResultTTL      time.Duration `name:"result-ttl" env:"RESULT_TTL" default:"24h" help:"How long outcomes are kept, in Redis and in the results stream. A key retried later than this runs again."`
	AckWait        time.Duration `name:"ack-wait" env:"ACK_WAIT" default:"30s" help:"How long a delivery may go without ack or progress before JetStream redelivers it (the worker reports progress while an operation runs)."`
	MaxDeliver     int           `name:"max-deliver" env:"MAX_DELIVER" default:"10" help:"Deliveries before a command goes to the dead letters (dlq.<type>)."`
	SimLatency     time.Duration `name:"sim-latency" env:"SIM_LATENCY" default:"0s" help:"Simulated payment provider: time one charge takes."`
	SimFailureRate float64       `name:"sim-failure-rate" env:"SIM_FAILURE_RATE" default:"0" help:"Simulated payment provider: share of calls (0-1) that fail transiently."`

	Concurrency     int           `name:"concurrency" env:"CONCURRENCY" default:"16" help:"Commands this worker keeps in flight."`
	LockTTL         time.Duration `name:"lock-ttl" env:"LOCK_TTL" default:"10s" help:"Expiry of a key's lock; extended every third of it while the operation runs, so it only bounds how long a crashed worker blocks its key."`
	KeyPrefix       string        `name:"redis-key-prefix" env:"REDIS_KEY_PREFIX" default:"" help:"Prefix put before every Redis key (idem:rec:, idem:lock:, cart:, sim:)."`
	CommandStream   string        `name:"command-stream" env:"COMMAND_STREAM" default:"COMMANDS" help:"Work-queue stream of commands."`
	ResultStream    string        `name:"result-stream" env:"RESULT_STREAM" default:"RESULTS" help:"Stream keeping the last outcome of each key."`
	DeadStream      string        `name:"deadletter-stream" env:"DEADLETTER_STREAM" default:"DEADLETTER" help:"Stream keeping dead-lettered commands."`
	Consumer        string        `name:"consumer" env:"CONSUMER" default:"workers" help:"Durable consumer shared by all workers."`
	CommandRoot     string        `name:"command-subjects" env:"COMMAND_SUBJECTS" default:"cmd" help:"Root of command subjects: <root>.<type>."`
	ResultRoot      string        `name:"result-subjects" env:"RESULT_SUBJECTS" default:"result" help:"Root of outcome subjects: <root>.<key>."`
	RejectedRoot    string        `name:"rejected-subjects" env:"REJECTED_SUBJECTS" default:"rejected" help:"Root of rejection subjects: <root>.<key>."`
	DeadRoot        string        `name:"deadletter-subjects" env:"DEADLETTER_SUBJECTS" default:"dlq" help:"Root of dead-letter subjects: <root>.<type>."`
	StatsInterval   time.Duration `name:"stats-interval" env:"STATS_INTERVAL" default:"30s" help:"How often to log what the worker did (deliveries, outcomes, replays, rejections, dead letters); 0 turns it off."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"SHUTDOWN_TIMEOUT" default:"25s" help:"On SIGTERM/SIGINT, how long in-flight commands may take to finish; the rest are left for redelivery."`
	LogLevel        string        `name:"log-level" env:"LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error."`
	LogFormat       string        `name:"log-format" env:"LOG_FORMAT" default:"text" enum:"text,json" help:"Log format: text or json."`

	Failpoint string `name:"failpoint" env:"IDEMPAY_FAILPOINT" hidden:"" help:"Fault injection for chaos tests: <step>[@probability] kills this process with SIGKILL at that step."`
}

func (c *cli) Validate() error {
	switch {
	case c.SimFailureRate < 0 || c.SimFailureRate > 1:
		return fmt.Errorf("--sim-failure-rate (SIM_FAILURE_RATE) must be between 0 and 1, got %v", c.SimFailureRate)
	case c.SimLatency < 0:
		return fmt.Errorf("--sim-latency (SIM_LATENCY) must not be negative, got %v", c.SimLatency)
	case c.MaxDeliver < 1:
		return fmt.Errorf("--max-deliver (MAX_DELIVER) must be at least 1, got %d", c.MaxDeliver)
	case c.Concurrency < 1:
		return fmt.Errorf("--concurrency (CONCURRENCY) must be at least 1, got %d", c.Concurrency)
	case c.AckWait < 100*time.Millisecond:
		return fmt.Errorf("--ack-wait (ACK_WAIT) must be at least 100ms, got %v", c.AckWait)
	case c.DedupeWindow < 100*time.Millisecond:
		return fmt.Errorf("--dedupe-window (DEDUPE_WINDOW) must be at least 100ms, got %v", c.DedupeWindow)
	case c.ResultTTL < c.DedupeWindow:
		return fmt.Errorf("--result-ttl (RESULT_TTL) must not be shorter than --dedupe-window (%v), got %v", c.DedupeWindow, c.ResultTTL)
	case c.LockTTL < 30*time.Millisecond:
		return fmt.Errorf("--lock-ttl (LOCK_TTL) must be at least 30ms, got %v", c.LockTTL)
	}
	if _, _, err := parseFailpoint(c.Failpoint); err != nil {
		return err
	}
	return nil
}

// exitRequest carries kong's exit (after --help) through a panic, so that
// run returns instead of the process exiting inside the parser.
type exitRequest int

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("worker"),
		kong.Description("Executes idempay commands from NATS JetStream exactly once per idempotency key. "+
			"Every flag can also be set by the environment variable shown in brackets."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitRequest(code)) }),
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
	if _, err := parser.Parse(args); err != nil {
		return usageError{err}
	}
	return serve(ctx, &c, stderr)
}

func serve(ctx context.Context, c *cli, stderr io.Writer) error {
	log := newLogger(c, stderr)

	nc, err := nats.Connect(c.NATSURL,
		nats.Name("idempay-worker"),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return fmt.Errorf("cannot connect to NATS at %s: %w", c.NATSURL, err)
	}
	defer nc.Close()

	ropt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return fmt.Errorf("--redis-url (REDIS_URL) %q: %w", c.RedisURL, err)
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = rdb.Ping(pingCtx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("cannot reach Redis at %s: %w", c.RedisURL, err)
	}

	mux, err := processor.DefaultMux(rdb, &processor.SimConfig{
		KeyPrefix: c.KeyPrefix, Latency: c.SimLatency, FailureRate: c.SimFailureRate,
	})
	if err != nil {
		return err
	}
	cfg := &processor.Config{
		Subjects: messages.Subjects{
			Command: c.CommandRoot, Result: c.ResultRoot, Rejected: c.RejectedRoot, DeadLetter: c.DeadRoot,
		},
		CommandStream:    c.CommandStream,
		ResultStream:     c.ResultStream,
		DeadLetterStream: c.DeadStream,
		Consumer:         c.Consumer,
		DedupeWindow:     c.DedupeWindow,
		ResultTTL:        c.ResultTTL,
		AckWait:          c.AckWait,
		MaxDeliver:       c.MaxDeliver,
		Concurrency:      c.Concurrency,
		LockTTL:          c.LockTTL,
		KeyPrefix:        c.KeyPrefix,
		Logger:           log,
	}
	if point, prob, _ := parseFailpoint(c.Failpoint); point != "" {
		log.Warn("fault injection armed: this worker kills itself", "failpoint", point, "probability", prob)
		cfg.Failpoint = func(at processor.Failpoint) bool {
			if at == point && rand.Float64() < prob {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			return false
		}
	}
	p, err := processor.New(nc, rdb, mux, cfg)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	log.Info("worker running", "nats", nc.ConnectedUrlRedacted(), "redis", ropt.Addr,
		"concurrency", c.Concurrency, "max_deliver", c.MaxDeliver, "ack_wait", c.AckWait)

	if c.StatsInterval > 0 {
		go logStats(ctx, log, p, c.StatsInterval)
	}
	<-ctx.Done()
	log.Info("draining: no new commands; waiting for in-flight ones", "timeout", c.ShutdownTimeout)
	// ctx is done by now; the drain gets its own deadline.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownTimeout)
	defer cancel()
	if err := p.Stop(stopCtx); err != nil {
		log.Warn("drain timed out; unfinished commands will be redelivered", "error", err)
	}
	log.Info("worker stopped", statsAttrs(p.Stats())...)
	return nil
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
		"replayed", s.Replayed, "rejected", s.Rejected, "redelivered", s.Redelivered, "dead_lettered", s.DeadLettered}
}

func newLogger(c *cli, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseFailpoint(s string) (processor.Failpoint, float64, error) {
	if s == "" {
		return "", 0, nil
	}
	name, probText, hasProb := strings.Cut(s, "@")
	prob := 1.0
	if hasProb {
		p, err := strconv.ParseFloat(probText, 64)
		if err != nil || p < 0 || p > 1 {
			return "", 0, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): probability %q must be a number within 0-1", probText)
		}
		prob = p
	}
	for _, fp := range processor.Failpoints {
		if string(fp) == name {
			return fp, prob, nil
		}
	}
	return "", 0, fmt.Errorf("--failpoint (IDEMPAY_FAILPOINT): unknown step %q", name)
}

var errUsage = errors.New("usage error")

type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode maps run's error to the process's exit status: 0 ok, 2 for a
// usage error, 1 for anything else; errors are printed on one line.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	if ue, ok := errors.AsType[usageError](err); ok {
		fmt.Fprintf(stderr, "worker: error: %v (see worker --help)\n", ue.err)
		return 2
	}
	fmt.Fprintf(stderr, "worker: error: %v\n", err)
	return 1
}
