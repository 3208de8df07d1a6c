package explore

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/pkg/messages"
)

// WriteMarkdown writes the run's report: the verdict, each seed's first
// findings with the command that replays it, the violations and faults
// and answers in all, and a row per seed.
func (s *Summary) WriteMarkdown(w io.Writer, engine string) {
	fmt.Fprintf(w, "# Fault explorer report\n\n")
	fmt.Fprintf(w, "- Engine: %s\n", engine)
	fmt.Fprintf(w, "- Seeds %d to %d (%d played%s), %d keys each and a cart seed's cart adds: %d keys, %d sends\n",
		s.Config.FirstSeed, s.Config.FirstSeed+uint64(s.Config.Seeds)-1, len(s.Seeds), stoppedNote(s), s.Config.Keys, s.Keys(), s.sends()) //nolint:gosec // a small count
	fmt.Fprintf(w, "- %d seeds at a time on one NATS and one Redis; %v in all\n", s.Config.Parallel, s.Duration.Round(1e9))
	fmt.Fprintf(w, "- Violations: **%d**, in %d of %d seeds\n\n", s.Violations(), s.failedSeeds(), len(s.Seeds))

	fmt.Fprintf(w, "## Violations by invariant\n\n| invariant | violations | seeds | what it promises |\n|---|---:|---:|---|\n")
	for _, inv := range ledger.Invariants {
		n, seeds := 0, 0
		for _, r := range s.Seeds {
			if c := r.Report.Count(inv); c > 0 {
				n += c
				seeds++
			}
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s |\n", inv, n, seeds, inv.Describe())
	}

	if s.Violations() > 0 {
		fmt.Fprintf(w, "\n## Findings\n\nThe first violation of each invariant in each seed, with the command that replays the seed.\n\n")
		for _, r := range s.Seeds {
			seen := map[ledger.Invariant]bool{}
			for _, v := range r.Report.Violations {
				if seen[v.Invariant] {
					continue
				}
				seen[v.Invariant] = true
				fmt.Fprintf(w, "- seed %d, `%s`, %s (%d in the seed): %s\n", r.Seed, ReplayCommand(r.Seed, r.Drawn), v.Invariant, r.Report.Count(v.Invariant), v.Text)
			}
		}
	}

	faults, answers, final, returns := map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	for _, r := range s.Seeds {
		for k, v := range r.Faults {
			faults[k] += v
		}
		for k, v := range r.Returns {
			returns[k] += v
		}
		for k, v := range r.Report.Stats.Answers {
			answers[k] += v
		}
		for k, v := range r.Report.Stats.Final {
			final[k] += v
		}
	}
	fmt.Fprintf(w, "\n## Faults injected, by type\n\n")
	writeCounts(w, "fault", faults)
	fmt.Fprintf(w, "\n## Keys by what they came to\n\n")
	writeCounts(w, "final answer", final)
	fmt.Fprintf(w, "\n## Answers told or heard, by status\n\n")
	writeCounts(w, "answer", answers)
	if len(returns) > 0 {
		fmt.Fprintf(w, "\n## Client sends without an answer, and repeated publishes\n\n")
		writeCounts(w, "the send", returns)
	}

	fmt.Fprintf(w, "\n## Per seed\n\n| seed | keys | workers | tries | retries | faults | succeeded | failed | dead_lettered | outcome_unknown | unanswered | drained | violations |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range s.Seeds {
		st := r.Report.Stats
		failed := 0
		for k, v := range st.Final {
			if strings.HasPrefix(k, "failed/") {
				failed += v
			}
		}
		viol := byInvariant(r.Report)
		if viol == "" {
			viol = "none"
		}
		fmt.Fprintf(w, "| %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %v | %s |\n", r.Seed, r.Keys, r.Settings.Workers, r.Settings.MaxTries,
			r.Settings.Retries, sum(r.Faults), st.Final["succeeded"], failed, st.Final["dead_lettered"], st.Final["outcome_unknown"], st.Final["unanswered"], r.Drained, viol)
	}
}

// WriteViolations writes every violation, one per line, each with the
// command that replays its seed.
func (s *Summary) WriteViolations(w io.Writer) {
	for _, r := range s.Seeds {
		for _, v := range r.Report.Violations {
			replay := ReplayCommand(r.Seed, r.Drawn)
			if messages.ValidKey(v.Key) { // not a cart's id
				replay += " KEY=" + v.Key // and print its history
			}
			fmt.Fprintf(w, "seed %d [%s] %s: %s\n", r.Seed, replay, v.Invariant, v.Text)
		}
	}
}

func writeCounts(w io.Writer, what string, m map[string]int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || (m[keys[i]] == m[keys[j]] && keys[i] < keys[j]) })
	fmt.Fprintf(w, "| %s | count |\n|---|---:|\n", what)
	for _, k := range keys {
		fmt.Fprintf(w, "| %s | %d |\n", k, m[k])
	}
}

func stoppedNote(s *Summary) string {
	if s.Stopped {
		return ", then stopped"
	}
	return ""
}

func (s *Summary) sends() int {
	n := 0
	for _, r := range s.Seeds {
		n += r.Report.Stats.Sends
	}
	return n
}

func (s *Summary) failedSeeds() int {
	n := 0
	for _, r := range s.Seeds {
		if !r.Report.OK() {
			n++
		}
	}
	return n
}
