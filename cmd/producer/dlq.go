package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// dlqCmd is `producer dlq`: the dead letters, for operators.
type dlqCmd struct {
	List   dlqListCmd   `cmd:"" help:"List the dead letters the filters select: key, kind, effect, status, deliveries, age, reason. Status is what the key's record says now (asked of the workers' lookup service): pending (still dead-lettered: a replay may help), replaying, resolved (the key has its outcome: replayed, re-sent or resolved), voided, superseded (a newer dead letter of the key exists), expired (no record), unchecked (no worker answered). Exit status 3 when none matches."`
	Show   dlqShowCmd   `cmd:"" help:"Show every dead letter of a key, with its body and headers."`
	Replay dlqReplayCmd `cmd:"" help:"Re-drive dead letters under their keys and print each answer. With <key>: the key's newest dead letter (refused while the duplicate window would drop it). Without: every pending one the filters select (and expired ones whose effect was none), one per key; the others are skipped and counted. Exit status 0 when every replay got its key's outcome (succeeded or failed), 1 otherwise, 3 when nothing was replayable."`
	Purge  dlqPurgeCmd  `cmd:"" help:"Delete dead letters: every copy of <key>, or every one the filters select (--all for all of them). The keys' records are untouched: a dead key keeps no outcome either way and can still be re-sent. Exit status 3 when none matches."`
}

// dlqFilterFlags select dead letters, alike in list, replay and purge.
type dlqFilterFlags struct {
	Kind      []string `name:"kind" sep:"," placeholder:"KIND" help:"Only dead letters of these command kinds (comma-separated or repeated), e.g. payment.charge."`
	Since     string   `name:"since" placeholder:"AGE|TIME" help:"Only dead letters at most this old (a Go duration, e.g. 1h) or dead-lettered at or after this time (RFC 3339)."`
	Before    string   `name:"before" placeholder:"AGE|TIME" help:"Only dead letters at least this old (a Go duration) or dead-lettered before this time (RFC 3339)."`
	Reason    string   `name:"reason" placeholder:"TEXT" help:"Only dead letters whose reason (Dlq-Reason) contains TEXT, ignoring case."`
	Effect    string   `name:"effect" enum:",none,unknown" default:"" help:"Only dead letters whose clients were told this (Dlq-Effect): none (dead_lettered) or unknown (outcome_unknown)."`
	Status    []string `name:"status" sep:"," placeholder:"STATUS" help:"Only dead letters with these statuses: pending, replaying, resolved, voided, superseded, expired, unchecked."`
	Replayed  bool     `name:"replayed" help:"Only dead letters whose key moved on since: replaying, resolved or superseded (e.g. to purge what was replayed)."`
	ScanLimit int      `name:"scan-limit" env:"DLQ_SCAN_LIMIT" default:"10000" help:"How many of the newest dead letters to read; older ones are left out (the output says so)."`
}

// filter returns the flags as an admin.Filter; its error names the flag.
func (f *dlqFilterFlags) filter(now time.Time) (*admin.Filter, error) {
	out := &admin.Filter{Kinds: f.Kind, Reason: f.Reason, Effect: f.Effect, Replayed: f.Replayed}
	var err error
	if out.Since, err = parseAge("--since", f.Since, now); err != nil {
		return nil, err
	}
	if out.Before, err = parseAge("--before", f.Before, now); err != nil {
		return nil, err
	}
	for _, s := range f.Status {
		st, err := admin.ParseStatus(s)
		if err != nil {
			return nil, fmt.Errorf("--status: %w", err)
		}
		out.Statuses = append(out.Statuses, st)
	}
	if f.ScanLimit < 1 {
		return nil, fmt.Errorf("--scan-limit must be at least 1, got %d", f.ScanLimit)
	}
	return out, nil
}

// parseAge reads an age or a time (admin.ParseAge), naming flag.
func parseAge(flag, s string, now time.Time) (time.Time, error) {
	t, err := admin.ParseAge(s, now)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %w", flag, err)
	}
	return t, nil
}

// list connects and returns the dead letters the flags select.
func (f *dlqFilterFlags) list(ctx context.Context, g *Globals, command string, keys ...string) (*admin.Admin, func(), *admin.Listing, error) {
	if g.Tenant != "" {
		return nil, nil, nil, usageError(command, errNoTenantDLQ)
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return nil, nil, nil, usageError(command, err)
	}
	filter.Keys = keys
	a, closeFn, err := connectAdmin(ctx, g, nil, "", f.ScanLimit)
	if err != nil {
		return nil, nil, nil, err
	}
	l, err := a.DeadLetters(ctx, filter)
	if err != nil {
		closeFn()
		return nil, nil, nil, opsError(err)
	}
	return a, closeFn, l, nil
}

