package messages

import "strings"

// Header names used on commands and dead letters.
const (
	// HeaderMsgID carries the idempotency key. JetStream deduplicates on it.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderReplyTo names a subject on which the worker also answers.
	HeaderReplyTo = "Reply-To"
	// HeaderDlqReason is added to a dead letter: the last error.
	HeaderDlqReason = "Dlq-Reason"
	// HeaderDlqDeliveries is added to a dead letter: how many deliveries it had.
	HeaderDlqDeliveries = "Dlq-Deliveries"
)

// Default subject roots and stream names of the contract.
const (
	CommandRootDefault    = "cmd"
	ResultRootDefault     = "result"
	RejectedRootDefault   = "rejected"
	DeadLetterRootDefault = "dlq"

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
	return s
}

// CommandFor returns the subject a command of type t is published on.
func (s Subjects) CommandFor(t string) string { return s.Command + "." + t }

// CommandWildcard matches every command subject.
func (s Subjects) CommandWildcard() string { return s.Command + ".>" }

// ResultFor returns the subject the outcome of key is published on.
func (s Subjects) ResultFor(key string) string { return s.Result + "." + key }

// ResultWildcard matches every outcome subject.
func (s Subjects) ResultWildcard() string { return s.Result + ".>" }

// RejectedFor returns the subject a rejection of key is published on.
func (s Subjects) RejectedFor(key string) string { return s.Rejected + "." + key }

// DeadLetterFor returns the subject a dead command of type t is copied to.
func (s Subjects) DeadLetterFor(t string) string { return s.DeadLetter + "." + t }

// DeadLetterWildcard matches every dead-letter subject.
func (s Subjects) DeadLetterWildcard() string { return s.DeadLetter + ".>" }

// CommandType returns the type named by a command subject, and false when
// subject is not under the command root.
func (s Subjects) CommandType(subject string) (string, bool) {
	return strings.CutPrefix(subject, s.Command+".")
}
