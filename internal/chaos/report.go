package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is what one scenario came to.
type Result struct {
	Scenario *Scenario
	// Stats is what the auditor counted; Workers what happened to the
	// worker processes.
	Stats   Stats
	Workers workerStats
	// Faults are the faults injected, in order.
	Faults []Fault
	// Violations are the auditor's findings, by invariant.
	Violations map[Invariant][]string
	// Notes are facts for the report; Counters the workers' own counters
	// (of those alive at the end), by metric name.
	Notes    []string
	Counters map[string]float64
	// Uncovered is what the scenario did not exercise (Scenario.Covers);
	// under Options.Strict it fails the scenario.
	Uncovered []string
	strict    bool
	// Start is when the scenario began; Duration how long it took in all;
	// DrainTime how long COMMANDS took to drain after the load.
	Start     time.Time
	Duration  time.Duration
	DrainTime time.Duration
	// Dir keeps the workers' logs of a scenario that did not pass; "" once
	// removed.
	Dir string
}

// Passed reports whether the scenario showed no violation, or, for a
// negative control, whether it showed every violation it must (and no
// race or panic: those are bugs whatever the setting).
func (r *Result) Passed() bool {
	if r.strict && len(r.Uncovered) > 0 {
		return false
	}
	if r.Scenario.IsControl() {
		for _, inv := range r.Scenario.Control.Expect {
			if len(r.Violations[inv]) == 0 {
				return false
			}
		}
		return len(r.Violations[Workers]) == 0
	}
	for _, vs := range r.Violations {
		if len(vs) > 0 {
			return false
		}
	}
	return true
}

// Recovery returns the median and the longest time to recover over the
// faults, and how many faults were followed by no answer in time.
func (r *Result) Recovery() (median, longest time.Duration, unanswered int) {
	var ds []time.Duration
	for _, f := range r.Faults {
		if f.Recovery < 0 {
			unanswered++
			continue
		}
		ds = append(ds, f.Recovery)
	}
	if len(ds) == 0 {
		return 0, 0, unanswered
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1], unanswered
}

// ReportMeta describes a run of the suite, for the report's head.
type ReportMeta struct {
	Started  time.Time
	Elapsed  time.Duration
	Duration time.Duration // per scenario
	Rate     float64
	Command  string // how to run it again
}

