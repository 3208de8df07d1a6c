package ledger

import (
	"time"

	"github.com/idempay/idempay/pkg/messages"
)

// Input is everything the checker judges. Only Sends is required; a check
// whose data is missing (no call log, no records, no queue state) is
// skipped, never passed by default on made-up data.
type Input struct {
	// Sends is every send of every client: what it sent, what JetStream
	// said, and what the client took as its answer.
	Sends []Send
	// Heard is every answer heard on result.<key> and rejected.<key>, with
	// when it was heard.
	Heard []Heard
	// Stored is RESULTS: the last outcome of each key.
	Stored map[string]messages.Result
	// DeadLetters is DEADLETTER: every copy; nil when not read (a
	// dead_lettered answer then speaks from when it was processed).
	DeadLetters []DeadLetter
	// Calls is the provider's call log, when the harness keeps one (the
	// fault explorer's provider does); nil otherwise.
	Calls []Call
	// Provider is the provider's ledger at the end (see ReadProvider).
	Provider Provider
	// Carts is the carts at the end, cart id -> SKU -> quantity
	// (ScanCarts, ReadCarts); nil when not read.
	Carts map[string]map[string]int64
	// Records is every key's idempotency record at the end, nil when not
	// read. Used to say where a stranded key stands.
	Records map[string]Record
	// Queue is COMMANDS and its consumer at the end, nil when not read.
	Queue *Queue
	// RequireResolution checks contract v1.2's Resolution: every
	// outcome_unknown ends resolved. Leave it false for an engine that does
	// not resolve (before v1.2): its outcome_unknown answers are then
	// counted, not judged.
	RequireResolution bool
}

// Role says why a client sent a command.
type Role string

// The roles of a send.
const (
	// RoleFirst is the first send of a key.
	RoleFirst Role = "first"
	// RoleResend is the same command again (a retry: inside the dedupe
	// window JetStream drops it, after it a worker replays or re-drives).
	RoleResend Role = "resend"
	// RoleReuse is another command under the same key: it must be refused
	// idempotency_key_reused and change nothing.
	RoleReuse Role = "reuse"
)

// Send is one Send of a client.
type Send struct {
	Key     string
	Command messages.Command
	Role    Role
	// At is when the send began, Done when the client returned.
	At, Done time.Time
	// Accepted: JetStream acknowledged a publish; Duplicate: as a
	// duplicate of an earlier message with the key, so this one stored
	// nothing. PublishAttempts is how many publishes the send made: a
	// duplicate on the first is surely another message's.
	Accepted, Duplicate bool
	PublishAttempts     int
	// Told is the answer the client took as its own, nil when it got none.
	// A client that refused a stored outcome as another body's sets Told
	// to nil and Err to what it returned.
	Told *messages.Result
	// Err is the client's error, "" for none.
	Err string
	// KeyReused is set when the client reported idempotency_key_reused
	// (whether from a worker's refusal or its own comparison).
	KeyReused bool
	// Gateway: the send went through the HTTP gateway, which says neither
	// whether a request stored a new message or met a duplicate, nor how
	// often it published. Duplicate and PublishAttempts are then unused:
	// Accepted says whether the send may have stored a message, and
	// LastPublish the latest moment it may have.
	Gateway     bool
	LastPublish time.Time
	// Broken is a promise of the gateway's that the send saw broken, e.g.
	// a command answered 202 whose Location then answered 404; "" for
	// none.
	Broken string
}

// published returns the latest moment s may have stored a new message of
// its key in COMMANDS, zero when it cannot have.
func (s *Send) published() time.Time {
	switch {
	case !s.Accepted || s.Role == RoleReuse: // a re-use is refused, not answered
		return time.Time{}
	case s.Gateway:
		return s.LastPublish
	case s.Duplicate:
		return time.Time{}
	case s.PublishAttempts <= 1:
		return s.At
	default:
		return s.Done // a retried publish may have landed at any time of it
	}
}

// Heard is an answer heard on a subject.
type Heard struct {
	Subject string
	At      time.Time
	Result  messages.Result
}

// DeadLetter is one copy in DEADLETTER.
type DeadLetter struct {
	Key, Kind string
	// Effect is the copy's Dlq-Effect: "none" or "unknown".
	Effect string
	// At is when the copy was stored; Published when its command was.
	At, Published time.Time
	// Body is the command's body, as copied.
	Body []byte
}

// Op names a provider operation.
type Op string

// The provider operations the call log holds.
const (
	OpCharge       Op = "charge"
	OpRefund       Op = "refund"
	OpLookupCharge Op = "lookup_charge"
	OpLookupRefund Op = "lookup_refund"
	OpVoidCharge   Op = "void_charge"
	OpVoidRefund   Op = "void_refund"
)

// Call is one call to the provider.
type Call struct {
	Key string
	Op  Op
	// N numbers the key's calls of Op from 1.
	N int
	// Behaviour is what the harness made the call do ("ok", "transient",
	// "lost_response", "frozen", ...), for the violation's story.
	Behaviour string
	// Start is when the engine made the call, End when it returned to it.
	Start, End time.Time
	// Effect: this call made the key's charge or refund; EffectAt when.
	// A frozen call makes it after End.
	Effect   bool
	EffectAt time.Time
	// Err is what the call returned to the engine, "" for none.
	Err string
}

// Provider is the provider's ledger.
type Provider struct {
	// Charges and Refunds are the effects, per key.
	Charges map[string]messages.ChargeData
	Refunds map[string]messages.RefundData
	// Refunded is the total refunded per charge key.
	Refunded map[string]int64
	// Voided is the keys voided, with when.
	Voided map[string]string
	// Calls is the calls the provider counted per key (sim:calls).
	Calls map[string]int64
}

// Record is what the checker needs of a key's idempotency record.
type Record struct {
	// State is "in_progress" or "completed".
	State string
	// Tries is the attempts started since the key was last dead-lettered.
	Tries int
	// Unknown: an attempt may have taken effect without an outcome.
	Unknown bool
	// DeadEffect is what the key's last dead letter told ("none",
	// "unknown"), "" when it has none.
	DeadEffect string
}

// Queue is COMMANDS and its consumer.
type Queue struct {
	// Messages is what the stream holds; Pending and AckPending what the
	// consumer has not delivered, or not seen acknowledged.
	Messages, Pending, AckPending uint64
}

// Drained reports whether nothing is left.
func (q *Queue) Drained() bool { return q.Messages == 0 && q.Pending == 0 && q.AckPending == 0 }