type dlqListCmd struct {
	dlqFilterFlags
}

func (c *dlqListCmd) Run(ctx context.Context, g *Globals, out *output) error {
	_, closeFn, l, err := c.list(ctx, g, "dlq list")
	if err != nil {
		return err
	}
	defer closeFn()
	if g.JSON {
		if err := printJSON(out, jsonEntries(l.Entries)); err != nil {
			return err
		}
	} else {
		printEntries(out, l)
	}
	if len(l.Entries) == 0 {
		return nothingMatched("no dead letter matches")
	}
	return nil
}

// printEntries prints a listing as a table and a summary line.
func printEntries(out *output, l *admin.Listing) {
	if len(l.Entries) > 0 {
		tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tKIND\tEFFECT\tSTATUS\tDELIVERIES\tAGE\tREASON")
		for _, e := range l.Entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Key, e.Kind, e.Effect, statusText(&e),
				e.Deliveries, time.Since(e.DeadLettered).Round(time.Second), oneLineText(e.Reason, 80))
		}
		_ = tw.Flush()
	}
	fmt.Fprintln(out.stdout, summaryLine(l))
}

// statusText is an entry's status, with the outcome when resolved.
func statusText(e *admin.Entry) string {
	if e.Status == admin.StatusResolved && e.State.Outcome != nil {
		s := "resolved: " + string(e.State.Outcome.Status)
		if e.State.Outcome.Code != "" {
			s += " " + e.State.Outcome.Code
		}
		return s
	}
	return string(e.Status)
}

func summaryLine(l *admin.Listing) string {
	s := fmt.Sprintf("%d dead letter(s) match (%s)", len(l.Entries), joinCounts(l.Counts))
	if l.Truncated() {
		s += fmt.Sprintf("; read the newest %d of %d (--scan-limit)", l.Read, l.Total)
	}
	return s
}

type jsonEntry struct {
	jsonDeadLetter
	Status     string             `json:"status"`
	State      *messages.KeyState `json:"state,omitempty"`
	StateError string             `json:"state_error,omitempty"`
}

func jsonEntries(entries []admin.Entry) []jsonEntry {
	out := make([]jsonEntry, 0, len(entries))
	for _, e := range entries {
		j := jsonEntry{jsonDeadLetter: jsonDeadLetters([]client.DeadLetter{e.DeadLetter})[0], Status: string(e.Status), StateError: e.StateError}
		if e.State.State != "" {
			st := e.State
			j.State = &st
		}
		out = append(out, j)
	}
	return out
}

// dlqKey is the <key> of dlq show.
type dlqKey struct {
	Key string `arg:"" name:"key" help:"The idempotency key."`
}

// connect checks <key> (a usage error of command if it is not a key), then
// connects as Globals.connect does.
func (k *dlqKey) connect(command string, g *Globals, out *output) (*client.Client, func(), error) {
	if g.Tenant != "" {
		return nil, nil, usageError(command, errNoTenantDLQ)
	}
	if !messages.ValidKey(k.Key) {
		return nil, nil, usageError(command, badKey(k.Key))
	}
	return g.connect(out)
}

// optionalKey is the [<key>] of dlq replay and purge.
type optionalKey struct {
	Key string `arg:"" optional:"" name:"key" help:"The idempotency key; without it, the filters select the dead letters."`
}

// check returns a usage error for a key that is not one, or a key with
// filters.
func (k *optionalKey) check(command string, f *dlqFilterFlags) error {
	if k.Key == "" {
		return nil
	}
	if !messages.ValidKey(k.Key) {
		return usageError(command, badKey(k.Key))
	}
	probe := *f
	probe.ScanLimit = 0
	if !reflect.DeepEqual(probe, dlqFilterFlags{}) {
		return usageError(command, errors.New("<key> or filters, not both"))
	}
	return nil
}

// errNoTenantDLQ: dead letters are an operator's, named by operation key.
var errNoTenantDLQ = errors.New("--tenant does not apply to dlq: dead letters are named by their operation (scoped) key; see client.ScopedKey")

type dlqShowCmd struct{ dlqKey }