// WriteReport writes the suite's report: the scenario x invariant table,
// the negative controls, every fault with its time to recover, and the
// violations. markdown selects Markdown; otherwise it is plain text for a
// terminal.
func WriteReport(w io.Writer, meta ReportMeta, results []*Result, markdown bool) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	var scenarios, controls []*Result
	for _, r := range results {
		if r.Scenario.IsControl() {
			controls = append(controls, r)
		} else {
			scenarios = append(scenarios, r)
		}
	}
	commands, faults, violations := 0, 0, 0
	for _, r := range scenarios {
		commands += r.Stats.Commands
		faults += len(r.Faults)
		for _, vs := range r.Violations {
			violations += len(vs)
		}
	}
	shown := 0
	for _, r := range controls {
		if r.Passed() {
			shown++
		}
	}
	h := func(level int, title string) {
		if markdown {
			p("\n%s %s\n\n", strings.Repeat("#", level), title)
		} else {
			p("\n%s\n%s\n", title, strings.Repeat("=-"[level-1:level], len(title)))
		}
	}
	if markdown {
		p("# idempay chaos report\n\n")
	} else {
		p("idempay chaos report\n")
	}
	p("%s; %v of load and faults per scenario at %.0f new commands/s; %v in all.\n",
		meta.Started.Format(time.RFC3339), meta.Duration, meta.Rate, meta.Elapsed.Round(time.Second))
	p("%d scenarios: %d commands, %d faults injected, %d violations. %d of %d negative controls showed the violation they must.\n",
		len(scenarios), commands, faults, violations, shown, len(controls))
	if meta.Command != "" {
		p("Run again: %s\n", meta.Command)
	}

	h(2, "Scenarios")
	head := make([]string, 0, 8+len(Invariants))
	head = append(head, "scenario", "commands", "sends", "poison", "faults", "provider calls beyond the first", "recovery median / max")
	for _, inv := range Invariants {
		head = append(head, string(inv))
	}
	head = append(head, "result")
	rows := make([][]string, 0, len(scenarios))
	for _, r := range scenarios {
		med, longest, none := r.Recovery()
		rec := "-"
		if len(r.Faults) > 0 {
			rec = fmt.Sprintf("%v / %v", med.Round(10*time.Millisecond), longest.Round(10*time.Millisecond))
			if none > 0 {
				rec += fmt.Sprintf(" (%d unanswered)", none)
			}
		}
		nf := strconv.Itoa(len(r.Faults))
		if r.Scenario.Condition != "" {
			nf += " + condition"
		}
		row := []string{r.Scenario.Name, strconv.Itoa(r.Stats.Commands), strconv.Itoa(r.Stats.Sends), strconv.Itoa(r.Stats.PoisonAcked),
			nf, strconv.FormatInt(r.Stats.ExtraCalls, 10), rec}
		for _, inv := range Invariants {
			if n := len(r.Violations[inv]); n > 0 {
				row = append(row, fmt.Sprintf("%d violations", n))
			} else {
				row = append(row, "ok")
			}
		}
		row = append(row, passWord(r))
		rows = append(rows, row)
	}
	table(w, head, rows, markdown)

	if len(controls) > 0 {
		h(2, "Negative controls")
		p("Each runs a setting the \"Not covered\" table of docs/guarantees.md names, and must show its violation.\n\n")
		head := make([]string, 0, 5+len(Invariants))
		head = append(head, "control", "setting", "commands", "must show")
		for _, inv := range Invariants {
			head = append(head, string(inv))
		}
		head = append(head, "result")
		rows := make([][]string, 0, len(controls))
		for _, r := range controls {
			var must []string
			for _, inv := range r.Scenario.Control.Expect {
				must = append(must, string(inv))
			}
			row := []string{r.Scenario.Name, r.Scenario.Proves, strconv.Itoa(r.Stats.Commands), strings.Join(must, ", ")}
			for _, inv := range Invariants {
				n := len(r.Violations[inv])
				switch {
				case n > 0:
					row = append(row, fmt.Sprintf("%d violations", n))
				case slices.Contains(r.Scenario.Control.Expect, inv):
					row = append(row, "NOT SHOWN")
				default:
					row = append(row, "ok")
				}
			}
			row = append(row, passWord(r))
			rows = append(rows, row)
		}
		table(w, head, rows, markdown)
	}

	if !markdown {
		for _, r := range results {
			if !r.Passed() {
				writeViolations(w, r, markdown)
			}
		}
		return
	}

	h(2, "What each scenario proves")
	for _, r := range results {
		cond := ""
		if r.Scenario.Condition != "" {
			cond = " Condition: " + r.Scenario.Condition + "."
		}
		p("- **%s**: %s.%s\n", r.Scenario.Name, r.Scenario.Proves, cond)
	}

	h(2, "Faults and time to recover")
	p("Recovery is the time from a fault's end until a fresh command sent then was answered.\n")
	for _, r := range scenarios {
		if len(r.Faults) == 0 {
			continue
		}
		h(3, r.Scenario.Name)
		var rows [][]string
		for i, f := range r.Faults {
			lasted, rec := "-", "no answer in 30s"
			if !f.Healed.IsZero() {
				lasted = f.Healed.Sub(f.At).Round(time.Millisecond).String()
			}
			if f.Recovery >= 0 {
				rec = f.Recovery.Round(time.Millisecond).String()
			}
			rows = append(rows, []string{strconv.Itoa(i + 1), f.Kind, f.Target,
				fmt.Sprintf("+%.1fs", f.At.Sub(r.Start).Seconds()), lasted, rec})
		}
		table(w, []string{"#", "fault", "target", "at", "lasted", "recovery"}, rows, markdown)
	}

	h(2, "Details")
	for _, r := range results {
		h(3, r.Scenario.Name)
		s := r.Stats
		p("- commands %d (sends %d; %d never acknowledged by JetStream); outcomes: %d succeeded, %d failed; dead letters: %d dead_lettered, %d outcome_unknown; re-uses refused %d\n",
			s.Commands, s.Sends, s.Unconfirmed, s.Succeeded, s.Failed, s.DeadLettered, s.OutcomeUnknown, s.Reused)
		p("- poison messages %d (%d acknowledged); provider calls beyond the first %d\n", s.Poison, s.PoisonAcked, s.ExtraCalls)
		p("- workers: %d started, %d SIGKILLed by the suite, %d SIGTERMed, killed themselves at failpoints: %s\n",
			r.Workers.started, r.Workers.killed, r.Workers.terminated, countsString(r.Workers.selfKills))
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
		if len(r.Uncovered) > 0 {
			p("- not exercised in this run: %s\n", strings.Join(r.Uncovered, "; "))
		}
		p("- drained %v after the load; %v in all\n", r.DrainTime.Round(100*time.Millisecond), r.Duration.Round(100*time.Millisecond))
		if r.Dir != "" {
			p("- workers' logs kept in %s\n", r.Dir)
		}
		writeViolations(w, r, markdown)
	}
}

func passWord(r *Result) string {
	switch {
	case r.strict && len(r.Uncovered) > 0:
		return "FAIL: not exercised: " + strings.Join(r.Uncovered, "; ")
	case r.Passed() && r.Scenario.IsControl():
		return "shows it"
	case r.Passed():
		return "PASS"
	case r.Scenario.IsControl():
		return "FAIL: violation not shown"
	default:
		return "FAIL"
	}
}

// writeViolations lists a scenario's violations, at most 10 per invariant.
func writeViolations(w io.Writer, r *Result, markdown bool) {
	for _, inv := range Invariants {
		vs := r.Violations[inv]
		if len(vs) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d violations of %q:\n", r.Scenario.Name, len(vs), inv)
		for i, v := range vs {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more\n", len(vs)-10)
				break
			}
			if markdown {
				fmt.Fprintf(w, "\n```text\n%s\n```\n", v)
			} else {
				fmt.Fprintf(w, "  - %s\n", strings.ReplaceAll(v, "\n", "\n    "))
			}
		}
	}
}

func countsString(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// table writes a Markdown table, or an aligned plain one.
func table(w io.Writer, head []string, rows [][]string, markdown bool) {
	if markdown {
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
		for _, row := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintln(w)
		return
	}
	width := make([]int, len(head))
	for i, c := range head {
		width[i] = len(c)
	}
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	line := func(cells []string) {
		parts := make([]string, len(cells))
		for i, c := range cells {
			parts[i] = fmt.Sprintf("%-*s", width[i], c)
		}
		fmt.Fprintln(w, strings.TrimRight(strings.Join(parts, "  "), " "))
	}
	line(head)
	for _, row := range rows {
		line(row)
	}
}
