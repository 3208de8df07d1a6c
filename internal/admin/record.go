package admin

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// The states of a key's record (docs/state-machine.md).
const (
	StateRunning   = "running"
	StateIdle      = "idle"
	StateDead      = "dead"
	StateCompleted = "completed"
	// stateInProgressV1 is the one non-final state of records written
	// before contract v1.2, read as the store reads it.
	stateInProgressV1 = "in_progress"
)

// Effects (Record.Effect, Record.DeadEffect, the Dlq-Effect header).
const (
	EffectNone    = "none"
	EffectUnknown = "unknown"
)

// Record is a key's record as it stands in Redis, read without its lock:
// a snapshot, like the store's own Get.
type Record struct {
	// State is running, idle, dead or completed; a record of the format
	// before contract v1.2 (Format 1) is read as the store reads it.
	State string
	// Format is 2, or 1 for a record written before contract v1.2 that no
	// script has touched since.
	Format      int
	Kind        string
	Fingerprint string
	// Tries and MaxTries count the key's tries since it was created or
	// last dead-lettered, and how many it gets.
	Tries, MaxTries int
	// Effect is the key's history: none, or unknown once a call may have
	// taken effect without the provider having said what happened.
	Effect string
	// SeparateEffect: a counter effect applied apart from the commit.
	SeparateEffect bool
	// DeadBefore is the publish time of the last dead-lettered command of
	// the key (messages published at or before it are that dead letter's),
	// DeadEffect what its client was told, DeadAt when it became dead.
	DeadBefore time.Time
	DeadEffect string
	DeadAt     time.Time
	// Voided: voided at the provider; it cannot be re-driven.
	Voided bool
	// HasBody: the command's body is kept for the resolver (dead, effect
	// unknown).
	HasBody bool
	// Outcome is the stored outcome, when State is completed.
	Outcome *messages.Result
	// TTL is how long the record lives unless written again; 0 when it has
	// no expiry.
	TTL time.Duration
	// Fields are the record's fields as stored, but for the body.
	Fields map[string]string
}

// Unknown reports whether a call for the key may have taken effect
// without the provider having settled it.
func (r *Record) Unknown() bool { return r.Effect == EffectUnknown }

// Says is one line on what the record means now, for an operator.
func (r *Record) Says() string {
	switch {
	case r.State == StateCompleted && r.Outcome != nil:
		s := "completed: the outcome is stored (" + string(r.Outcome.Status)
		if r.Outcome.Code != "" {
			s += " " + r.Outcome.Code
		}
		return s + "); every duplicate is answered with it"
	case r.State == StateDead && r.Voided:
		return "dead, voided at the provider: nothing took effect and nothing will; a re-drive is answered dead_lettered (send a new key)"
	case r.State == StateDead && r.Unknown():
		return "dead, outcome unknown: a call may have taken effect; the workers' resolver asks the provider"
	case r.State == StateDead:
		return "dead: dead-lettered, certainly without effect; a re-drive (the same key) runs afresh"
	case r.State == StateRunning:
		return "running: a worker began a try and has not reported back"
	case r.State == StateIdle && r.Tries >= r.MaxTries && r.MaxTries > 0:
		return "idle, out of tries: the next delivery dead-letters it (or finds the effect at the provider)"
	case r.State == StateIdle:
		return "idle: between tries; the command waits for its next delivery"
	}
	return r.State
}

// parseRecord reads a record's fields (an HGETALL) the way the store's
// parseRecord does, of this format or of the one before contract v1.2.
func parseRecord(key string, f map[string]string) (*Record, error) {
	r := &Record{State: f["state"], Format: 2, Kind: f["command"], Fingerprint: f["fingerprint"], Fields: maps.Clone(f)}
	delete(r.Fields, "body")
	if f["v"] == "" && r.State == stateInProgressV1 {
		r.Format = 1
	}
	if r.State == StateCompleted {
		attempts, err := strconv.Atoi(f["attempts"])
		if err != nil {
			return nil, fmt.Errorf("admin: record %s: bad attempts %q", key, f["attempts"])
		}
		processed, _ := time.Parse("2006-01-02T15:04:05.000Z07:00", f["processed_at"])
		r.Outcome = &messages.Result{
			Key: key, Kind: r.Kind, Status: messages.Status(f["status"]), Code: f["code"], Message: f["message"],
			Data: json.RawMessage(f["data"]), Attempts: attempts, ProcessedAt: processed, Fingerprint: r.Fingerprint,
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
	r.HasBody = f["body"] != ""
	switch r.State {
	case StateRunning, StateIdle, StateDead:
	case stateInProgressV1:
		switch {
		case f["running"] != "":
			r.State = StateRunning
		case !r.DeadBefore.IsZero() && r.Tries == 0:
			r.State = StateDead
		default:
			r.State = StateIdle
		}
		r.Effect = EffectNone
		if f["unknown"] != "" || r.DeadEffect == EffectUnknown {
			r.Effect = EffectUnknown
		}
	default:
		return nil, fmt.Errorf("admin: record %s: unknown state %q", key, r.State)
	}
	if r.Effect == "" {
		r.Effect = EffectNone
	}
	return r, nil
}
