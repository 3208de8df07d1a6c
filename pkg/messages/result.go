package messages

import (
	"bytes"
	"encoding/json"
	"strconv"
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
	// CodeKeyVoided (an extension of the contract, v1.2): the provider
	// refused the call because it voided the key earlier, after an unknown
	// outcome; nothing took effect with this key, nor ever will.
	CodeKeyVoided = "key_voided"
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
//
// Every answer a worker sends is encoded here, so it is written by hand:
// one allocation, where encoding/json takes three and three times the
// time. The bytes are encoding/json's, field for field
// (TestResult_MarshalIsEncodingJSON compares them): strings escaped as it escapes them, Data compacted as it
// compacts a json.RawMessage, the time in RFC 3339 with nanoseconds.
func (r Result) Marshal() []byte {
	b := make([]byte, 0, 192+len(r.Key)+len(r.Message)+len(r.Data)+len(r.Fingerprint))
	b = append(b, `{"key":`...)
	b = appendString(b, r.Key)
	b = append(b, `,"command":`...)
	b = appendString(b, r.Kind)
	b = append(b, `,"status":`...)
	b = appendString(b, string(r.Status))
	b = append(b, `,"code":`...)
	b = appendString(b, r.Code)
	b = append(b, `,"message":`...)
	b = appendString(b, r.Message)
	b = append(b, `,"data":`...)
	b = appendRaw(b, r.Data)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	b = append(b, `,"replayed":`...)
	b = strconv.AppendBool(b, r.Replayed)
	b = append(b, `,"processed_at":`...)
	b = appendTime(b, r.ProcessedAt)
	if r.Fingerprint != "" {
		b = append(b, `,"fingerprint":`...)
		b = appendString(b, r.Fingerprint)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string, as encoding/json writes it: the
// common case (printable ASCII with nothing to escape) directly, anything
// else through encoding/json itself.
func appendString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) //nolint:errchkjson // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendRaw appends Data as encoding/json writes a json.RawMessage:
// compacted, with <, >, &, U+2028 and U+2029 escaped; empty Data is null.
func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	var compact bytes.Buffer
	buf := bytes.NewBuffer(b)
	escape := needsHTMLEscape(raw)
	if escape {
		buf = &compact
	}
	if err := json.Compact(buf, raw); err != nil {
		// Data is always produced by an encoder in this module or read
		// back from what one stored.
		panic("messages: marshal result: invalid data: " + err.Error())
	}
	if !escape {
		return buf.Bytes()
	}
	out := bytes.NewBuffer(b)
	json.HTMLEscape(out, compact.Bytes())
	return out.Bytes()
}

// needsHTMLEscape reports whether raw holds <, > or & or a byte 0xE2,
// which starts U+2028 and U+2029 (and other runes: those just take the
// careful path).
func needsHTMLEscape(raw []byte) bool {
	for _, c := range raw {
		if c == '<' || c == '>' || c == '&' || c == 0xE2 {
			return true
		}
	}
	return false
}

// appendTime appends t as time.Time's MarshalJSON does.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
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

// AppendJSON appends c encoded as json.Marshal encodes it, in a fraction
// of its time: every charge's outcome is encoded on the hot path.
func (c ChargeData) AppendJSON(b []byte) []byte {
	b = append(b, `{"charge_id":`...)
	b = appendString(b, c.ChargeID)
	b = append(b, `,"account_id":`...)
	b = appendString(b, c.AccountID)
	b = append(b, `,"amount":`...)
	b = strconv.AppendInt(b, c.Amount, 10)
	b = append(b, `,"currency":`...)
	b = appendString(b, c.Currency)
	return append(b, '}')
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

// AppendJSON appends r encoded as json.Marshal encodes it.
func (r RefundData) AppendJSON(b []byte) []byte {
	b = append(b, `{"refund_id":`...)
	b = appendString(b, r.RefundID)
	b = append(b, `,"charge_id":`...)
	b = appendString(b, r.ChargeID)
	b = append(b, `,"amount":`...)
	b = strconv.AppendInt(b, r.Amount, 10)
	b = append(b, `,"currency":`...)
	b = appendString(b, r.Currency)
	b = append(b, `,"refunded_total":`...)
	b = strconv.AppendInt(b, r.RefundedTotal, 10)
	return append(b, '}')
}
