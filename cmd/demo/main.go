// Command demo runs the whole of idempay on one machine and audits it: an
// embedded NATS JetStream server, a Redis, three workers, and a load of
// mixed commands with duplicates, late client retries and a payment provider
// that fails a fifth of its calls. It ends with an audit table that checks
// every answer against the provider's ledger and the carts, and cleans up
// everything it started.
//
//	go run ./cmd/demo            # or: make demo
//	go run ./cmd/demo --help
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/processor"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(cli.Exit("demo", err, os.Stderr, func(error) (int, bool) { return 1, false }))
}

const description = "Runs idempay end to end on embedded servers (NATS_URL / REDIS_URL when set) and audits the result.\n\n" +
	"Exit status: 0 when the audit found nothing wrong, 1 otherwise, 64 usage error."

type flags struct {
	cli.Common
	// Empty by default: the demo starts its own embedded NATS server
	// unless NATS_URL or --nats-url names one.
	NATSURL string `name:"nats-url" env:"NATS_URL" default:"" help:"NATS server with JetStream to use instead of an embedded one. The demo then names its streams, subjects and Redis keys under a prefix of its own (demo<n>) and removes them afterwards; it takes no stream or subject flags."`
	// Empty by default (demo sets the kong variable): the demo starts its
	// own redis-server unless REDIS_URL or --redis-url names one.
	cli.RedisFlags

	Count        int           `name:"count" default:"3000" help:"Commands to send, each with its own key."`
	Workers      int           `name:"workers" default:"3" help:"Worker processors to run."`
	Concurrency  int           `name:"concurrency" default:"64" help:"Commands the load keeps in flight."`
	Duplicates   float64       `name:"duplicates" default:"0.3" help:"Share of keys (0-1) a client sends again, with the same key and payload."`
	FailureRate  float64       `name:"failure-rate" default:"0.2" help:"Share of provider calls (0-1) that fail transiently."`
	DeclineShare float64       `name:"decline-share" default:"0.05" help:"Share of charges (0-1) to accounts the provider declines."`
	RefundShare  float64       `name:"refund-share" default:"0.2" help:"Share of charges (0-1) refunded afterwards, under keys of their own."`
	DedupeWindow time.Duration `name:"dedupe-window" default:"1s" help:"The workers' JetStream dedupe window; short, so that late retries get past it and reach a worker."`
	LateAfter    time.Duration `name:"late-after" default:"1500ms" help:"How long after its answer a late retry is sent; longer than --dedupe-window."`
	Mix          string        `name:"mix" default:"payment=0.7,cart=0.3" help:"Weights of the command types."`
	Verbose      bool          `name:"verbose" short:"v" help:"Show the workers' logs (info level)."`
	Provider     string        `name:"provider" env:"PROVIDER" default:"sim" enum:"sim,stripe" help:"Payment provider: sim, or stripe: Stripe's API at STRIPE_API_BASE with STRIPE_API_KEY when set, else a stripe-mock the demo starts (--failure-rate and --decline-share are the simulated provider's; see docs/stripe.md)."`
}

func (c *flags) Validate() error {
	switch {
	case c.Count < 1 || c.Count > 100_000:
		return fmt.Errorf("--count must be 1 to 100000, got %d", c.Count)
	case c.Workers < 1 || c.Workers > 16:
		return fmt.Errorf("--workers must be 1 to 16, got %d", c.Workers)
	case c.FailureRate < 0 || c.FailureRate >= 1:
		return fmt.Errorf("--failure-rate must be at least 0 and below 1, got %v", c.FailureRate)
	case c.DedupeWindow < 100*time.Millisecond:
		return fmt.Errorf("--dedupe-window must be at least 100ms, got %v", c.DedupeWindow)
	}
	if _, err := load.ParseMix(c.Mix); err != nil {
		return fmt.Errorf("--mix: %w", err)
	}
	return nil
}

func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var c flags
	if _, err := cli.Parse("demo", description, &c, args, env, stdout, stderr,
		kong.Vars{"redis_url_default": ""}); err != nil {
		return err
	}
	return demo(ctx, &c, stdout, stderr)
}

