package client

import (
	"errors"
	"fmt"

	"github.com/idempay/idempay/pkg/messages"
)

// Rejections, for errors.Is. They are the messages package's sentinels, so
// an error matches whether the client refused the command before publishing
// (ErrInvalidKey, ErrInvalidPayload, ErrPayloadTooLarge) or a worker
// answered "rejected". Every rejection is a *messages.RejectError; use
// errors.As to read its Code and Message. A rejection never changes the
// key's state: after ErrInvalidPayload the key may be sent again with a
// valid body (once JetStream's duplicate window has passed, if the rejected
// message reached JetStream).
var (
	// ErrInvalidKey: the key is not a canonical UUID. Checked before publishing.
	ErrInvalidKey = messages.ErrInvalidKey
	// ErrInvalidPayload: the body is not a valid command of its type.
	ErrInvalidPayload = messages.ErrInvalidPayload
	// ErrUnknownCommand: no worker operation is registered for the command type.
	ErrUnknownCommand = messages.ErrUnknownCommand
	// ErrPayloadTooLarge: the JSON body is larger than messages.MaxBodySize.
	ErrPayloadTooLarge = messages.ErrPayloadTooLarge
	// ErrKeyReused: the key is bound to another command or payload. Besides
	// the workers' answer, the client reports it when a duplicate PubAck
	// points at a stored outcome whose type or data contradict the command
	// sent (another command type, account, amount, currency, cart or SKU).
	ErrKeyReused = messages.ErrKeyReused
	// ErrDeadLettered: the command exhausted its deliveries; it certainly
	// did not take effect. The key keeps no outcome and may be sent again
	// (unless the provider voided it: then use a new key).
	ErrDeadLettered = messages.ErrDeadLettered
	// ErrOutcomeUnknown (contract v1.2): the command was dead-lettered while
	// a call may have taken effect. It is not a failure, and the outcome is
	// not known yet: send the command again with the same key - never a new
	// one, which could charge twice - or read it later with Lookup; the
	// workers keep asking the provider and publish the outcome on
	// result.<key> once they know it.
	ErrOutcomeUnknown = messages.ErrOutcomeUnknown
)

// Errors of the client itself.
var (
	// ErrFailed is wrapped by every *FailedError: the operation ran and
	// definitively did not take effect.
	ErrFailed = errors.New("client: command failed")

	// ErrInvalidTenant: a tenant id that is not 1-64 characters of
	// [A-Za-z0-9_.-]. Nothing was sent.
	ErrInvalidTenant = errors.New("client: invalid tenant id (want 1-64 characters of [A-Za-z0-9_.-])")

	// ErrNotFound: RESULTS holds no outcome for the key. The command was
	// never sent, is still in flight, was rejected or dead-lettered, or its
	// outcome expired.
	ErrNotFound = errors.New("client: no stored outcome for key")

	// ErrPublishUnconfirmed: no publish attempt got a PubAck, and at least one
	// of them may have reached JetStream. The command may or may not be
	// stored; sending it again with the same key is safe.
	ErrPublishUnconfirmed = errors.New("client: publish not confirmed; the command may have been accepted: send it again with the same key")

	// ErrNoStream: JetStream has no stream for the command subject (no
	// responders), typically because no worker has created it yet. The
	// command was not stored.
	ErrNoStream = errors.New("client: no stream accepts the command subject (have the workers started?)")

	// ErrResultTimeout: the command was accepted (stored in the command
	// stream) but no answer came within Config.ResultTimeout. It has not
	// ended as far as this client saw, and it will get an answer (an
	// outcome, a refusal or a dead letter): read it later with Status or
	// Lookup, or send it again with the same key - never with a new one.
	ErrResultTimeout = errors.New("client: no answer within the result timeout; the command is accepted and will still get an answer: send it again with the same key, never a new one")

	// ErrNoLookup: no worker answered a lookup (none runs, or all run a
	// version before the lookup service).
	ErrNoLookup = errors.New("client: no worker answers lookups (are workers of v1.2 or later running?)")
)

// FailedError is the error returned with a failed outcome: the operation
// ran and definitively did not take effect, e.g. Code "card_declined". It
// wraps ErrFailed. Sending the same key again returns the same outcome; try
// again with a new key.
type FailedError struct {
	// Code names the reason, e.g. messages.CodeCardDeclined.
	Code string
	// Message explains Code.
	Message string
}

func (e *FailedError) Error() string {
	if e.Message == "" {
		return "client: command failed: " + e.Code
	}
	return fmt.Sprintf("client: command failed: %s: %s", e.Code, e.Message)
}

// Unwrap returns ErrFailed.
func (e *FailedError) Unwrap() error { return ErrFailed }

// ResultError returns the error an answer stands for: nil for succeeded, a
// *FailedError for failed, a *messages.RejectError for rejected. Send uses
// it; it is exported for programs that read answers themselves, e.g. from a
// Reply-To inbox.
func ResultError(r *messages.Result) error {
	switch r.Status {
	case messages.StatusSucceeded:
		return nil
	case messages.StatusFailed:
		return &FailedError{Code: r.Code, Message: r.Message}
	case messages.StatusRejected:
		return &messages.RejectError{Code: r.Code, Message: r.Message}
	default:
		return fmt.Errorf("client: answer with unknown status %q", r.Status)
	}
}
