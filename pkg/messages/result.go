package messages

import (
	"encoding/json"
	"time"
)

// Status is the kind of an answer.
type Status string

const (
	// StatusSucceeded: the operation took effect, once. An outcome: stored.
	StatusSucceeded Status = "succeeded"
	// StatusFailed: the operation ran and definitively did not take effect.
	// An outcome: stored. Never used when the effect is not known.
	StatusFailed Status = "failed"
	// StatusRejected: this message was refused and the key's state did not
	// change. Never stored.
	StatusRejected Status = "rejected"
)

// IsOutcome reports whether s is stored as the key's outcome.
func (s Status) IsOutcome() bool { return s == StatusSucceeded || s == StatusFailed }

// Codes carried by rejected answers, and by failed outcomes.
const (
	CodeInvalidKey        = "invalid_key"
	CodeInvalidPayload    = "invalid_payload"
	CodeUnknownCommand    = "unknown_command"
	CodePayloadTooLarge   = "payload_too_large"
	CodeKeyReused         = "idempotency_key_reused"
	CodeCardDeclined      = "card_declined"
	CodeDeadLettered      = "dead_lettered" // extension: the command went to the dead letters; the key keeps no outcome
	CodeInternal          = "internal_error"
	CodeProviderAmbiguous = "provider_ambiguous"
)

// Result is the body of every answer a worker sends, on result.<key>,
// rejected.<key> and the command's Reply-To. Every field is always present
// on the wire so that clients in any language can decode it the same way.
type Result struct {
	// Key is the command's idempotency key (possibly invalid, for invalid_key).
	Key string `json:"key"`
	// Command is the command type, e.g. "payment.charge".
	Command string `json:"command"`
	// Status is succeeded, failed or rejected.
	Status Status `json:"status"`
	// Code names the reason of a failed or rejected answer; empty on success.
	Code string `json:"code"`
	// Message is a human explanation of Code.
	Message string `json:"message"`
	// Data is the operation's output (ChargeData, CartAddData), or null.
	Data json.RawMessage `json:"data"`
	// Attempts is the JetStream delivery count of the message that produced
	// the outcome.
	Attempts int `json:"attempts"`
	// Replayed is true when this answer was read from the store, not produced
	// by running the operation.
	Replayed bool `json:"replayed"`
	// ProcessedAt is when the outcome was produced (UTC).
	ProcessedAt time.Time `json:"processed_at"`
}

// Marshal encodes r. A nil Data is sent as JSON null.
func (r Result) Marshal() []byte {
	if len(r.Data) == 0 {
		r.Data = json.RawMessage("null")
	}
	b, err := json.Marshal(r)
	if err != nil {
		// Only an invalid Data can fail, and Data is always produced by
		// json.Marshal in this module.
		panic("messages: marshal result: " + err.Error())
	}
	return b
}

// DecodeResult decodes an answer body.
func DecodeResult(body []byte) (Result, error) {
	var r Result
	err := json.Unmarshal(body, &r)
	return r, err
}

// ChargeData is the Data of a payment.charge outcome.
type ChargeData struct {
	ChargeID  string `json:"charge_id"`
	AccountID string `json:"account_id"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
}

// CartAddData is the Data of a cart.add outcome. Quantity is the SKU's
// quantity in the cart right after this command.
type CartAddData struct {
	CartID   string `json:"cart_id"`
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}
