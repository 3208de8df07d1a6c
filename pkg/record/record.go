// Package record owns the format of a key's idempotency record in Redis
// (idem:rec:{<key>}): its states, its fields, and the one parser that
// reads them - of this format and of the one before contract v1.2. The
// store (pkg/dedupe) writes records only through its scripts and reads
// them here; the operators' tools (internal/admin), which must not link
// the store, read them here too, so that a record means the same to both.
// It does no I/O and imports only the wire types.
package record

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// State is where a key stands: one state of the machine drawn in
// docs/state-machine.md. A key without a record is new.
type State string

const (
	// StateRunning: a worker holding the key's lock began a try and has not
	// reported back. Found by the next Begin (the holder's lock expired: it
	// died or froze), it makes the key's effect unknown.
	StateRunning State = "running"
	// StateIdle: between tries; Record.Effect says whether an earlier try
	// may have taken effect.
	StateIdle State = "idle"
	// StateCompleted: the outcome is stored and final.
	StateCompleted State = "completed"
	// StateDead: the key was dead-lettered. Record.DeadEffect is what its
	// client was told: none (dead_lettered: nothing took effect) or unknown
	// (outcome_unknown, until the resolver asks the provider). A later
	// publish of the key re-drives it, unless it was voided.
	StateDead State = "dead"
)

// StateInProgressV1 is the single non-final state of records written before
// contract v1.2; the scripts upgrade such a record when they touch it, and
// Parse reads it the same way.
const StateInProgressV1 = "in_progress"

// What a key may have done at the provider (Record.Effect), and what a dead
// letter told its client (Record.DeadEffect, the Dlq-Effect header).
const (
	// EffectNone: certainly nothing took effect.
	EffectNone = "none"
	// EffectUnknown: a call may have taken effect, and no answer of the
	// provider settled it yet.
	EffectUnknown = "unknown"
)

// Record is the stored state of one key, as the scripts left it.
type Record struct {
	Key         string
	State       State
	Kind        string
	Fingerprint string
	// MaxTries is how many tries the key gets between dead letters: the
	// MAX_DELIVER of the worker that created the record, kept with it so
	// that every worker counts the key's tries alike.
	MaxTries int
	// Tries counts the tries started since the key was created or last
	// dead-lettered.
	Tries int
	// Effect is the key's history: EffectUnknown once any call for it may
	// have taken effect (an ambiguous error, a lost lock, a try that never
	// reported back), until the provider settles it. It never goes back to
	// EffectNone otherwise.
	Effect string
	// SeparateEffect: the key's counter effect is applied apart from the
	// commit (a Redis Cluster, or Config.SeparateEffects), so every worker
	// must take that path for it.
	SeparateEffect bool
	// DeadBefore, when not zero, is the publish time of the last command of
	// this key that was dead-lettered; DeadEffect is what its client was
	// told (EffectNone or EffectUnknown); DeadAt is when.
	DeadBefore time.Time
	DeadEffect string
	DeadAt     time.Time
	// Voided: the key was voided at the provider (contract v1.2): nothing
	// took effect and nothing will, so it cannot be re-driven either.
	Voided bool
	// Body is the command's body, kept while the key is dead with its
	// outcome unknown, so that a resolver can ask the provider about it;
	// Tenant the tenant it was sent for (its Idempay-Tenant), kept with it.
	Body   []byte
	Tenant string
	// Result is the outcome once State is StateCompleted: an answer with
	// Replayed false.
	Result *messages.Result
}

// Unknown reports whether a call for the key may have taken effect without
// the provider having said so.
func (r *Record) Unknown() bool { return r.Effect == EffectUnknown }

// Answer returns the stored outcome as an answer: identical for every
// delivery but for replayed. It is the one place an outcome becomes an
// answer. Answer panics on a record that is not completed.
func (r *Record) Answer(replayed bool) messages.Result {
	res := *r.Result
	res.Replayed = replayed
	return res
}

// Parse reads a record's fields, of this format or of the one before
// contract v1.2 (read the way the scripts upgrade it).
func Parse(key string, f map[string]string) (*Record, error) {
	r := &Record{Key: key, State: State(f["state"]), Kind: f["command"], Fingerprint: f["fingerprint"]}
	if r.State == StateCompleted {
		attempts, err := strconv.Atoi(f["attempts"])
		if err != nil {
			return nil, fmt.Errorf("record: record %s: bad attempts %q", key, f["attempts"])
		}
		r.Result = &messages.Result{
			Key: key, Kind: r.Kind, Status: messages.Status(f["status"]), Code: f["code"], Message: f["message"],
			Data: json.RawMessage(f["data"]), Attempts: attempts, ProcessedAt: parseTime(f["processed_at"]),
			Fingerprint: r.Fingerprint,
		}
		return r, nil
	}
	r.Tries, _ = strconv.Atoi(f["tries"])
	r.MaxTries, _ = strconv.Atoi(f["max_tries"])
	r.Effect = f["effect"]
	r.SeparateEffect = f["apply"] == "separate"
	if us, err := strconv.ParseInt(f["dead_before"], 10, 64); err == nil && us > 0 {
		r.DeadBefore = time.UnixMicro(us)
		r.DeadEffect = f["dead_effect"]
	}
	if ms, err := strconv.ParseInt(f["dead_at"], 10, 64); err == nil && ms > 0 {
		r.DeadAt = time.UnixMilli(ms)
	}
	r.Voided = f["voided"] == "1"
	if b := f["body"]; b != "" {
		r.Body = []byte(b)
	}
	r.Tenant = f["tenant"]
	switch r.State {
	case StateRunning, StateIdle, StateDead:
	case StateInProgressV1:
		switch {
		case f["running"] != "":
			r.State = StateRunning
		case !r.DeadBefore.IsZero() && r.Tries == 0:
			r.State = StateDead
		default:
			r.State = StateIdle
		}
		r.Effect = EffectNone
		// A v1 worker that dead-lettered a key as unknown wrote only
		// dead_effect; a re-drive kept it: the key stays unknown.
		if f["unknown"] != "" || r.DeadEffect == EffectUnknown {
			r.Effect = EffectUnknown
		}
	default:
		return nil, fmt.Errorf("record: record %s: unknown state %q", key, r.State)
	}
	if r.Effect == "" {
		r.Effect = EffectNone
	}
	return r, nil
}

// Times are stored with millisecond precision in UTC, so an outcome read
// back is identical to the one published when it was stored.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// FormatTime formats t as records store times.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeLayout, s)
	return t
}