func demo(ctx context.Context, c *flags, stdout, stderr io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }
	started := time.Now()

	// Servers: the environment's, or our own.
	natsURL := c.NATSURL
	ns := "" // embedded servers are ours alone: use the contract's names
	if natsURL == "" {
		srv, err := testenv.StartNATS()
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		natsURL = srv.URL
		say("started an embedded NATS JetStream server at %s", natsURL)
	} else {
		ns = "demo" + strconv.FormatInt(time.Now().Unix()%1e6, 10)
		say("using NATS at %s (--nats-url); streams and subjects prefixed %q", cli.RedactURLs(natsURL), ns)
	}
	level := slog.LevelError
	if c.Verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// go-redis's own messages (a dropped pool connection) in the same log,
	// not raw on stderr.
	redis.SetLogger(cli.RedisLogger{Log: logger})

	own := c.RedisURL == ""
	if own {
		srv, err := testenv.StartRedis() //nolint:contextcheck // bounded by its own 10s readiness wait; started before any work, like StartNATS
		if errors.Is(err, testenv.ErrNoRedisServer) {
			return errors.New("redis-server is not installed: apt-get install -y redis-server (Debian/Ubuntu) or brew install redis (macOS), or set REDIS_URL")
		}
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		c.RedisURL = srv.URL
	}
	rdb, redisAt, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if own {
		say("started redis-server at %s", redisAt)
	} else {
		if ns == "" {
			ns = "demo" + strconv.FormatInt(time.Now().Unix()%1e6, 10)
		}
		say("using Redis at %s (--redis-url); keys prefixed %q", redisAt, ns+":")
	}

	cfg := demoConfig(ns, c)
	cfg.Logger = logger

	// Workers: each its own NATS connection, like separate processes.
	provider, stopProvider, err := demoProvider(c, rdb, cfg.KeyPrefix, say) //nolint:contextcheck // stripe-mock lives until the demo ends, bounded by its own 30s start wait, like StartRedis
	if err != nil {
		return err
	}
	defer stopProvider()
	stripe := c.Provider == "stripe"
	if stripe {
		c.FailureRate, c.DeclineShare = 0, 0 // the simulated provider's
	}
	mux := processor.NewMux()
	ops.Register(mux, provider, cfg.KeyPrefix)
	if ns != "" {
		// Deferred before the workers' stop, so it runs after it: a worker
		// still running when its streams go puts them back.
		defer cleanup(context.WithoutCancel(ctx), natsURL, rdb, cfg)
	}
	var workers []*processor.Processor
	defer func() {
		// Not cancelled with ctx: an interrupted demo still drains its workers.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 25*time.Second)
		defer cancel()
		for _, w := range workers {
			_ = w.Stop(stopCtx)
		}
	}()
	for i := range c.Workers {
		nc, err := nats.Connect(natsURL, nats.Name(fmt.Sprintf("idempay-demo-worker-%d", i+1)))
		if err != nil {
			return fmt.Errorf("cannot connect to NATS at %s: %w", cli.RedactURLs(natsURL), err)
		}
		defer nc.Close()
		w, err := processor.New(nc, rdb, mux, cfg)
		if err != nil {
			return err
		}
		if err := w.Start(ctx); err != nil {
			return err
		}
		workers = append(workers, w)
	}
	say("started %d workers (dedupe window %v, provider failing %.0f%% of calls transiently)",
		c.Workers, c.DedupeWindow, 100*c.FailureRate)

	// The load: a client like any service would use.
	nc, err := nats.Connect(natsURL, nats.Name("idempay-demo-client"))
	if err != nil {
		return err
	}
	defer nc.Close()
	cl, err := client.New(nc, &client.Config{Topology: cfg.Topology, Logger: logger})
	if err != nil {
		return err
	}
	mix, _ := load.ParseMix(c.Mix)
	say("sending %d commands (%s), %.0f%% of them again as client retries, some after the dedupe window...",
		c.Count, mix, 100*c.Duplicates)
	progress, finish := newProgress(stderr, c.Count)
	summary, err := load.Run(ctx, cl, &load.Config{
		Count: c.Count, Concurrency: c.Concurrency, Duplicates: c.Duplicates,
		LateAfter: c.LateAfter, LateShare: 0.4, Mix: mix, DeclineShare: c.DeclineShare, RefundShare: c.RefundShare,
		Timeout:  5 * time.Minute,
		Progress: progress,
	})
	finish()
	if err != nil {
		return err
	}
	// The audit is the one ledger checker's (internal/ledger, through
	// load.CheckLedger): the provider's ledger and the carts. Stripe's
	// ledger is its Dashboard and stripe-mock keeps none, so with Stripe
	// only the carts are judged.
	check := load.CheckLedger
	if stripe {
		check = load.CheckCarts
	}
	ledger, err := check(context.WithoutCancel(ctx), rdb, cfg.KeyPrefix, summary)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	printAudit(stdout, summary, ledger, stripe)

	ok := summary.OK() && ledger.OK()
	say("")
	switch {
	case ok && stripe:
		say("OK: every command has exactly one outcome and every retry got it back, through Stripe's API (%s in all).",
			time.Since(started).Round(100*time.Millisecond))
		return nil
	case ok:
		say("OK: every command has exactly one outcome, every retry got it back, and nothing was charged twice (%s in all).",
			time.Since(started).Round(100*time.Millisecond))
		say("")
		say("Next, by hand (NATS with JetStream on :4222 and Redis on :6379):")
		say("  go run ./cmd/worker &            # as many as you like; --help lists every setting")
		say("  go run ./cmd/producer charge --account acct_42 --amount 1999 --currency EUR")
		say("  go run ./cmd/producer charge --account acct_42 --amount 1999 --currency EUR --key <the key it printed>")
		say("  go run ./cmd/producer refund --charge-key <that key> --amount 500")
		say("  go run ./cmd/producer load --count 20000 --duplicates 0.2 --verify-ledger")
		keys, secret, err := demoTenant()
		if err != nil {
			return err
		}
		say("  GATEWAY_API_KEYS_FILE=%s go run ./cmd/gateway &   # the HTTP API; tenant demo's key is in that file", keys)
		say("  open http://127.0.0.1:8080/#api_key=%s            # the checkout page, as tenant demo", secret)
		say(`  curl -i -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -H 'Idempotency-Key: order-1001' \`, secret)
		say(`       -d '{"account_id":"acct_42","amount":1999,"currency":"EUR"}' http://127.0.0.1:8080/v1/payments`)
		return nil
	}
	return errors.New("the audit found problems: see the table above")
}

