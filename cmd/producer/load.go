package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/load"
)

type loadCmd struct {
	Count        int           `name:"count" default:"1000" help:"Commands to send, each with a new key (at most 1000000)."`
	Rate         float64       `name:"rate" default:"0" help:"New commands per second; 0 for as fast as --concurrency allows."`
	Concurrency  int           `name:"concurrency" default:"16" help:"Commands in flight."`
	Duplicates   float64       `name:"duplicates" default:"0.2" help:"Share of keys (0-1) sent a second time with the same payload, as a retrying client would."`
	LateAfter    time.Duration `name:"late-after" default:"0s" help:"Send --late-share of the duplicates this long after the original's answer. Longer than the workers' DEDUPE_WINDOW, they reach a worker, which replays the stored outcome; shorter, JetStream drops them."`
	LateShare    float64       `name:"late-share" default:"0.5" help:"Share of the duplicates (0-1) that are late, with --late-after; the others race the original or follow its answer at once."`
	Mix          string        `name:"mix" default:"payment=0.7,cart=0.3" help:"Weights of the command types."`
	DeclineShare float64       `name:"decline-share" default:"0" help:"Share of charges (0-1) to accounts the simulated provider declines, to see failed outcomes."`
	RefundShare  float64       `name:"refund-share" default:"0" help:"Share of charges (0-1) followed, once succeeded, by a payment.refund under its own key (one in ten asks for more than was charged, to see refund_exceeds_charge)."`
	Timeout      time.Duration `name:"timeout" default:"10m" help:"Bound on the whole run."`
	Seed         uint64        `name:"seed" default:"0" help:"Seed of the random choices; 0 for a random one."`
	RunID        string        `name:"run-id" help:"Prefix of the generated account and cart ids; random by default."`
	NoProgress   bool          `name:"no-progress" help:"No progress bar (it is shown only when stderr is a terminal anyway)."`
	AllowRemote  bool          `name:"allow-remote" env:"LOAD_ALLOW_REMOTE" help:"Allow a load against a NATS server that is not on this machine (loopback). Off by default, so that a load never reaches a shared or production server by accident."`

	VerifyLedger bool `name:"verify-ledger" help:"After the run, check the outcomes against the simulated provider's ledger and the carts in the workers' Redis (--redis-url and the flags below)."`
	cli.RedisFlags
	KeyPrefix string `name:"redis-key-prefix" env:"REDIS_KEY_PREFIX" default:"" help:"The workers' Redis key prefix, for --verify-ledger."`

	mix load.Mix
}

// check checks the flags, naming the flag.
func (c *loadCmd) check() error {
	mix, err := load.ParseMix(c.Mix)
	if err != nil {
		return fmt.Errorf("--mix: %w", err)
	}
	c.mix = mix
	if err := c.config().WithDefaults().Validate(); err != nil {
		return loadFlagError(err)
	}
	return nil
}

// checkTarget refuses a NATS URL that is not on this machine, unless
// --allow-remote: a load is a burst of real commands.
func (c *loadCmd) checkTarget(natsURL string) error {
	if c.AllowRemote {
		return nil
	}
	for raw := range strings.SplitSeq(natsURL, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("--nats-url %q: %w", raw, err)
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			continue
		}
		return fmt.Errorf("--nats-url: %s is not on this machine; a load sends real commands, pass --allow-remote (LOAD_ALLOW_REMOTE=1) if you mean it", u.Host)
	}
	return nil
}

func (c *loadCmd) config() *load.Config {
	return &load.Config{
		Count: c.Count, Rate: c.Rate, Concurrency: c.Concurrency, Duplicates: c.Duplicates,
		LateAfter: c.LateAfter, LateShare: c.LateShare, Mix: c.mix, DeclineShare: c.DeclineShare, RefundShare: c.RefundShare,
		Timeout: c.Timeout, Seed: c.Seed, RunID: c.RunID,
	}
}

