package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/pkg/messages"
)

// keyCmd is `producer key`: one key's record, lock and history, for
// operators. It reads the workers' Redis (the record and the lock live
// there) and NATS (RESULTS, the dead letters).
type keyCmd struct {
	cli.RedisFlags
	KeyPrefix string `name:"redis-key-prefix" env:"REDIS_KEY_PREFIX" default:"" help:"The workers' Redis key prefix (their REDIS_KEY_PREFIX)."`
	ScanLimit int    `name:"scan-limit" env:"DLQ_SCAN_LIMIT" default:"10000" help:"How many of the newest dead letters to read when looking for the key's copies."`

	Show     keyShowCmd     `cmd:"" help:"Show what each source holds about a key now: its record (state, tries, effect, outcome), its lock (holder, TTL), the outcome in RESULTS, its dead letters, its resolution schedule entry, the simulated provider's ledger, and whether its record may be evicted. Exit status 3 when nothing holds the key."`
	Timeline keyTimelineCmd `cmd:"" help:"Print a key's timeline, oldest first, from what exists: publishes and dead letters (the copies' headers), when the record became dead and its outcome's processed_at, the last answer stored in RESULTS, the provider's void, the audit log, and what is still to come (expiries, the resolver's next ask). No per-delivery history exists. Exit status 3 when nothing holds the key."`
	Evict    keyEvictCmd    `cmd:"" help:"Evict a key's record, after printing what it holds and what evicting means; only with --yes. Only a completed record (a later duplicate then runs the operation again) or an idle one with effect none may go; the rest is refused, and so is every record while its lock is held (exit status 2). Written to the audit log (Redis stream <prefix>idem:audit) with --operator and what the record held. Needs a Redis user that may write (the operator's)."`
}

// keyArg is the <key> of the key commands.
type keyArg struct {
	Key string `arg:"" name:"key" help:"The idempotency key (the operation's key: a tenant's keys are scoped, see client.ScopedKey)."`
}

// admin connects to NATS and Redis and returns an Admin; close closes both.
func (k *keyCmd) admin(ctx context.Context, g *Globals, command, key string) (*admin.Admin, func(), error) {
	if g.Tenant != "" {
		return nil, nil, usageError(command, errors.New("--tenant does not apply to key: records are named by their operation (scoped) key; see client.ScopedKey"))
	}
	if !messages.ValidKey(key) {
		return nil, nil, usageError(command, badKey(key))
	}
	return connectAdmin(ctx, g, &k.RedisFlags, k.KeyPrefix, k.ScanLimit)
}

// connectAdmin returns an Admin on a new NATS connection and, unless
// redisFlags is nil, a Redis client; close closes them.
func connectAdmin(ctx context.Context, g *Globals, redisFlags *cli.RedisFlags, prefix string, scanLimit int) (*admin.Admin, func(), error) {
	nc, err := g.Connect("idempay-producer")
	if err != nil {
		return nil, nil, opsError(err)
	}
	closeFn := nc.Close
	var rdb redis.UniversalClient
	if redisFlags != nil {
		if rdb, _, err = redisFlags.Connect(ctx); err != nil {
			nc.Close()
			return nil, nil, opsError(err)
		}
		closeFn = func() { _ = rdb.Close(); nc.Close() }
	}
	a, err := admin.New(nc, rdb, &admin.Config{Topology: g.Topology(), KeyPrefix: prefix, ScanLimit: scanLimit, ResultTimeout: g.ResultTimeout})
	if err != nil {
		closeFn()
		return nil, nil, opsError(err)
	}
	return a, closeFn, nil
}

// opsError is an error of the key and dlq commands: exit status 1.
func opsError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*cli.UsageError](err); ok {
		return err
	}
	if _, ok := errors.AsType[*answerError](err); ok {
		return err
	}
	return &answerError{code: exitFailed, err: err}
}

// nothingMatched is exit status 3 for the key and dlq commands.
func nothingMatched(format string, args ...any) error {
	return &answerError{code: exitNoAnswer, err: fmt.Errorf(format, args...)}
}

type keyShowCmd struct{ keyArg }

func (c *keyShowCmd) Run(ctx context.Context, g *Globals, k *keyCmd, out *output) error {
	rep, err := inspect(ctx, g, k, out, "key show", c.Key)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, jsonReportOf(rep))
	}
	printReport(out.stdout, rep)
	return nothingAbout(rep)
}

