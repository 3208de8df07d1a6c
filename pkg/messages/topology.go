package messages

import (
	"fmt"
	"strings"
)

// Topology names everything on NATS that commands and answers travel
// through: the subject roots, the three streams and the workers' durable
// consumer. The worker, the client library, the producer, the gateway and
// the demo all take one, so they cannot disagree about a name. The zero
// value means the contract's defaults; call WithDefaults before use.
type Topology struct {
	// Subjects are the subject roots. Each empty root defaults to the
	// contract's: cmd, result, rejected, dlq.
	Subjects Subjects
	// CommandStream is the work-queue stream of commands. Defaults to "COMMANDS".
	CommandStream string
	// ResultStream keeps the last outcome of each key. Defaults to "RESULTS".
	ResultStream string
	// DeadLetterStream keeps dead-lettered commands. Defaults to "DEADLETTER".
	DeadLetterStream string
	// Consumer is the durable pull consumer the workers share. Defaults to "workers".
	Consumer string
}

// DefaultTopology returns the contract's names.
func DefaultTopology() Topology { return Topology{}.WithDefaults() }

// WithDefaults returns a copy with every empty name set to the contract's.
func (t Topology) WithDefaults() Topology {
	t.Subjects = t.Subjects.WithDefaults()
	if t.CommandStream == "" {
		t.CommandStream = CommandStreamDefault
	}
	if t.ResultStream == "" {
		t.ResultStream = ResultStreamDefault
	}
	if t.DeadLetterStream == "" {
		t.DeadLetterStream = DeadLetterStreamDefault
	}
	if t.Consumer == "" {
		t.Consumer = ConsumerDefault
	}
	return t
}

// Validate returns an error naming the first unusable name: a subject root
// that is not a plain dot-separated subject (no wildcards, no white space,
// no empty tokens), a root used twice, or a stream or consumer name NATS
// refuses. Call it on WithDefaults' result.
func (t Topology) Validate() error {
	roots := []struct{ field, value string }{
		{"Subjects.Command", t.Subjects.Command}, {"Subjects.Result", t.Subjects.Result},
		{"Subjects.Rejected", t.Subjects.Rejected}, {"Subjects.DeadLetter", t.Subjects.DeadLetter},
		{"Subjects.Lookup", t.Subjects.Lookup},
	}
	seen := map[string]string{}
	for _, r := range roots {
		if !validSubject(r.value) {
			return fmt.Errorf("messages: Topology.%s %q is not a valid subject root (dot-separated tokens, no wildcards or white space)", r.field, r.value)
		}
		if other, dup := seen[r.value]; dup {
			return fmt.Errorf("messages: Topology.%s and Topology.%s are both %q; each root needs its own", other, r.field, r.value)
		}
		seen[r.value] = r.field
	}
	names := []struct{ field, value string }{
		{"CommandStream", t.CommandStream}, {"ResultStream", t.ResultStream},
		{"DeadLetterStream", t.DeadLetterStream}, {"Consumer", t.Consumer},
	}
	for _, n := range names {
		if n.value == "" || strings.ContainsAny(n.value, " \t\r\n.*>/\\") {
			return fmt.Errorf("messages: Topology.%s %q is not a valid stream or consumer name (no white space, '.', '*', '>', '/' or '\\')", n.field, n.value)
		}
	}
	return nil
}

// validSubject reports whether s is a literal subject: tokens separated by
// dots, none empty, no wildcards, no white space.
func validSubject(s string) bool {
	if s == "" || len(s) > 255 || strings.ContainsAny(s, " \t\r\n*>") {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return false
		}
	}
	return true
}
