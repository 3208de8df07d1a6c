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

// Codes of rejected answers: the message was refused and the key's state
// did not change.
const (
	CodeInvalidKey      = "invalid_key"
	CodeInvalidPayload  = "invalid_payload"
	CodeUnknownCommand  = "unknown_command"
	CodePayloadTooLarge = "payload_too_large"
	CodeKeyReused       = "idempotency_key_reused"
	// CodeDeadLettered: the command exhausted its deliveries and was copied
	// to the dead letters, and the operation certainly did not take effect
	// for its key. The key keeps no outcome and may be sent again.
	CodeDeadLettered = "dead_lettered"
	// CodeOutcomeUnknown (an extension of the contract): the command
	// exhausted its deliveries and was copied to the dead letters, but an
	// attempt may have taken effect (a worker died mid-operation, or the
	// provider's answer was lost) and nothing could confirm either way. The
	// key keeps no outcome: send it again with the SAME key to learn it;
	// never retry the operation under a new key.
	CodeOutcomeUnknown = "outcome_unknown"
)

// Codes of failed outcomes: the operation ran and definitively did not take
// effect.
const (
	CodeCardDeclined = "card_declined"
	// CodeChargeNotFound (payment.refund, v1.1): the charge key has no
	// succeeded charge and none in progress.
	CodeChargeNotFound = "charge_not_found"
	// CodeChargeNotRefundable (payment.refund): that charge failed.
	CodeChargeNotRefundable = "charge_not_refundable"
	// CodeRefundExceedsCharge (payment.refund): the amount is more than
	// what is left of the charge.
	CodeRefundExceedsCharge = "refund_exceeds_charge"
)

// Result is the body of every answer a worker sends, on result.<key>,
// rejected.<key> and the command's Reply-To. Every field is always present
// on the wire, but fingerprint, which only outcomes carry, so that clients
// in any language decode every answer the same way.
type Result struct {
	// Key is the command's idempotency key (possibly invalid, for invalid_key).
	Key string `json:"key"`
	// Kind is the command's kind, e.g. "payment.charge"; on the wire it is
	// the field "command".
	Kind string `json:"command"`
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
	// Fingerprint is the payload fingerprint of the command that produced
	// the outcome (contract v1.1), on every succeeded and failed answer and
	// on no rejection: a client whose re-send was dropped inside the dedupe
	// window compares it with its own command's to tell a replay of its
	// command from a key reused for another one.
	Fingerprint string `json:"fingerprint,omitempty"`
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

// RefundData is the Data of a payment.refund outcome (contract v1.1):
// Amount is this refund's, Currency the charge's, and RefundedTotal all
// refunds of the charge right after this one.
type RefundData struct {
	RefundID      string `json:"refund_id"`
	ChargeID      string `json:"charge_id"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
	RefundedTotal int64  `json:"refunded_total"`
}
