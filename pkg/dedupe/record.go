package dedupe

import (
	"errors"
	"fmt"
	"time"

	"github.com/idempay/idempay/pkg/record"
)

// The record's format, its states and its one parser are package record's
// (shared with the operators' tools, which must not link the store); the
// store writes records only through its scripts (scripts.go).
type (
	// Record is the stored state of one key (record.Record).
	Record = record.Record
	// State is where a key stands (record.State).
	State = record.State
)

// The states of a key (docs/state-machine.md).
const (
	StateRunning   = record.StateRunning
	StateIdle      = record.StateIdle
	StateCompleted = record.StateCompleted
	StateDead      = record.StateDead
)

// What a key may have done at the provider, and what a dead letter told
// its client.
const (
	EffectNone    = record.EffectNone
	EffectUnknown = record.EffectUnknown
)

// reply is what every script answers (scripts.go): a verdict, whether the
// caller's lock was released, and the record as it stands after.
type reply struct {
	verdict  string
	released bool
	record   *Record // nil when there is none
}

// parseReply is the one parser of the scripts' replies.
func parseReply(key string, res []string) (reply, error) {
	if len(res) < 2 {
		return reply{}, fmt.Errorf("dedupe: script reply for %s: %q", key, res)
	}
	r := reply{verdict: res[0], released: res[1] == "1"}
	if len(res) > 2 {
		rec, err := parseRecord(key, pairs(res[2:]))
		if err != nil {
			return reply{}, err
		}
		r.record = rec
	}
	return r, nil
}

func pairs(flat []string) map[string]string {
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		m[flat[i]] = flat[i+1]
	}
	return m
}

func parseRecord(key string, f map[string]string) (*Record, error) { return record.Parse(key, f) }

func formatTime(t time.Time) string { return record.FormatTime(t) }

// errVerdict is a script verdict the caller did not expect: a bug.
func errVerdict(script, verdict string) error {
	return fmt.Errorf("dedupe: %s: unexpected verdict %q", script, verdict)
}

// ErrRecordLost means the key's record vanished under a holder of its lock
// (Redis lost it: a failover, a restart without persistence). Nothing was
// written; the next delivery starts the key again.
var ErrRecordLost = errors.New("dedupe: the key's record is gone")
