package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// Handler runs one command type. Register handlers on a Mux, like handlers
// on an http.ServeMux.
type Handler interface {
	// Kind returns the command type it handles, e.g. "payment.charge".
	Kind() string
	// NewCommand returns a new zero command to decode a body into.
	NewCommand() messages.Command
	// Handle performs the operation once. It returns a definitive Outcome
	// (succeeded, or failed when the effect certainly did not happen), or an
	// error when the outcome is not known: the processor then retries with
	// backoff, redelivers, and finally dead-letters - it never turns an
	// error into a failed outcome. Handle may run more than once for one key
	// (a retry, a crashed worker, a lost lock), always with the same key, so
	// everything it calls outside must be idempotent on call.Key.
	Handle(ctx context.Context, call *Call) (Outcome, error)
}

// Call is one execution of a command.
type Call struct {
	// Key is the idempotency key. Pass it to every external system.
	Key string
	// Command is the decoded, validated body.
	Command messages.Command
	// Attempt is the JetStream delivery count of the message (1 on the first).
	Attempt int
	// KeyPrefix is the Redis namespace handlers must put before their keys.
	KeyPrefix string
}

// Outcome is what a handler returns when it knows the result.
type Outcome struct {
	// Status is messages.StatusSucceeded or messages.StatusFailed.
	Status messages.Status
	// Code and Message explain a failure, e.g. "card_declined".
	Code    string
	Message string
	// Data is the operation's output, encoded as JSON in the result.
	Data any
	// Effect, if set, is a Redis counter update applied atomically with the
	// commit of the outcome; its new value replaces dedupe.Placeholder in
	// Data. A handler whose whole effect is such a counter does nothing
	// itself, so a crash can never leave the effect without its record.
	Effect *dedupe.Effect
}

// Succeeded returns a succeeded Outcome carrying data.
func Succeeded(data any) Outcome { return Outcome{Status: messages.StatusSucceeded, Data: data} }

// Failed returns a failed Outcome: the operation definitively did not take
// effect.
func Failed(code, message string, data any) Outcome {
	return Outcome{Status: messages.StatusFailed, Code: code, Message: message, Data: data}
}

func (o Outcome) validate() error {
	if !o.Status.IsOutcome() {
		return fmt.Errorf("processor: handler returned status %q; want succeeded or failed", o.Status)
	}
	if o.Status == messages.StatusFailed && o.Code == "" {
		return errors.New("processor: failed outcome without a code")
	}
	return nil
}

func (o Outcome) data() (json.RawMessage, error) {
	if o.Data == nil {
		return json.RawMessage("null"), nil
	}
	if raw, ok := o.Data.(json.RawMessage); ok {
		return raw, nil
	}
	return json.Marshal(o.Data)
}

// Mux routes command types to handlers. It is safe for concurrent use.
type Mux struct {
	mu       sync.RWMutex
	handlers map[string]Handler
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: make(map[string]Handler)} }

// Handle registers h for h.Kind(). It panics if the kind is empty or already
// registered, like http.ServeMux: both are programming errors.
func (m *Mux) Handle(h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kind := h.Kind()
	if kind == "" {
		panic("processor: handler with empty kind")
	}
	if _, dup := m.handlers[kind]; dup {
		panic("processor: handler already registered for " + kind)
	}
	m.handlers[kind] = h
}

// Handler returns the handler for kind.
func (m *Mux) Handler(kind string) (Handler, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.handlers[kind]
	return h, ok
}

// Kinds returns the registered command types, sorted.
func (m *Mux) Kinds() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	kinds := make([]string, 0, len(m.handlers))
	for k := range m.handlers {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return kinds
}
