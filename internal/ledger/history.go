package ledger

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// History is one key's whole story in in, a line per event in time order,
// times relative to the run's first send as in the violations' texts:
// every send (its route, when it began and returned, what it was told),
// every answer heard, every dead-letter copy, every provider call, then
// what the key holds at the end (RESULTS, its record, the provider). It is
// what a replay prints to show how a violation came about (explore
// --key).
func (in *Input) History(key string) []string {
	var base time.Time
	for _, s := range in.Sends {
		if base.IsZero() || s.At.Before(base) {
			base = s.At
		}
	}
	rel := func(t time.Time) string {
		if t.IsZero() {
			return "(never)"
		}
		return fmt.Sprintf("+%.3fs", t.Sub(base).Seconds())
	}
	type event struct {
		at   time.Time
		line string
	}
	var events []event
	add := func(at time.Time, format string, args ...any) {
		events = append(events, event{at, rel(at) + " " + fmt.Sprintf(format, args...)})
	}
	for _, s := range in.Sends {
		if s.Key != key {
			continue
		}
		route := "pkg/client"
		publish := fmt.Sprintf("%d publishes, duplicate %v", s.PublishAttempts, s.Duplicate)
		if s.Gateway {
			route, publish = "the gateway", "last publish by "+rel(s.LastPublish)
		}
		told := "nothing"
		if s.Told != nil {
			told = answerText(*s.Told)
		}
		add(s.At, "send (%s, %s) through %s: %s; accepted %v, %s; returned at %s told %s%s%s%s", s.Role, fingerprintOf(s.Command), route,
			commandText(s.Command), s.Accepted, publish, rel(s.Done), told, suffix(" key reused", s.KeyReused), suffix(", error: "+s.Err, s.Err != ""),
			suffix(", BROKEN: "+s.Broken, s.Broken != ""))
	}
	for _, h := range in.Heard {
		if h.Result.Key == key {
			add(h.At, "heard on %s: %s", h.Subject, answerText(h.Result))
		}
	}
	for _, dl := range in.DeadLetters {
		if dl.Key == key {
			add(dl.At, "dead-letter copy, Dlq-Effect %s (its message published at %s)", dl.Effect, rel(dl.Published))
		}
	}
	for _, c := range in.Calls {
		if c.Key != key {
			continue
		}
		effect := "no effect"
		if c.Effect {
			effect = "took effect at " + rel(c.EffectAt)
		}
		add(c.Start, "provider %s #%d (%s) until %s: %s%s", c.Op, c.N, c.Behaviour, rel(c.End), effect, suffix(", returned "+c.Err, c.Err != ""))
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at.Before(events[j].at) })
	out := make([]string, 0, len(events)+3)
	for _, e := range events {
		out = append(out, e.line)
	}
	if r, ok := in.Stored[key]; ok {
		out = append(out, "at the end, RESULTS: "+answerText(r))
	}
	if in.Records != nil {
		if r, ok := in.Records[key]; ok {
			out = append(out, fmt.Sprintf("at the end, its record: %s, %d tries, unknown %v, dead effect %q", r.State, r.Tries, r.Unknown, r.DeadEffect))
		} else {
			out = append(out, "at the end, no record")
		}
	}
	var held []string
	if ch, ok := in.Provider.Charges[key]; ok {
		held = append(held, "charge "+string(ch.AppendJSON(nil)))
	}
	if rf, ok := in.Provider.Refunds[key]; ok {
		held = append(held, fmt.Sprintf("refund %+v", rf))
	}
	if v, ok := in.Provider.Voided[key]; ok {
		held = append(held, "voided "+v)
	}
	if len(held) == 0 {
		held = append(held, "nothing")
	}
	return append(out, "at the end, the provider holds: "+strings.Join(held, "; "))
}

func answerText(r messages.Result) string {
	s := string(r.Status)
	if r.Code != "" {
		s += "/" + r.Code
	}
	if r.Fingerprint != "" {
		s += " of " + shortFP(r.Fingerprint)
	}
	if r.Replayed {
		s += " (replayed)"
	}
	if !r.ProcessedAt.IsZero() {
		s += " processed " + r.ProcessedAt.UTC().Format("15:04:05.000")
	}
	if len(r.Data) > 0 && string(r.Data) != "null" {
		s += " " + string(r.Data)
	}
	return s
}

func commandText(cmd messages.Command) string {
	switch c := cmd.(type) {
	case messages.ChargeRequest:
		return fmt.Sprintf("charge %s %d %s", c.AccountID, c.Amount, c.Currency)
	case messages.RefundRequest:
		return fmt.Sprintf("refund %d of %s", c.Amount, c.ChargeKey)
	}
	return cmd.Kind()
}

func fingerprintOf(cmd messages.Command) string { return "body " + shortFP(messages.Fingerprint(cmd)) }

func shortFP(fp string) string { return fp[:min(12, len(fp))] }

func suffix(s string, on bool) string {
	if on {
		return s
	}
	return ""
}
