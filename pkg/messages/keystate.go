package messages

import (
	"encoding/json"
	"time"
)

// KeyState is the answer of the workers' lookup service (an extension of
// contract v1.2): what a key's record says, read by key, for a client that
// missed an answer (a rejection is never stored in RESULTS), a gateway
// asked for a key's result, or an operator. A request on
// <lookup root>.<key> (default lookup.<key>) with any body gets one.
type KeyState struct {
	// Key is the key asked about.
	Key string `json:"key"`
	// State is one of the KeyState* constants.
	State string `json:"state"`
	// Kind and Fingerprint are the command the key is bound to, when it
	// has a record.
	Kind        string `json:"command,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Voided: the key was voided at the provider (dead_lettered for good).
	Voided bool `json:"voided,omitempty"`
	// DeadBefore, for a dead-lettered key: every message of the key
	// stored in the command stream at or before it is answered as this
	// dead letter (the dead letter's moment plus the workers'
	// DEAD_LETTER_FENCE); a later one runs again (a re-drive). Zero from a
	// worker before it was told.
	DeadBefore time.Time `json:"dead_before,omitzero"`
	// Outcome is the stored outcome, when State is completed.
	Outcome *Result `json:"outcome,omitempty"`
	// Error is set, with State empty, when the worker could not read the
	// record (Redis unreachable): ask again.
	Error string `json:"error,omitempty"`
}

// The states of KeyState.State.
const (
	// KeyStateAbsent: no record (never sent, not yet delivered, or expired
	// after RESULT_TTL).
	KeyStateAbsent = "absent"
	// KeyStateInProgress: a command of the key is being worked on, or
	// waits for its next try.
	KeyStateInProgress = "in_progress"
	// KeyStateCompleted: the outcome is stored (Outcome).
	KeyStateCompleted = "completed"
	// KeyStateDeadLettered: dead-lettered, and certainly without effect.
	KeyStateDeadLettered = "dead_lettered"
	// KeyStateOutcomeUnknown: dead-lettered while a call may have taken
	// effect; the workers keep asking the provider.
	KeyStateOutcomeUnknown = "outcome_unknown"
)

// Marshal encodes s as JSON.
func (s KeyState) Marshal() []byte {
	b, _ := json.Marshal(s) //nolint:errchkjson // plain strings and a Result: cannot fail
	return b
}

// DecodeKeyState decodes a lookup answer.
func DecodeKeyState(body []byte) (KeyState, error) {
	var s KeyState
	err := json.Unmarshal(body, &s)
	return s, err
}
