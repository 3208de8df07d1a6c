package client

import (
	"encoding/json"
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// Source tells where the client read an answer.
type Source string

const (
	// SourceReplyTo: the worker's answer to this very message, on the
	// client's inbox named in the Reply-To header.
	SourceReplyTo Source = "reply_to"
	// SourceResultSubject: the key's outcome, live on result.<key>.
	SourceResultSubject Source = "result_subject"
	// SourceRejectedSubject: a rejection of this message, live on
	// rejected.<key>: it carries the message's fingerprint (contract v1.2).
	SourceRejectedSubject Source = "rejected_subject"
	// SourceLookup: what the key's record says, from the workers' lookup
	// service, asked after a reconnect or before giving up (an answer
	// published while the connection was down is not stored in RESULTS
	// when it is a refusal).
	SourceLookup Source = "lookup"
	// SourceResultStream: the key's stored outcome, read from the result
	// stream after a duplicate PubAck, because it may have been published
	// before the client subscribed.
	SourceResultStream Source = "result_stream"
)

// Reply is what Send returns once JetStream has accepted the publish.
type Reply struct {
	// Result is the worker's answer, exactly as received. It is the zero
	// value when Send returns without an answer (ErrResultTimeout, a
	// cancelled context, or a stored outcome that contradicts the command).
	Result messages.Result

	// Source tells where Result was read.
	Source Source

	// Duplicate is JetStream's verdict on the publish: true when an earlier
	// message with the same key, inside the dedupe window, was stored
	// instead, so this one never reaches a worker. It is data, not an error:
	// the answer is then the earlier message's outcome. A publish retried
	// after a lost PubAck reports true when the lost attempt was stored.
	Duplicate bool

	// Stream and Sequence locate the stored command: the earlier message's
	// when Duplicate.
	Stream   string
	Sequence uint64

	// PublishAttempts is how many times the command was published (1 unless
	// an attempt timed out or found no stream).
	PublishAttempts int

	// Latency is the time from the first publish attempt to the answer.
	Latency time.Duration
}

// Result is the answer to a typed command: the Reply, and the decoded Data
// of a succeeded answer (zero otherwise).
type Result[D any] struct {
	Reply
	Data D
}

// ChargeResult is the answer to a payment.charge: Data holds charge_id,
// account_id, amount and currency.
type ChargeResult = Result[messages.ChargeData]

// CartAddResult is the answer to a cart.add: Data holds cart_id, sku and
// the SKU's quantity in the cart right after it.
type CartAddResult = Result[messages.CartAddData]

// RefundResult is the answer to a payment.refund: Data holds refund_id,
// charge_id, amount, currency and the charge's refunded_total.
type RefundResult = Result[messages.RefundData]

// hasData reports whether raw holds a JSON value other than null.
func hasData(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null"
}