type keyTimelineCmd struct{ keyArg }

func (c *keyTimelineCmd) Run(ctx context.Context, g *Globals, k *keyCmd, out *output) error {
	rep, err := inspect(ctx, g, k, out, "key timeline", c.Key)
	if err != nil {
		return err
	}
	ev := rep.Timeline()
	if g.JSON {
		if err := printJSON(out, jsonEvents(ev)); err != nil {
			return err
		}
		return nothingAbout(rep)
	}
	printTimeline(out.stdout, rep, ev)
	return nothingAbout(rep)
}

type keyEvictCmd struct {
	keyArg
	Yes      bool   `name:"yes" help:"Evict: without it, only print what the record holds and what evicting would mean."`
	Operator string `name:"operator" env:"OPERATOR_NAME" help:"Who evicts, for the audit log. Defaults to producer:<user>@<host>."`
}

func (c *keyEvictCmd) Run(ctx context.Context, g *Globals, k *keyCmd, out *output) error {
	rep, err := inspect(ctx, g, k, out, "key evict", c.Key)
	if err != nil {
		return err
	}
	if rep.Record == nil {
		return nothingMatched("%s has no record: nothing to evict", c.Key)
	}
	printRecord(out.stdout, rep)
	ev := rep.Eviction
	if !ev.Allowed {
		return &answerError{code: exitRejected, err: fmt.Errorf("%w: %s", admin.ErrNotEvictable, ev.Refused)}
	}
	fmt.Fprintf(out.stdout, "\nevicting this %s record means: %s\n", rep.Record.State, ev.Means)
	if !c.Yes {
		fmt.Fprintf(out.stdout, "not evicted: run again with --yes to evict it\n")
		return nil
	}
	who := c.Operator
	if who == "" {
		who = defaultOperator()
	}
	rec, err := k.evict(ctx, g, c.Key, who, admin.ExpectOf(rep.Record))
	switch {
	case errors.Is(err, admin.ErrLocked), errors.Is(err, admin.ErrNotEvictable), errors.Is(err, admin.ErrChanged):
		return &answerError{code: exitRejected, err: err}
	case errors.Is(err, admin.ErrNoRecord):
		return nothingMatched("%v", err)
	case err != nil:
		return opsError(err)
	}
	fmt.Fprintf(out.stdout, "evicted the %s record of %s (audit log: %s by %s)\n", rec.State, c.Key, admin.ActionEvict, who)
	return nil
}

// evict runs the eviction on a connection of its own.
func (k *keyCmd) evict(ctx context.Context, g *Globals, key, who string, expect *admin.Expect) (*admin.Record, error) {
	a, closeFn, err := connectAdmin(ctx, g, &k.RedisFlags, k.KeyPrefix, k.ScanLimit)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return a.Evict(ctx, key, who, expect)
}

func defaultOperator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "producer:" + name + "@" + host
}

func inspect(ctx context.Context, g *Globals, k *keyCmd, out *output, command, key string) (*admin.KeyReport, error) {
	a, closeFn, err := k.admin(ctx, g, command, key)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	rep, err := a.Inspect(ctx, key)
	if err != nil {
		return nil, opsError(err)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(out.stderr, "producer: could not read everything: %s\n", p)
	}
	return rep, nil
}

// nothingAbout is exit status 3 when no source holds anything of the key.
func nothingAbout(rep *admin.KeyReport) error {
	if rep.Record == nil && rep.Lock == nil && rep.Result == nil && len(rep.DeadLetters) == 0 && rep.Resolution == nil &&
		len(rep.Audit) == 0 && (rep.Ledger == nil || (rep.Ledger.Calls == 0 && rep.Ledger.Charge == nil && rep.Ledger.Refund == nil && rep.Ledger.VoidedAt.IsZero())) {
		return nothingMatched("nothing holds %s: never sent (under this prefix and these streams), or expired", rep.Key)
	}
	return nil
}

// printRecord prints the key's record and lock.
func printRecord(w io.Writer, rep *admin.KeyReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	recordRows(rep, func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) })
	_ = tw.Flush()
}