func (c *loadCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check(); err != nil {
		return usageError("load", err)
	}
	if g.Tenant != "" {
		return usageError("load", errors.New("--tenant applies to charge, refund, cart add and status; a load checks the ledger by operation key"))
	}
	if err := c.checkTarget(g.NATSURL); err != nil {
		return usageError("load", err)
	}
	var rdb redis.UniversalClient
	if c.VerifyLedger {
		// go-redis logs dial failures on its own; the error says it once.
		redis.SetLogger(quietRedis{})
		var err error
		if rdb, _, err = c.Connect(ctx); err != nil {
			return err
		}
		defer rdb.Close()
	}
	cl, closeFn, err := g.connect(out)
	if err != nil {
		return err
	}
	defer closeFn()

	cfg := c.config()
	bar := c.progressBar(out.stderr)
	if bar != nil {
		cfg.Progress = func(p load.Progress) {
			if p.Done == 1 {
				bar.ChangeMax(p.Total)
			}
			_ = bar.Set(p.Done)
		}
	}
	s, err := load.Run(ctx, cl, cfg)
	if bar != nil {
		_ = bar.Finish()
		_ = bar.Clear()
	}
	if err != nil {
		return err
	}
	var ledger *load.Ledger
	var noLedger error
	if rdb != nil {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		ledger, err = load.CheckLedger(lctx, rdb, c.KeyPrefix, s)
		cancel()
		switch {
		case errors.Is(err, load.ErrNoLedger):
			// The summary still stands; the ledger was looked for in the
			// wrong place (--redis-key-prefix): a usage error, after it.
			noLedger = usageError("load", fmt.Errorf("--verify-ledger with --redis-key-prefix (REDIS_KEY_PREFIX) %q: %w", c.KeyPrefix, err))
		case err != nil:
			return err
		}
	}

	if g.JSON {
		enc := json.NewEncoder(out.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Summary *load.Summary `json:"summary"`
			Ledger  *load.Ledger  `json:"ledger,omitempty"`
		}{s, ledger}); err != nil {
			return err
		}
	} else {
		printSummary(out.stdout, s, ledger)
	}

	switch {
	case len(s.Disagreeing) > 0:
		return &answerError{code: exitDisagree, err: fmt.Errorf("%d keys got disagreeing answers", len(s.Disagreeing))}
	case noLedger != nil:
		return noLedger
	case ledger != nil && !ledger.OK():
		return &answerError{code: exitDisagree, err: fmt.Errorf("the ledger disagrees with the answers in %d places", len(ledger.Mismatches))}
	case !s.OK():
		return &answerError{code: exitNoAnswer, err: fmt.Errorf("%d sends got no answer, %d were not made", sum(s.Errors), s.NotSent)}
	}
	return nil
}

func (c *loadCmd) progressBar(stderr io.Writer) *progressbar.ProgressBar {
	f, ok := stderr.(*os.File)
	if c.NoProgress || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions(c.Count,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription("sending"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("sends"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
	)
}

func printSummary(w io.Writer, s *load.Summary, ledger *load.Ledger) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	ms := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }

	row("run", "%s (seed %d)", s.RunID, s.Seed)
	row("commands", "%d: %s", s.Commands, joinCounts(s.ByCommand))
	row("sends", "%d: %d originals, duplicates %s", s.Sends, s.Sends-dupTotal(s), joinCounts(s.DuplicatesSent))
	row("dropped by JetStream", "%d (duplicate PubAck: never reached a worker)", s.DroppedByJetStream)
	row("replayed by workers", "%d (stored outcome returned; the operation did not run again)", s.ReplayedByWorkers)
	row("answered", "%d of %d sends", s.Answered, s.Sends)
	row("outcomes", "%s", joinCounts(s.ByStatus))
	row("codes", "%s", joinCounts(s.ByCode))
	row("errors", "%s", joinCounts(s.Errors))
	if s.NotSent > 0 {
		row("not sent", "%d (the run was cut short)", s.NotSent)
	}
	row("elapsed", "%s", s.Elapsed.Round(time.Millisecond))
	row("throughput", "%.0f answers/s, %.0f commands/s", s.Throughput, s.CommandsPerSecond)
	row("latency", "p50 %s, p95 %s, p99 %s, max %s (publish to answer)",
		ms(s.Latency.P50), ms(s.Latency.P95), ms(s.Latency.P99), ms(s.Latency.Max))
	row("disagreeing keys", "%d", len(s.Disagreeing))
	for i, k := range s.Disagreeing {
		if i == 20 {
			row("", "... and %d more", len(s.Disagreeing)-20)
			break
		}
		row("", "%s", k)
	}
	if ledger != nil {
		verdict := "agrees"
		if !ledger.OK() {
			verdict = fmt.Sprintf("DISAGREES in %d places", len(ledger.Mismatches))
		}
		row("ledger", "%s: %d charge keys, %d succeeded, %d provider charges, %d provider calls; %d cart lines",
			verdict, ledger.ChargeKeys, ledger.Succeeded, ledger.Charged, ledger.Calls, ledger.CartLines)
		if n := len(ledger.CalledMoreThanOnce); n > 0 {
			row("", "%d keys called the provider more than once (retried transient errors)", n)
		}
		for i, m := range ledger.Mismatches {
			if i == 20 {
				row("", "... and %d more", len(ledger.Mismatches)-20)
				break
			}
			row("", "%s", m)
		}
	}
	_ = tw.Flush()
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func dupTotal(s *load.Summary) int { return sum(s.DuplicatesSent) }

func sum[K comparable](m map[K]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// loadFlagError renames load.Config's fields to their flags.
func loadFlagError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "load: ")
	for field, flag := range map[string]string{
		"Count": "--count", "Rate": "--rate", "Concurrency": "--concurrency", "Duplicates": "--duplicates",
		"LateAfter": "--late-after", "LateShare": "--late-share", "Mix": "--mix", "DeclineShare": "--decline-share", "RefundShare": "--refund-share",
		"Timeout": "--timeout", "RunID": "--run-id",
	} {
		if rest, ok := strings.CutPrefix(msg, field+" "); ok {
			return fmt.Errorf("%s %s", flag, rest)
		}
	}
	return errors.New(msg)
}