// demoTenant writes an API-key file admitting the tenant "demo" with a
// fresh secret, for the gateway the demo's last lines start, and returns
// its path and the secret. The file holds the secret's hash only.
func demoTenant() (path, secret string, err error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	secret = "sk_demo_" + hex.EncodeToString(b)
	path = filepath.Join(os.TempDir(), "idempay-demo-api-keys")
	line := "# make demo: the tenant demo, for go run ./cmd/gateway (GATEWAY_API_KEYS_FILE)\n" + gateway.HashAPIKey("demo", secret) + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		return "", "", fmt.Errorf("write the demo tenant's API-key file: %w", err)
	}
	return path, secret, nil
}

// demoConfig returns the workers' configuration: the contract's names on
// servers of our own, names under ns on someone else's.
func demoConfig(ns string, c *flags) *processor.Config {
	cfg := &processor.Config{
		DedupeWindow: c.DedupeWindow,
		ResultTTL:    time.Hour,
		AckWait:      5 * time.Second,
		Concurrency:  32,
		// Waits short enough for a demo that ends in seconds.
		NakDelay:    200 * time.Millisecond,
		MaxNakDelay: 2 * time.Second,
		LockedDelay: 50 * time.Millisecond,
	}
	if ns != "" {
		cfg.Topology = testenv.Topology(ns)
		cfg.KeyPrefix = ns + ":"
	}
	cfg.Topology = cfg.Topology.WithDefaults()
	return cfg
}

