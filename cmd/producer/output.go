package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// output writes results to stdout and diagnostics to stderr.
type output struct {
	stdout, stderr io.Writer
}

// jsonAnswer is the --json form of an answer: the contract's answer object,
// plus how this publish went.
type jsonAnswer struct {
	messages.Result
	Publish *jsonPublish `json:"publish,omitempty"`
}

type jsonPublish struct {
	Duplicate bool    `json:"duplicate"`
	Stream    string  `json:"stream"`
	Sequence  uint64  `json:"sequence"`
	Attempts  int     `json:"attempts"`
	Source    string  `json:"source"`
	LatencyMS float64 `json:"latency_ms"`
}

// answer prints reply and returns the error that sets the exit status:
// nil for succeeded, an *answerError for failed, rejected or no answer.
func (o *output) answer(asJSON bool, key string, reply *client.Reply, err error) error {
	if reply.Result.Status == "" { // accepted, but no answer for this command
		return noAnswer(key, err)
	}
	if asJSON {
		a := jsonAnswer{Result: reply.Result}
		if reply.PublishAttempts > 0 {
			a.Publish = &jsonPublish{
				Duplicate: reply.Duplicate, Stream: reply.Stream, Sequence: reply.Sequence,
				Attempts: reply.PublishAttempts, Source: string(reply.Source),
				LatencyMS: float64(reply.Latency.Microseconds()) / 1000,
			}
		}
		if a.Data == nil {
			a.Data = json.RawMessage("null")
		}
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(a); werr != nil {
			return werr
		}
	} else {
		o.table(reply)
	}
	if err == nil {
		return nil
	}
	code := exitNoAnswer
	var rej *messages.RejectError
	switch {
	case errors.Is(err, client.ErrFailed):
		code = exitFailed
	case errors.As(err, &rej):
		code = exitRejected
	}
	return &answerError{code: code, err: err}
}

func (o *output) table(reply *client.Reply) {
	r := reply.Result
	w := tabwriter.NewWriter(o.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("key", r.Key)
	row("command", r.Kind)
	row("status", string(r.Status))
	if r.Code != "" {
		row("code", r.Code)
	}
	if r.Message != "" {
		row("message", r.Message)
	}
	for _, kv := range dataRows(r.Data) {
		row(kv[0], kv[1])
	}
	row("attempts", strconv.Itoa(r.Attempts))
	row("replayed", strconv.FormatBool(r.Replayed))
	if !r.ProcessedAt.IsZero() {
		row("processed_at", r.ProcessedAt.UTC().Format(time.RFC3339Nano))
	}
	if reply.PublishAttempts > 0 {
		pub := fmt.Sprintf("%s #%d", reply.Stream, reply.Sequence)
		if reply.Duplicate {
			// Inside the dedupe window: no worker saw this send, so the
			// answer is the key's stored one, replayed false as first sent.
			pub += ", duplicate: JetStream dropped this re-send (inside the dedupe window; no worker saw it)"
		}
		if reply.PublishAttempts > 1 {
			pub += fmt.Sprintf(", %d attempts", reply.PublishAttempts)
		}
		row("published", pub)
		row("answer from", source(reply.Source))
		row("latency", reply.Latency.Round(time.Microsecond).String())
	} else {
		row("answer from", source(reply.Source))
	}
	_ = w.Flush()
}

// source says where an answer came from; the results stream's is the
// key's stored outcome, read back rather than sent for this publish.
func source(s client.Source) string {
	if s == client.SourceResultStream {
		return string(s) + " (the key's stored outcome, read back)"
	}
	return string(s)
}

// dataRows flattens an answer's data object into sorted rows.
func dataRows(data json.RawMessage) [][2]string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		if len(data) > 0 && string(data) != "null" {
			return [][2]string{{"data", string(data)}}
		}
		return nil
	}
	rows := make([][2]string, 0, len(fields))
	for k, v := range fields {
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		rows = append(rows, [2]string{k, s})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
	return rows
}

// joinCounts formats a count map as "a 3, b 1", largest first.
func joinCounts[K ~string](m map[K]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