func recordRows(rep *admin.KeyReport, row func(k, v string)) {
	row("key", rep.Key)
	rec := rep.Record
	if rec == nil {
		row("record", "none (never seen, expired a retention after its last answer, or evicted)")
	} else {
		row("record", rec.Says())
		row("  state", string(rec.State))
		if rec.Format == 1 {
			row("  format", "before contract v1.2 (upgraded by the next worker that touches it)")
		}
		row("  command", rec.Kind)
		row("  fingerprint", rec.Fingerprint)
		if rec.State != admin.StateCompleted {
			row("  tries", fmt.Sprintf("%d of %d", rec.Tries, rec.MaxTries))
			row("  effect", rec.Effect)
		}
		if !rec.DeadAt.IsZero() {
			row("  dead_at", formatTime(rec.DeadAt))
			row("  dead_effect", rec.DeadEffect)
		}
		if !rec.DeadBefore.IsZero() {
			row("  dead_before", formatTime(rec.DeadBefore)+" (messages published until then answer as that dead letter)")
		}
		if rec.Voided {
			row("  voided", "true")
		}
		if rec.HasBody {
			row("  body", "kept for the resolver")
		}
		if o := rec.Outcome; o != nil {
			row("  outcome", outcomeText(o))
			row("  processed_at", formatTime(o.ProcessedAt))
			row("  attempts", strconv.Itoa(o.Attempts))
		}
		if rec.TTL > 0 {
			row("  expires in", rec.TTL.Round(time.Second).String())
		}
	}
	if l := rep.Lock; l != nil {
		row("lock", fmt.Sprintf("held by %s, %v left", l.Holder, l.TTL.Round(time.Millisecond)))
	} else {
		row("lock", "free")
	}
}

// printReport prints everything a report holds.
func printReport(w io.Writer, rep *admin.KeyReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	recordRows(rep, row)
	if r := rep.Result; r != nil {
		row("RESULTS", fmt.Sprintf("#%d %s, stored %s", r.Sequence, outcomeText(&r.Result), formatTime(r.Stored)))
	} else {
		row("RESULTS", "no outcome")
	}
	row("dead letters", fmt.Sprintf("%d (among the newest %d of %d)", len(rep.DeadLetters), rep.DeadLettersRead, rep.DeadLettersTotal))
	for _, dl := range rep.DeadLetters {
		row(fmt.Sprintf("  #%d", dl.Sequence), fmt.Sprintf("%s, effect %s, %d deliveries: %s", formatTime(dl.DeadLettered), dl.Effect, dl.Deliveries, oneLineText(dl.Reason, 100)))
	}
	if rep.Resolution != nil {
		row("resolution", "scheduled: the resolver asks the provider at "+formatTime(*rep.Resolution))
	} else {
		row("resolution", "not scheduled")
	}
	if l := rep.Ledger; l != nil {
		row("provider", fmt.Sprintf("simulated: %d charge call(s)", l.Calls))
		if l.Charge != nil {
			row("  charge", string(l.Charge))
		}
		if l.Refund != nil {
			row("  refund", string(l.Refund))
		}
		if l.Refunded > 0 {
			row("  refunded", strconv.FormatInt(l.Refunded, 10))
		}
		if !l.VoidedAt.IsZero() {
			row("  voided", formatTime(l.VoidedAt))
		}
	} else {
		row("provider", "no simulated provider's ledger here (a real provider: ask it by key)")
	}
	if rep.Record != nil {
		if rep.Eviction.Allowed {
			row("evictable", "yes: "+rep.Eviction.Means)
		} else {
			row("evictable", "no: "+rep.Eviction.Refused)
		}
	}
	for _, e := range rep.Audit {
		row("audit", fmt.Sprintf("%s %s by %s: %s", formatTime(e.At), e.Action, e.Who, e.Detail))
	}
	_ = tw.Flush()
}

func outcomeText(r *messages.Result) string {
	s := string(r.Status)
	if r.Code != "" {
		s += " " + r.Code
	}
	if len(r.Data) > 0 && string(r.Data) != "null" {
		s += " " + string(r.Data)
	}
	return s
}

