package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/record"
)

// ErrInvalidKey: not an idempotency key (a UUID in canonical form).
var ErrInvalidKey = errors.New("admin: not a key: keys are UUIDs in canonical form (36 characters, lower-case hex, 8-4-4-4-12)")

func checkKey(key string) error {
	if !messages.ValidKey(key) {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return nil
}

// Lock is a key's lock, while held.
type Lock struct {
	// Holder is the lock's value: the holding worker's random token.
	Holder string
	// TTL is how long it lasts unless its holder extends it.
	TTL time.Duration
}

// StoredResult is the outcome RESULTS holds for a key: the last answer
// published on result.<key> (each answer of an outcome is published
// again, extending its retention).
type StoredResult struct {
	Result   messages.Result
	Sequence uint64
	// Stored is when that answer was stored.
	Stored time.Time
}

// Ledger is what the simulated provider's ledger holds for a key.
type Ledger struct {
	// Calls is how many charge calls reached the provider with the key.
	Calls int64 `json:"calls"`
	// Charge and Refund are the charge or refund made under the key, if
	// any (JSON, as the provider keeps it).
	Charge json.RawMessage `json:"charge,omitempty"`
	Refund json.RawMessage `json:"refund,omitempty"`
	// Refunded is the total refunded of the charge made under the key.
	Refunded int64 `json:"refunded,omitempty"`
	// VoidedAt is when the provider voided the key, if it did.
	VoidedAt time.Time `json:"voided_at,omitzero"`
}

// KeyReport is everything that exists about one key, read at At: what
// each source holds now, and the timeline that can be told from it.
// There is no per-delivery history (each try of each delivery): the
// workers keep none, so as to write nothing per command beyond the
// record; Record.Tries and the dead letters' delivery counts are what
// remains of it.
type KeyReport struct {
	Key string
	At  time.Time
	// Record is the key's record; nil when there is none (never seen,
	// expired a retention after its last answer, or evicted).
	Record *Record
	// Lock is the key's lock; nil when not held.
	Lock *Lock
	// Result is what RESULTS holds for the key; nil when nothing.
	Result *StoredResult
	// DeadLetters are the key's copies in the dead-letter stream, oldest
	// first, among the newest DeadLettersRead of its DeadLettersTotal
	// messages (Config.ScanLimit).
	DeadLetters      []client.DeadLetter
	DeadLettersRead  int
	DeadLettersTotal uint64
	// Resolution is the time of the resolver's next ask about the key,
	// when it is on the resolution schedule.
	Resolution *time.Time
	// Ledger is the simulated provider's ledger of the key; nil when no
	// simulated provider keeps a ledger under the key prefix (a real
	// provider: ask it).
	Ledger *Ledger
	// Audit are the audit log's entries about the key, newest first.
	Audit []AuditEntry
	// Eviction says whether the record may be evicted now.
	Eviction Eviction
	// Problems are the sources that could not be read; the rest of the
	// report stands.
	Problems []string
}

// Inspect reads everything that exists about key: its record and lock,
// the schedule and the simulated provider's ledger (one pipelined round
// trip to Redis), what RESULTS holds, its dead letters (a scan of the
// newest Config.ScanLimit) and the audit log.
func (a *Admin) Inspect(ctx context.Context, key string) (*KeyReport, error) {
	if a.rdb == nil {
		return nil, ErrNoRedis
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	r := &KeyReport{Key: key, At: time.Now()}
	sim := a.simLedger()
	pipe := a.rdb.Pipeline()
	rec := pipe.HGetAll(ctx, a.RecordKey(key))
	recTTL := pipe.PTTL(ctx, a.RecordKey(key))
	holder := pipe.Get(ctx, a.LockKey(key))
	lockTTL := pipe.PTTL(ctx, a.LockKey(key))
	next := pipe.ZScore(ctx, a.ResolveKey(), key)
	simExists := pipe.Exists(ctx, sim.Calls, sim.Charges, sim.Voided, sim.Refunds)
	calls := pipe.HGet(ctx, sim.Calls, key)
	charge := pipe.HGet(ctx, sim.Charges, key)
	refund := pipe.HGet(ctx, sim.Refunds, key)
	refunded := pipe.HGet(ctx, sim.Refunded, key)
	voided := pipe.HGet(ctx, sim.Voided, key)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("admin: read key %s from Redis: %w", key, err)
	}
	if f := rec.Val(); len(f) > 0 {
		parsed, err := parseRecord(key, f)
		if err != nil {
			r.Problems = append(r.Problems, err.Error())
			parsed = &Record{Record: &record.Record{Key: key, State: record.State(f["state"])}, Fields: f}
		}
		if ttl := recTTL.Val(); ttl > 0 {
			parsed.TTL = ttl
		}
		r.Record = parsed
	}
	if h, err := holder.Result(); err == nil {
		r.Lock = &Lock{Holder: h, TTL: max(lockTTL.Val(), 0)}
	}
	if s, err := next.Result(); err == nil {
		t := time.UnixMilli(int64(s))
		r.Resolution = &t
	}
	if simExists.Val() > 0 {
		l := &Ledger{}
		l.Calls, _ = calls.Int64()
		if s := charge.Val(); s != "" {
			l.Charge = json.RawMessage(s)
		}
		if s := refund.Val(); s != "" {
			l.Refund = json.RawMessage(s)
		}
		l.Refunded, _ = refunded.Int64()
		if s := voided.Val(); s != "" {
			l.VoidedAt, _ = time.Parse(time.RFC3339Nano, s)
		}
		r.Ledger = l
	}
	r.Eviction = EvictionOf(r.Record, r.Lock)

	if res, err := a.storedResult(ctx, key); err != nil {
		r.Problems = append(r.Problems, err.Error())
	} else {
		r.Result = res
	}
	dls, total, err := a.client.ScanDeadLetters(ctx, a.cfg.ScanLimit)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	r.DeadLettersRead, r.DeadLettersTotal = len(dls), total
	for _, dl := range dls {
		if dl.Key == key {
			r.DeadLetters = append(r.DeadLetters, dl)
		}
	}
	if r.Audit, err = a.AuditLog(ctx, 20, key); err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	return r, nil
}

// storedResult reads the last message on result.<key> in RESULTS.
func (a *Admin) storedResult(ctx context.Context, key string) (*StoredResult, error) {
	top := a.cfg.Topology
	stream, err := a.js.Stream(ctx, top.ResultStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil //nolint:nilnil // no stream: no stored result
	}
	if err != nil {
		return nil, fmt.Errorf("admin: stream %s: %w", top.ResultStream, err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, top.Subjects.ResultFor(key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil //nolint:nilnil // none stored
	}
	if err != nil {
		return nil, fmt.Errorf("admin: read %s from %s: %w", top.Subjects.ResultFor(key), top.ResultStream, err)
	}
	var res messages.Result
	if err := json.Unmarshal(m.Data, &res); err != nil {
		return nil, fmt.Errorf("admin: the outcome in %s #%d: %w", top.ResultStream, m.Sequence, err)
	}
	return &StoredResult{Result: res, Sequence: m.Sequence, Stored: m.Time}, nil
}

// Event is one line of a key's timeline.
type Event struct {
	At time.Time
	// Source names where it was read: record, lock, RESULTS, DEADLETTER,
	// schedule, provider, audit.
	Source string
	What   string
	// Detail is more about it (a dead letter's reason), if anything.
	Detail string
	// Future: a time still to come (an expiry, the resolver's next ask).
	Future bool
}

// Timeline returns the report's dated events in time order: publishes
// and dead letters (the copies' headers), dead_at and the outcome's
// processed_at (the record), the last answer stored in RESULTS, the
// provider's void, the audit log's actions, then what is still to come
// (the lock's and the record's expiry, the resolver's next ask).
func (r *KeyReport) Timeline() []Event {
	var ev []Event
	add := func(at time.Time, source, what, detail string) {
		if !at.IsZero() {
			ev = append(ev, Event{At: at, Source: source, What: what, Detail: detail, Future: at.After(r.At)})
		}
	}
	for _, dl := range r.DeadLetters {
		seq := dl.Header.Get(messages.HeaderDlqStreamSeq)
		what := "command published"
		if seq != "" {
			what += " (" + "COMMANDS #" + seq + ")"
		}
		add(dl.Published, "DEADLETTER", what, "from the dead letter's "+messages.HeaderDlqPublished)
		what = fmt.Sprintf("dead-lettered after %d deliveries (%s #%d), effect %s", dl.Deliveries, "DEADLETTER", dl.Sequence, dl.Effect)
		if dl.Header.Get(messages.HeaderDlqVoided) == "true" {
			what += ", voided"
		}
		add(dl.DeadLettered, "DEADLETTER", what, dl.Reason)
	}
	if rec := r.Record; rec != nil {
		if !rec.DeadAt.IsZero() {
			told := messages.CodeDeadLettered
			if rec.DeadEffect == EffectUnknown {
				told = messages.CodeOutcomeUnknown
			}
			add(rec.DeadAt, "record", "became dead: its client was told "+told, "")
		}
		if o := rec.Outcome; o != nil {
			what := "outcome stored: " + string(o.Status)
			if o.Code != "" {
				what += " " + o.Code
			}
			add(o.ProcessedAt, "record", what+" (attempts "+strconv.Itoa(o.Attempts)+")", string(o.Data))
		}
		if rec.TTL > 0 {
			add(r.At.Add(rec.TTL), "record", "the record expires, unless answered or written again", "")
		}
	}
	if res := r.Result; res != nil {
		what := fmt.Sprintf("last answer stored in RESULTS #%d: %s", res.Sequence, res.Result.Status)
		if res.Result.Code != "" {
			what += " " + res.Result.Code
		}
		add(res.Stored, "RESULTS", what, "")
	}
	if l := r.Ledger; l != nil {
		add(l.VoidedAt, "provider", "voided at the provider: no call with the key takes effect any more", "")
	}
	for _, e := range r.Audit {
		add(e.At, "audit", e.Action+" by "+e.Who, e.Detail)
	}
	if r.Resolution != nil {
		add(*r.Resolution, "schedule", "the resolver asks the provider about the key", "")
	}
	if r.Lock != nil {
		add(r.At.Add(r.Lock.TTL), "lock", "the lock expires unless its holder extends it (holder "+r.Lock.Holder+")", "")
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].At.Before(ev[j].At) })
	return ev
}