// cleanup removes the streams and Redis keys the demo made on servers it
// did not start. It must run after the workers stopped (a running worker
// re-creates a stream that vanished under it), and after ctx is cancelled
// too: pass one without cancellation (context.WithoutCancel).
func cleanup(ctx context.Context, natsURL string, rdb redis.UniversalClient, cfg *processor.Config) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, cfg.KeyPrefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			_ = rdb.Del(ctx, keys...).Err()
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		_ = rdb.Del(ctx, keys...).Err()
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return
	}
	for _, s := range []string{cfg.Topology.CommandStream, cfg.Topology.ResultStream, cfg.Topology.DeadLetterStream} {
		_ = js.DeleteStream(s)
	}
}

func printAudit(w io.Writer, s *load.Summary, l *load.Ledger, stripe bool) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "audit")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("commands", "%d (%s)", s.Commands, counts(s.ByCommand))
	row("sends", "%d, of which %d client retries (%s)", s.Sends, s.Sends-s.Commands, counts(s.DuplicatesSent))
	row("duplicates dropped by JetStream", "%d (inside the dedupe window: never reached a worker)", s.DroppedByJetStream)
	row("replayed by workers", "%d (after the window: stored outcome returned, nothing re-run)", s.ReplayedByWorkers)
	row("outcomes", "%s; codes: %s", counts(s.ByStatus), counts(s.ByCode))
	row("unanswered keys", "%d", s.Unanswered)
	row("disagreeing keys", "%d (one key, one outcome)", len(s.Disagreeing))
	if stripe {
		row("provider ledger", "not audited: stripe-mock keeps no state (on a test account, the Dashboard is the ledger: docs/stripe.md)")
	} else {
		row("provider calls per charge key", "%s", callsHistogram(l.CallsPerKey))
		row("charges", "%d succeeded keys, %d provider charges", l.Succeeded, l.Charged)
		row("refunds", "%d keys, %d succeeded (checked against sim:refunds and sim:refunded, below)", l.RefundKeys, l.Refunded)
	}
	row("cart totals", "%d lines: %d units in Redis, %d added by the succeeded commands; %d lines differ",
		l.CartLines, l.CartUnits, l.CartWant, l.CartLinesWrong)
	if !stripe {
		row("double charges", "%d", l.DoubleCharges)
		row("ledger mismatches", "%d", len(l.Mismatches))
	}
	for i, m := range l.Mismatches {
		if i == 10 {
			row("", "... and %d more", len(l.Mismatches)-10)
			break
		}
		row("", "%s", m)
	}
	row("throughput", "%.0f commands/s; latency p50 %v, p99 %v (publish to answer, this machine, this run)",
		s.CommandsPerSecond, s.Latency.P50.Round(time.Millisecond), s.Latency.P99.Round(time.Millisecond))
	_ = tw.Flush()
}

func callsHistogram(m map[int64]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d call(s): %d keys", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ") + " (more than one only for retried transient failures, always with the same key)"
}

func counts[K ~string](m map[K]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[K(k)]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// newProgress draws a progress bar on a terminal and, elsewhere (CI, a
// pipe), prints a line at every tenth of the run.
func newProgress(w io.Writer, count int) (func(load.Progress), func()) {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.NewOptions(count,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("sends"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("sends"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionClearOnFinish(),
		)
		return func(p load.Progress) {
				if p.Done == 1 {
					bar.ChangeMax(p.Total)
				}
				_ = bar.Set(p.Done)
			}, func() {
				_ = bar.Finish()
			}
	}
	last := 0
	return func(p load.Progress) {
		if tenth := p.Done * 10 / max(p.Total, 1); tenth > last {
			last = tenth
			fmt.Fprintf(w, "  %3d%%  %d/%d sends, %d dropped by JetStream, %d replayed by workers\n",
				tenth*10, p.Done, p.Total, p.Dropped, p.Replayed)
		}
	}, func() {}
}