func printTimeline(w io.Writer, rep *admin.KeyReport, ev []admin.Event) {
	fmt.Fprintf(w, "timeline of %s (read %s)\n", rep.Key, rep.At.UTC().Format(time.RFC3339))
	if len(ev) == 0 {
		fmt.Fprintln(w, "no dated event")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	nowShown := false
	for _, e := range ev {
		if e.Future && !nowShown {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", rep.At.UTC().Format("2006-01-02T15:04:05.000Z"), "now", "(read)")
			nowShown = true
		}
		line := e.What
		if e.Detail != "" {
			line += ": " + oneLineText(e.Detail, 120)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.At.UTC().Format("2006-01-02T15:04:05.000Z"), e.Source, line)
	}
	_ = tw.Flush()
	if rep.Record != nil {
		fmt.Fprintf(w, "now: %s\n", rep.Record.Says())
	}
}

type jsonReport struct {
	Key        string             `json:"key"`
	At         time.Time          `json:"at"`
	Record     *jsonRecord        `json:"record"`
	Lock       *jsonLock          `json:"lock"`
	Result     *jsonStoredResult  `json:"result"`
	DLQ        []jsonDeadLetter   `json:"dead_letters"`
	DLQRead    int                `json:"dead_letters_read"`
	DLQTotal   uint64             `json:"dead_letters_total"`
	Resolution *time.Time         `json:"resolution_next,omitempty"`
	Ledger     *admin.Ledger      `json:"provider_ledger,omitempty"`
	Audit      []admin.AuditEntry `json:"audit,omitempty"`
	Eviction   jsonEviction       `json:"eviction"`
	Problems   []string           `json:"problems,omitempty"`
	Timeline   []jsonEvent        `json:"timeline"`
}

type jsonRecord struct {
	State       string            `json:"state"`
	Says        string            `json:"says"`
	Format      int               `json:"format"`
	Command     string            `json:"command"`
	Fingerprint string            `json:"fingerprint"`
	Tries       int               `json:"tries"`
	MaxTries    int               `json:"max_tries"`
	Effect      string            `json:"effect,omitempty"`
	DeadAt      *time.Time        `json:"dead_at,omitempty"`
	DeadEffect  string            `json:"dead_effect,omitempty"`
	Voided      bool              `json:"voided"`
	Outcome     *messages.Result  `json:"outcome,omitempty"`
	TTLSeconds  float64           `json:"ttl_seconds"`
	Fields      map[string]string `json:"fields"`
}

type jsonLock struct {
	Holder     string  `json:"holder"`
	TTLSeconds float64 `json:"ttl_seconds"`
}

type jsonStoredResult struct {
	Sequence uint64          `json:"sequence"`
	Stored   time.Time       `json:"stored"`
	Result   messages.Result `json:"outcome"`
}

type jsonEviction struct {
	Allowed bool   `json:"allowed"`
	Refused string `json:"refused,omitempty"`
	Means   string `json:"means,omitempty"`
}

type jsonEvent struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"`
	What   string    `json:"what"`
	Detail string    `json:"detail,omitempty"`
	Future bool      `json:"future,omitempty"`
}

func jsonEvents(ev []admin.Event) []jsonEvent {
	out := make([]jsonEvent, 0, len(ev))
	for _, e := range ev {
		out = append(out, jsonEvent{At: e.At, Source: e.Source, What: e.What, Detail: e.Detail, Future: e.Future})
	}
	return out
}

func jsonReportOf(rep *admin.KeyReport) jsonReport {
	j := jsonReport{Key: rep.Key, At: rep.At, DLQ: jsonDeadLetters(rep.DeadLetters), DLQRead: rep.DeadLettersRead,
		DLQTotal: rep.DeadLettersTotal, Resolution: rep.Resolution, Ledger: rep.Ledger, Audit: rep.Audit,
		Eviction: jsonEviction{Allowed: rep.Eviction.Allowed, Refused: rep.Eviction.Refused, Means: rep.Eviction.Means},
		Problems: rep.Problems, Timeline: jsonEvents(rep.Timeline())}
	if r := rep.Record; r != nil {
		jr := &jsonRecord{State: string(r.State), Says: r.Says(), Format: r.Format, Command: r.Kind, Fingerprint: r.Fingerprint,
			Tries: r.Tries, MaxTries: r.MaxTries, Effect: r.Effect, DeadEffect: r.DeadEffect, Voided: r.Voided,
			Outcome: r.Outcome, TTLSeconds: r.TTL.Seconds(), Fields: r.Fields}
		if !r.DeadAt.IsZero() {
			jr.DeadAt = &r.DeadAt
		}
		j.Record = jr
	}
	if l := rep.Lock; l != nil {
		j.Lock = &jsonLock{Holder: l.Holder, TTLSeconds: l.TTL.Seconds()}
	}
	if r := rep.Result; r != nil {
		j.Result = &jsonStoredResult{Sequence: r.Sequence, Stored: r.Stored, Result: r.Result}
	}
	return j
}
