package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// dlqCmd is `producer dlq`: the dead letters, for operators.
type dlqCmd struct {
	List   dlqListCmd   `cmd:"" help:"List the dead letters: key, kind, effect, deliveries, age, reason."`
	Show   dlqShowCmd   `cmd:"" help:"Show every dead letter of a key, with its body and headers."`
	Replay dlqReplayCmd `cmd:"" help:"Re-drive a key's newest dead letter under the same key, and print its answer (refused while the duplicate window would drop it)."`
	Purge  dlqPurgeCmd  `cmd:"" help:"Delete every dead letter of a key (the key keeps no outcome either way)."`
}

type dlqListCmd struct{}

func (*dlqListCmd) Run(ctx context.Context, g *Globals, out *output) error {
	if g.Tenant != "" {
		return usageError("dlq list", errNoTenantDLQ)
	}
	cl, closeFn, err := g.connect(out)
	if err != nil {
		return err
	}
	defer closeFn()
	dls, err := cl.DeadLetters(ctx)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, jsonDeadLetters(dls))
	}
	if len(dls) == 0 {
		fmt.Fprintln(out.stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tKIND\tEFFECT\tDELIVERIES\tAGE\tREASON")
	for _, dl := range dls {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", dl.Key, dl.Kind, dl.Effect, dl.Deliveries,
			time.Since(dl.DeadLettered).Round(time.Second), oneLineText(dl.Reason, 80))
	}
	return tw.Flush()
}

// dlqKey is the <key> of dlq show, replay and purge.
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

type dlqReplayCmd struct{ dlqKey }

func (c *dlqReplayCmd) Run(ctx context.Context, g *Globals, out *output) error {
	cl, closeFn, err := c.connect("dlq replay", g, out)
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

type dlqPurgeCmd struct{ dlqKey }

func (c *dlqPurgeCmd) Run(ctx context.Context, g *Globals, out *output) error {
	cl, closeFn, err := c.connect("dlq purge", g, out)
	if err != nil {
		return err
	}
	defer closeFn()
	n, err := cl.PurgeDeadLetters(ctx, c.Key)
	if err != nil {
		return dlqError(err)
	}
	fmt.Fprintf(out.stdout, "purged %d dead letter(s) of %s\n", n, c.Key)
	return nil
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