func (c *dlqShowCmd) Run(ctx context.Context, g *Globals, out *output) error {
	cl, closeFn, err := c.connect("dlq show", g, out)
	if err != nil {
		return err
	}
	defer closeFn()
	dls, err := cl.DeadLettersOf(ctx, c.Key)
	if err != nil {
		return dlqError(err)
	}
	if g.JSON {
		return printJSON(out, jsonDeadLetters(dls))
	}
	for i, dl := range dls {
		if i > 0 {
			fmt.Fprintln(out.stdout)
		}
		tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "sequence\t%d\nkey\t%s\nkind\t%s\neffect\t%s\ndeliveries\t%d\npublished\t%s\ndead-lettered\t%s\nreason\t%s\nbody\t%s\n",
			dl.Sequence, dl.Key, dl.Kind, dl.Effect, dl.Deliveries, formatTime(dl.Published),
			formatTime(dl.DeadLettered), dl.Reason, dl.Body)
		for _, name := range sortedHeaders(dl.Header) {
			fmt.Fprintf(tw, "header %s\t%s\n", name, strings.Join(dl.Header.Values(name), ", "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

type dlqReplayCmd struct {
	optionalKey
	dlqFilterFlags
	DryRun bool `name:"dry-run" help:"Do not replay: list what would be replayed and what would be skipped, and why."`
}

func (c *dlqReplayCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check("dlq replay", &c.dlqFilterFlags); err != nil {
		return err
	}
	if c.Key != "" && !c.DryRun {
		return c.one(ctx, g, out)
	}
	var keys []string
	if c.Key != "" {
		keys = []string{c.Key}
	}
	a, closeFn, l, err := c.list(ctx, g, "dlq replay", keys...)
	if err != nil {
		return err
	}
	defer closeFn()
	rep := a.Replay(ctx, l.Entries, c.DryRun)
	if g.JSON {
		if err := printJSON(out, jsonReplay(rep)); err != nil {
			return err
		}
	} else {
		printReplay(out, rep)
		fmt.Fprintln(out.stdout, summaryLine(l))
	}
	switch {
	case rep.Replayed == 0:
		return nothingMatched("nothing to replay: %d dead letter(s) match, none replayable", len(l.Entries))
	case c.DryRun, rep.Succeeded+rep.Failed == rep.Replayed:
		return nil
	}
	return &answerError{code: exitFailed, err: fmt.Errorf("%d of %d replay(s) got no outcome (rejected %d, no answer %d)",
		rep.Replayed-rep.Succeeded-rep.Failed, rep.Replayed, rep.Rejected, rep.NoAnswer)}
}

// one replays the newest dead letter of <key> and prints its answer.
func (c *dlqReplayCmd) one(ctx context.Context, g *Globals, out *output) error {
	cl, closeFn, err := g.connect(out)
	if err != nil {
		return err
	}
	defer closeFn()
	reply, err := cl.Replay(ctx, c.Key)
	if reply == nil {
		return dlqError(err)
	}
	return out.answer(g.JSON, c.Key, reply, err)
}

func printReplay(out *output, rep *admin.ReplayReport) {
	tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tKIND\tREPLAY")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Entry.Key, r.Entry.Kind, replayText(&r, rep.DryRun))
	}
	_ = tw.Flush()
	verb := "replayed"
	if rep.DryRun {
		verb = "would replay"
	}
	fmt.Fprintf(out.stdout, "%s %d (succeeded %d, failed %d, rejected %d, no answer %d); skipped %d\n",
		verb, rep.Replayed, rep.Succeeded, rep.Failed, rep.Rejected, rep.NoAnswer, rep.Skipped)
}

func replayText(r *admin.ReplayResult, dryRun bool) string {
	switch {
	case r.Skipped != "":
		return "skipped (" + string(r.Entry.Status) + "): " + r.Skipped
	case dryRun:
		return "would replay (" + string(r.Entry.Status) + ")"
	case r.Answer != nil:
		s := string(r.Answer.Status)
		if r.Answer.Code != "" {
			s += " " + r.Answer.Code
		}
		return s
	case r.Err != nil:
		return "no answer: " + cli.OneLine(r.Err)
	}
	return "no answer"
}

type jsonReplayResult struct {
	Key     string           `json:"key"`
	Command string           `json:"command"`
	Status  string           `json:"status"`
	Skipped string           `json:"skipped,omitempty"`
	Answer  *messages.Result `json:"answer,omitempty"`
	Error   string           `json:"error,omitempty"`
}

type jsonReplayReport struct {
	DryRun    bool               `json:"dry_run"`
	Replayed  int                `json:"replayed"`
	Succeeded int                `json:"succeeded"`
	Failed    int                `json:"failed"`
	Rejected  int                `json:"rejected"`
	NoAnswer  int                `json:"no_answer"`
	Skipped   int                `json:"skipped"`
	Results   []jsonReplayResult `json:"results"`
}

func jsonReplay(rep *admin.ReplayReport) jsonReplayReport {
	j := jsonReplayReport{DryRun: rep.DryRun, Replayed: rep.Replayed, Succeeded: rep.Succeeded, Failed: rep.Failed,
		Rejected: rep.Rejected, NoAnswer: rep.NoAnswer, Skipped: rep.Skipped, Results: []jsonReplayResult{}}
	for _, r := range rep.Results {
		jr := jsonReplayResult{Key: r.Entry.Key, Command: r.Entry.Kind, Status: string(r.Entry.Status), Skipped: r.Skipped, Answer: r.Answer}
		if r.Err != nil && r.Answer == nil {
			jr.Error = r.Err.Error()
		}
		j.Results = append(j.Results, jr)
	}
	return j
}

type dlqPurgeCmd struct {
	optionalKey
	dlqFilterFlags
	All    bool `name:"all" help:"Purge every dead letter (the filters are otherwise required, so that no typo purges them all)."`
	DryRun bool `name:"dry-run" help:"Do not purge: list what would be purged."`
}

func (c *dlqPurgeCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if err := c.check("dlq purge", &c.dlqFilterFlags); err != nil {
		return err
	}
	var keys []string
	if c.Key != "" {
		keys = []string{c.Key}
	} else {
		probe := c.dlqFilterFlags
		probe.ScanLimit = 0
		if reflect.DeepEqual(probe, dlqFilterFlags{}) != c.All {
			if c.All {
				return usageError("dlq purge", errors.New("--all or filters, not both"))
			}
			return usageError("dlq purge", errors.New("say which dead letters: <key>, filters (--kind, --since, --before, --reason, --effect, --status, --replayed), or --all"))
		}
	}
	a, closeFn, l, err := c.list(ctx, g, "dlq purge", keys...)
	if err != nil {
		return err
	}
	defer closeFn()
	if len(l.Entries) == 0 {
		if c.Key != "" {
			return dlqError(fmt.Errorf("%w %s in %s", client.ErrDeadLetterNotFound, c.Key, g.DeadLetterStream))
		}
		fmt.Fprintln(out.stdout, summaryLine(l))
		return nothingMatched("no dead letter matches: nothing purged")
	}
	rep, err := a.Purge(ctx, l.Entries, c.DryRun)
	if c.DryRun {
		printEntries(out, l)
		fmt.Fprintf(out.stdout, "would purge %d dead letter(s) of %d key(s)\n", rep.Purged, len(rep.Keys))
		return nil
	}
	if rep != nil && rep.Purged > 0 {
		if c.Key != "" {
			fmt.Fprintf(out.stdout, "purged %d dead letter(s) of %s\n", rep.Purged, c.Key)
		} else {
			fmt.Fprintf(out.stdout, "purged %d dead letter(s) of %d key(s)\n", rep.Purged, len(rep.Keys))
		}
	}
	return opsError(err)
}

// dlqError gives "not found" and "not yet" their own exit status: 3, like
// every answer that is not there (yet).
func dlqError(err error) error {
	if errors.Is(err, client.ErrDeadLetterNotFound) || errors.Is(err, client.ErrInsideDedupeWindow) {
		return &answerError{code: exitNoAnswer, err: err}
	}
	return err
}

func badKey(key string) error {
	return fmt.Errorf("<key>: %q is not a UUID in canonical form (36 characters, lower-case hex, 8-4-4-4-12)", key)
}

type jsonDeadLetter struct {
	Sequence     uint64              `json:"sequence"`
	Key          string              `json:"key"`
	Kind         string              `json:"command"`
	Effect       string              `json:"effect"`
	Deliveries   int                 `json:"deliveries"`
	Reason       string              `json:"reason"`
	Published    *time.Time          `json:"published,omitempty"`
	DeadLettered time.Time           `json:"dead_lettered"`
	Body         json.RawMessage     `json:"body"`
	Header       map[string][]string `json:"header"`
}

func jsonDeadLetters(dls []client.DeadLetter) []jsonDeadLetter {
	out := make([]jsonDeadLetter, 0, len(dls))
	for _, dl := range dls {
		j := jsonDeadLetter{Sequence: dl.Sequence, Key: dl.Key, Kind: dl.Kind, Effect: dl.Effect, Deliveries: dl.Deliveries,
			Reason: dl.Reason, DeadLettered: dl.DeadLettered, Header: dl.Header}
		if !dl.Published.IsZero() {
			j.Published = &dl.Published
		}
		if json.Valid(dl.Body) {
			j.Body = dl.Body
		} else {
			j.Body, _ = json.Marshal(string(dl.Body)) //nolint:errchkjson // a string always encodes
		}
		out = append(out, j)
	}
	return out
}

func printJSON(out *output, v any) error {
	enc := json.NewEncoder(out.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339) + " (" + time.Since(t).Round(time.Second).String() + " ago)"
}

func oneLineText(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

func sortedHeaders(h map[string][]string) []string {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
