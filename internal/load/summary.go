package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// Summary is what a Run saw.
type Summary struct {
	// RunID prefixes the run's account and cart ids; Seed reproduces its
	// commands (not its keys).
	RunID string `json:"run_id"`
	Seed  uint64 `json:"seed"`

	// Commands is the number of keys (refunds included); Sends the number of sends, duplicates
	// included; NotSent the sends planned but not made (the run was cut
	// short).
	Commands int `json:"commands"`
	Sends    int `json:"sends"`
	NotSent  int `json:"not_sent"`
	// DuplicatesSent counts the sends of a key after its first by kind:
	// racing, after, late, retry (Config.RetryUnanswered) and reuse
	// (Config.ReuseShare).
	DuplicatesSent map[SendKind]int `json:"duplicates_sent"`
	// DroppedByJetStream counts sends whose PubAck said duplicate: they never
	// reached a worker.
	DroppedByJetStream int `json:"dropped_by_jetstream"`
	// ReplayedByWorkers counts sends that reached a worker and were answered
	// with the stored outcome (replayed: true), without running again.
	ReplayedByWorkers int `json:"replayed_by_workers"`
	// Answered counts sends that got an answer.
	Answered int `json:"answered"`

	// ByStatus, ByCode and ByCommand count keys by their outcome (the
	// first answer for the key).
	ByStatus  map[messages.Status]int `json:"by_status"`
	ByCode    map[string]int          `json:"by_code"`
	ByCommand map[string]int          `json:"by_command"`
	// Errors counts sends without an answer, by reason; Unanswered is the
	// number of keys that got no answer at all.
	Errors     map[string]int `json:"errors"`
	Unanswered int            `json:"unanswered_keys"`

	// Elapsed is the run's wall time; Throughput the answered sends per
	// second; CommandsPerSecond the keys answered per second.
	Elapsed           time.Duration `json:"elapsed_ns"`
	Throughput        float64       `json:"throughput_per_s"`
	CommandsPerSecond float64       `json:"commands_per_s"`
	// Latency is publish to answer, over every answered send.
	Latency Latency `json:"latency"`

	// ReuseRefused counts the re-uses of a key with another payload
	// (Config.ReuseShare) refused as idempotency_key_reused, by a worker or
	// by the client. ReuseAccepted lists the keys whose re-use got an
	// outcome instead, or a refusal of another kind: it must be empty.
	ReuseRefused  int      `json:"reuse_refused"`
	ReuseAccepted []string `json:"reuse_accepted"`

	// Disagreeing lists the keys whose answers differ in anything but
	// "replayed" - status, code, message, data, attempts or processed_at -
	// or whose stored outcome the client found at odds with the command
	// (client.ErrKeyReused on a true retry). It must be empty: one key, one
	// outcome.
	Disagreeing []string `json:"disagreeing_keys"`

	// Outcomes maps every answered key to its command and first answer, for
	// CheckLedger. Not encoded.
	Outcomes map[string]Answered `json:"-"`
}

