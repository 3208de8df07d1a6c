package messages

import "strings"

// Header names used on commands and dead letters.
const (
	// HeaderMsgID carries the idempotency key. JetStream deduplicates on it.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderReplyTo names a subject on which the worker also answers.
	HeaderReplyTo = "Reply-To"
	// HeaderTenant names the tenant a command was sent for (contract v1.2,
	// "Callers and tenants"): the gateway sets it, and a direct publisher
	// acting for a tenant. The engine hands it to the operation and its
	// provider (processor.TenantFrom), e.g. to pick a Stripe Connect
	// account.
	HeaderTenant = "Idempay-Tenant"
	// HeaderDlqReason is added to a dead letter: the last error.
	HeaderDlqReason = "Dlq-Reason"
	// HeaderDlqDeliveries is added to a dead letter: how many deliveries it had.
	HeaderDlqDeliveries = "Dlq-Deliveries"
	// HeaderDlqKey is added to a dead letter: the command's idempotency key,
	// which the copy's Nats-Msg-Id, kept from the command, also is. (Copies
	// made by earlier versions had an id of their own there.)
	HeaderDlqKey = "Dlq-Key"
	// HeaderDlqEffect is added to a dead letter: "none" when the operation
	// certainly did not take effect for the key, "unknown" when an attempt
	// may have (see CodeOutcomeUnknown).
	HeaderDlqEffect = "Dlq-Effect"
	// HeaderDlqVoided is added to a dead letter whose key was voided at the
	// provider (contract v1.2): "true". Such a key never takes effect, so
	// a re-drive of it is answered dead_lettered again.
	HeaderDlqVoided = "Dlq-Voided"
	// HeaderDlqStreamSeq is added to a dead letter: the command's sequence
	// in the command stream.
	HeaderDlqStreamSeq = "Dlq-Stream-Seq"
	// HeaderDlqPublished is added to a dead letter: when the command was
	// published (RFC 3339, UTC), so a re-drive can tell when the command
	// stream's duplicate window lets the key in again.
	HeaderDlqPublished = "Dlq-Published"
)

// Default subject roots and stream names of the contract.
const (
	CommandRootDefault    = "cmd"
	ResultRootDefault     = "result"
	RejectedRootDefault   = "rejected"
	DeadLetterRootDefault = "dlq"
	LookupRootDefault     = "lookup"

	CommandStreamDefault    = "COMMANDS"
	ResultStreamDefault     = "RESULTS"
	DeadLetterStreamDefault = "DEADLETTER"
	ConsumerDefault         = "workers"
)

// Subjects names the subject roots commands and answers travel on. The zero
// value is not usable; call WithDefaults, which fills every empty root with
// the contract's default. Tests give each run its own roots so they can share
// one NATS server.
type Subjects struct {
	// Command is the root of command subjects: <Command>.<type>. Defaults to "cmd".
	Command string
	// Result is the root of outcome subjects: <Result>.<key>. Defaults to "result".
	Result string
	// Rejected is the root of rejection subjects: <Rejected>.<key>. Defaults to "rejected".
	Rejected string
	// DeadLetter is the root of dead-letter subjects: <DeadLetter>.<type>. Defaults to "dlq".
	DeadLetter string
	// Lookup is the root of the workers' lookup service (an extension of
	// contract v1.2): a request on <Lookup>.<key> is answered with the
	// key's state (KeyState). Defaults to "lookup".
	Lookup string
}

// DefaultSubjects returns the contract's subject roots.
func DefaultSubjects() Subjects { return Subjects{}.WithDefaults() }

// WithDefaults returns a copy with every empty root set to its default.
func (s Subjects) WithDefaults() Subjects {
	if s.Command == "" {
		s.Command = CommandRootDefault
	}
	if s.Result == "" {
		s.Result = ResultRootDefault
	}
	if s.Rejected == "" {
		s.Rejected = RejectedRootDefault
	}
	if s.DeadLetter == "" {
		s.DeadLetter = DeadLetterRootDefault
	}
	if s.Lookup == "" {
		s.Lookup = LookupRootDefault
	}
	return s
}

// CommandFor returns the subject a command of kind is published on.
func (s Subjects) CommandFor(kind string) string { return s.Command + "." + kind }

// CommandWildcard matches every command subject.
func (s Subjects) CommandWildcard() string { return s.Command + ".>" }

// ResultFor returns the subject the outcome of key is published on.
func (s Subjects) ResultFor(key string) string { return s.Result + "." + key }

// ResultWildcard matches every outcome subject.
func (s Subjects) ResultWildcard() string { return s.Result + ".>" }

// RejectedFor returns the subject a rejection of key is published on.
func (s Subjects) RejectedFor(key string) string { return s.Rejected + "." + key }

// RejectedWildcard matches every rejection subject.
func (s Subjects) RejectedWildcard() string { return s.Rejected + ".>" }

// DeadLetterFor returns the subject a dead command of kind is copied to.
func (s Subjects) DeadLetterFor(kind string) string { return s.DeadLetter + "." + kind }

// DeadLetterWildcard matches every dead-letter subject.
func (s Subjects) DeadLetterWildcard() string { return s.DeadLetter + ".>" }

// LookupFor returns the subject a lookup of key is requested on.
func (s Subjects) LookupFor(key string) string { return s.Lookup + "." + key }

// LookupWildcard matches every lookup subject (one token: the key).
func (s Subjects) LookupWildcard() string { return s.Lookup + ".*" }

// KindOf returns the command kind a command subject names, and false when
// subject is not under the command root.
func (s Subjects) KindOf(subject string) (string, bool) {
	return strings.CutPrefix(subject, s.Command+".")
}

// KindOfDeadLetter returns the command kind a dead-letter subject names,
// and false when subject is not under the dead-letter root.
func (s Subjects) KindOfDeadLetter(subject string) (string, bool) {
	return strings.CutPrefix(subject, s.DeadLetter+".")
}
