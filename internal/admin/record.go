package admin

import (
	"fmt"
	"maps"
	"time"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/record"
)

// The states of a key's record (docs/state-machine.md): the store's own.
const (
	StateRunning   = record.StateRunning
	StateIdle      = record.StateIdle
	StateDead      = record.StateDead
	StateCompleted = record.StateCompleted
)

// Effects (Record.Effect, Record.DeadEffect, the Dlq-Effect header).
const (
	EffectNone    = record.EffectNone
	EffectUnknown = record.EffectUnknown
)

// Record is a key's record as it stands in Redis, read without its lock:
// a snapshot, like the store's own Get, read by the store's own parser,
// with what an operator sees besides.
type Record struct {
	*record.Record
	// Format is 2, or 1 for a record written before contract v1.2 that no
	// script has touched since.
	Format int
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
	return string(r.State)
}

// parseRecord reads a record's fields (an HGETALL) through the store's own
// parser (package record), of this format or of the one before contract
// v1.2, and adds what an operator sees besides.
func parseRecord(key string, f map[string]string) (*Record, error) {
	rec, err := record.Parse(key, f)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	r := &Record{Record: rec, Format: 2, Outcome: rec.Result, HasBody: f["body"] != "", Fields: maps.Clone(f)}
	delete(r.Fields, "body")
	if f["v"] == "" && f["state"] == record.StateInProgressV1 {
		r.Format = 1
	}
	return r, nil
}