// Latency percentiles, in the Summary's JSON as nanoseconds.
type Latency struct {
	P50 time.Duration `json:"p50_ns"`
	P95 time.Duration `json:"p95_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// Answered is a key's command and its first answer.
type Answered struct {
	Command messages.Command
	Result  messages.Result
}

// OK reports whether every send got an answer and no key's answers
// disagree.
func (s *Summary) OK() bool {
	return len(s.Disagreeing) == 0 && len(s.ReuseAccepted) == 0 && len(s.Errors) == 0 && s.NotSent == 0
}

type aggregator struct {
	mu       sync.Mutex
	progress func(Progress)
	p        Progress
	s        Summary
	// answers holds each key's answers, compared with the first.
	first     map[string]answerSig
	latencies []time.Duration
	disagree  map[string]bool
	reused    map[string]bool // keys whose re-use was not refused as idempotency_key_reused
}

// answerSig is everything that must be equal in every answer to one key.
type answerSig struct {
	command, code, message, data string
	status                       messages.Status
	attempts                     int
	processedAt                  time.Time
}

func signature(r messages.Result) answerSig {
	var data bytes.Buffer
	if err := json.Compact(&data, r.Data); err != nil {
		data.Reset()
		data.Write(r.Data)
	}
	return answerSig{command: r.Kind, code: r.Code, message: r.Message, data: data.String(),
		status: r.Status, attempts: r.Attempts, processedAt: r.ProcessedAt}
}

func newAggregator(cfg *Config, keys, total int) *aggregator {
	return &aggregator{
		progress: cfg.Progress,
		p:        Progress{Total: total},
		s: Summary{
			Commands:       keys,
			DuplicatesSent: map[SendKind]int{},
			ByStatus:       map[messages.Status]int{},
			ByCode:         map[string]int{},
			ByCommand:      map[string]int{},
			Errors:         map[string]int{},
			Outcomes:       make(map[string]Answered, cfg.Count),
		},
		first:    make(map[string]answerSig, cfg.Count),
		disagree: map[string]bool{},
		reused:   map[string]bool{},
	}
}

func (a *aggregator) record(j job, kind SendKind, reply *client.Reply, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.p.Done++
	a.s.Sends++
	if kind != KindOriginal {
		a.s.DuplicatesSent[kind]++
	}
	if reply != nil && reply.Duplicate {
		a.s.DroppedByJetStream++
		a.p.Dropped++
	}
	if kind == KindReuse {
		a.recordReuse(j, reply, err)
		return
	}
	if reply == nil || reply.Result.Status == "" {
		if errors.Is(err, client.ErrKeyReused) {
			// The client found the key's stored outcome at odds with the
			// command, which the engine always repeats unchanged.
			a.disagree[j.key] = true
		}
		a.s.Errors[errorReason(err)]++
		a.p.Errors++
		a.report()
		return
	}
	res := reply.Result
	if !reply.Duplicate && res.Replayed {
		a.s.ReplayedByWorkers++
		a.p.Replayed++
	}
	a.s.Answered++
	a.latencies = append(a.latencies, reply.Latency)
	sig := signature(res)
	if first, ok := a.first[j.key]; !ok {
		a.first[j.key] = sig
		a.s.Outcomes[j.key] = Answered{Command: j.cmd, Result: res}
		a.s.ByStatus[res.Status]++
		if res.Code != "" {
			a.s.ByCode[res.Code]++
		}
		a.s.ByCommand[j.cmd.Kind()]++
	} else if first != sig {
		a.disagree[j.key] = true
	}
	a.report()
}

// recordReuse records the answer to a key sent with another payload: a
// refusal as idempotency_key_reused (the worker's, or the client's own),
// never an outcome.
func (a *aggregator) recordReuse(j job, reply *client.Reply, err error) {
	switch {
	case errors.Is(err, client.ErrKeyReused):
		a.s.ReuseRefused++
		if reply != nil && reply.Result.Status != "" {
			a.s.Answered++
		}
	case reply != nil && reply.Result.Status != "":
		// An answer of another kind: an outcome would mean the key ran a
		// second time with the new payload (or the client took the old
		// outcome for the new command's).
		a.s.Answered++
		a.reused[j.key] = true
	default:
		a.s.Errors[errorReason(err)]++
		a.p.Errors++
	}
	a.report()
}

// plan adds n sends to the total, for a send decided during the run (a
// retry).
func (a *aggregator) plan(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.p.Total += n
}

func (a *aggregator) report() {
	if a.progress != nil {
		a.progress(a.p)
	}
}

// errorReason names why a send got no answer.
func errorReason(err error) string {
	switch {
	case err == nil:
		return "no_answer"
	case errors.Is(err, client.ErrResultTimeout):
		return "result_timeout"
	case errors.Is(err, client.ErrPublishUnconfirmed):
		return "publish_unconfirmed"
	case errors.Is(err, client.ErrNoStream):
		return "no_stream"
	case errors.Is(err, client.ErrKeyReused):
		return "key_reused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "cut_short"
	default:
		return "other"
	}
}

func (a *aggregator) summary(elapsed time.Duration, cfg *Config, seed uint64) *Summary {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.s
	s.RunID, s.Seed = cfg.RunID, seed
	s.NotSent = a.p.Total - a.p.Done
	s.Unanswered = s.Commands - len(s.Outcomes)
	s.Elapsed = elapsed
	if secs := elapsed.Seconds(); secs > 0 {
		s.Throughput = float64(s.Answered) / secs
		s.CommandsPerSecond = float64(len(s.Outcomes)) / secs
	}
	slices.Sort(a.latencies)
	s.Latency = Latency{
		P50: percentile(a.latencies, 50), P95: percentile(a.latencies, 95),
		P99: percentile(a.latencies, 99), Max: percentile(a.latencies, 100),
	}
	s.Disagreeing = make([]string, 0, len(a.disagree))
	for k := range a.disagree {
		s.Disagreeing = append(s.Disagreeing, k)
	}
	sort.Strings(s.Disagreeing)
	s.ReuseAccepted = make([]string, 0, len(a.reused))
	for k := range a.reused {
		s.ReuseAccepted = append(s.ReuseAccepted, k)
	}
	sort.Strings(s.ReuseAccepted)
	return &s
}

// percentile returns the nearest-rank p-th percentile of sorted d.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}
