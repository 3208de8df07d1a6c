package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// Operation performs one kind of command: T is its command type (a struct
// with value-receiver Kind and Validate, like messages.ChargeRequest),
// decoded strictly and validated before Handle sees it. Register it on a
// Mux with Register.
type Operation[T messages.Command] interface {
	// Handle performs the operation once. It returns a definitive Outcome
	// (succeeded, or failed when the effect certainly did not happen), or an
	// error when there is none: the engine retries it by the error's Class
	// (see TransientError, AmbiguousError, RateLimitedError; an error
	// without one is Ambiguous) and never turns an error into a failed
	// outcome. Handle may run more than once for one key (a retry, a crashed
	// worker, a lost lock), always with the same key, so everything it calls
	// outside must be idempotent on call.Key.
	Handle(ctx context.Context, call *Call[T]) (Outcome, error)
}

// Resolver is implemented by operations that can learn, without causing
// any effect, whether an earlier attempt for call.Key took effect: a
// payment provider looked up by idempotency key. When a key has used its
// tries after an attempt that may have taken effect, the engine asks
// Resolve before it dead-letters: found returns that effect's Outcome,
// which is stored and answered; not found confirms that nothing happened,
// so the client can be told dead_lettered; an error leaves it unknown
// (outcome_unknown).
type Resolver[T messages.Command] interface {
	Resolve(ctx context.Context, call *Call[T]) (o Outcome, found bool, err error)
}

// Voider is implemented by operations whose provider can void a key
// (contract v1.2): Void asks the provider, atomically, for the effect of
// call.Key, and voids the key when there is none, so that no call with it
// can take effect afterwards - one frozen in flight included. found returns
// the effect's Outcome (stored and answered as the key's outcome); not
// found means nothing took effect and nothing will, so the engine may
// answer dead_lettered. ErrCannotVoid, or any error, leaves the key
// unknown.
//
// The engine voids a key only when its history is unknown (a call may
// have taken effect, or may still be in flight); a key whose every call
// was answered "certainly not done" needs no void and stays re-drivable.
type Voider[T messages.Command] interface {
	Void(ctx context.Context, call *Call[T]) (o Outcome, found bool, err error)
}

// tenantKey keys the tenant in a call's context.
type tenantKey struct{}

// TenantFrom returns the tenant the command was sent for (its
// Idempay-Tenant header, contract v1.2), as the engine puts it in the
// context of Handle, Resolve and Void - the resolver's included, which
// reads it from the key's record. A provider that keeps a key per account
// (Stripe Connect) picks the account from it.
func TenantFrom(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(tenantKey{}).(string)
	return t, ok && t != ""
}

// withTenant is the context of a call for tenant ("" for none).
func withTenant(ctx context.Context, tenant string) context.Context {
	if tenant == "" {
		return ctx
	}
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// Call is one execution of a command.
type Call[T messages.Command] struct {
	// Key is the idempotency key. Pass it to every external system.
	Key string
	// Command is the decoded, validated body.
	Command T
	// Delivery is the JetStream delivery count of the message (1 on the
	// first): how often this message was handed to a worker, locked-out
	// deliveries included. It is the answer's "attempts".
	Delivery int
	// Tenant is the tenant the command was sent for (Idempay-Tenant), ""
	// for none; TenantFrom(ctx) says the same to the providers.
	Tenant string
	// Try is the key's attempt number since it was last dead-lettered (1 on
	// the first); the key is dead-lettered after Config.MaxDeliver tries (MAX_DELIVER: a count of tries, not of deliveries).
	Try int

	lookup func(ctx context.Context, key string) (KeyState, error)
}

// Lookup returns what the store holds for another key, e.g. the charge a
// refund refunds. It takes no lock.
func (c *Call[T]) Lookup(ctx context.Context, key string) (KeyState, error) {
	if c.lookup == nil {
		return KeyState{}, errors.New("processor: Call.Lookup outside the engine")
	}
	return c.lookup(ctx, key)
}

// KeyState is what the store knows of a key.
type KeyState struct {
	// Status is KeyAbsent, KeyInProgress or KeyCompleted.
	Status KeyStatus
	// Kind is the key's command kind, when it has a record.
	Kind string
	// Outcome is the stored outcome, when Status is KeyCompleted.
	Outcome *messages.Result
}

// KeyStatus is where a key stands.
type KeyStatus int

// The states of a key, as another operation sees them.
const (
	// KeyAbsent: no record (never sent, or expired).
	KeyAbsent KeyStatus = iota
	// KeyInProgress: no outcome yet, and one may still come: the key is
	// running or between tries, or was dead-lettered with its outcome
	// unknown (resolution pending).
	KeyInProgress
	// KeyCompleted: the outcome is stored (Outcome).
	KeyCompleted
	// KeyDead: the key was dead-lettered and certainly did not take effect
	// (dead_lettered); nothing will come of it unless it is sent again.
	KeyDead
)

// Effect is a Redis counter update that is an operation's whole effect; its
// new value replaces Placeholder in the outcome's Data. The engine applies
// it once per key: in the commit script on a single Redis, by its own
// idempotent script before the commit on a Redis Cluster (see
// dedupe.Effect). Its Key must carry a hash tag ({...}).
type Effect = dedupe.Effect

// Placeholder is the JSON value in Outcome.Data that the commit of an
// Effect replaces with the counter's new value.
const Placeholder = dedupe.Placeholder

// Outcome is what an operation returns when it knows the result.
type Outcome struct {
	// Status is messages.StatusSucceeded or messages.StatusFailed.
	Status messages.Status
	// Code and Message explain a failure, e.g. "card_declined".
	Code    string
	Message string
	// Data is the operation's output, encoded as JSON in the answer: by
	// its AppendJSON(b []byte) []byte method when it has one (the
	// messages data types, on every command's path), which must append
	// exactly what json.Marshal would; by json.Marshal otherwise.
	Data any
	// Effect, if set, is the operation's whole effect, applied by the
	// engine once per key (see OpConfig.EffectInCommit): an operation whose
	// whole effect is such a counter does nothing itself.
	Effect *Effect
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
		return fmt.Errorf("processor: operation returned status %q; want succeeded or failed", o.Status)
	}
	if o.Status == messages.StatusFailed && o.Code == "" {
		return errors.New("processor: failed outcome without a code")
	}
	return nil
}

// withEffect returns o with its effect done: n, the counter's value after
// it, in place of Placeholder in Data, and no Effect left to apply.
func (o Outcome) withEffect(n int64) (Outcome, error) {
	data, err := o.data()
	if err != nil {
		return Outcome{}, fmt.Errorf("encode outcome data: %w", err)
	}
	o.Data = json.RawMessage(bytes.Replace(data, []byte(Placeholder), strconv.AppendInt(nil, n, 10), 1))
	o.Effect = nil
	return o, nil
}

func (o Outcome) data() (json.RawMessage, error) {
	if o.Data == nil {
		return json.RawMessage("null"), nil
	}
	switch d := o.Data.(type) {
	case json.RawMessage:
		return d, nil
	case interface{ AppendJSON(b []byte) []byte }: // messages.ChargeData and its like: no reflection
		return d.AppendJSON(nil), nil
	}
	return json.Marshal(o.Data)
}

// OpConfig is how an operation is registered.
type OpConfig struct {
	// Retry is the operation's retry policy per error class: a refund may
	// wait for its charge longer than a charge retries a flaky provider.
	// Config.RetryOverrides wins over it for the kind. Defaults to
	// Config.Retry.
	Retry RetryPolicy
	// EffectInCommit declares that Handle has no side effect of its own:
	// it only computes the Outcome and its Effect from the command. On a
	// single Redis the engine then calls Handle before Begin and applies
	// the effect and stores the outcome in the script that begins the
	// attempt (one round trip, and no moment where the effect happened and
	// the key is not completed). On a Redis Cluster (or with
	// Config.SeparateEffects) the effect is the operation: applied between
	// Begin and the commit by a script that remembers, in the effect's
	// slot, that this key applied it, so that a crash between the two
	// leaves nothing a redelivery could apply twice (see deliver.go).
	EffectInCommit bool
}

// route is a registered operation with its types erased: the engine's view.
type route struct {
	kind    string
	cfg     OpConfig
	decode  func(body []byte) (messages.Command, error)
	handle  func(ctx context.Context, env callEnv, cmd messages.Command) (Outcome, error)
	resolve func(ctx context.Context, env callEnv, cmd messages.Command) (Outcome, bool, error) // nil: none
	void    func(ctx context.Context, env callEnv, cmd messages.Command) (Outcome, bool, error) // nil: none
}

// callEnv is what a Call carries besides its command.
type callEnv struct {
	key           string
	tenant        string
	delivery, try int
	lookup        func(ctx context.Context, key string) (KeyState, error)
}

// Register registers op for T's kind on mux, like river's AddWorker: the
// engine decodes a body into a T once, so no operation type-asserts. cfg
// may be nil. Register panics if the kind is empty or already registered,
// or if *T is not a messages.Command (T's methods must have value
// receivers): both are programming errors, like http.ServeMux's.
func Register[T messages.Command](mux *Mux, op Operation[T], cfg *OpConfig) {
	var zero T
	kind := zero.Kind()
	if _, ok := any(&zero).(messages.Command); !ok || reflect.TypeOf(zero).Kind() != reflect.Struct {
		panic(fmt.Sprintf("processor: %T must be a struct with value-receiver Kind and Validate", zero))
	}
	r := &route{kind: kind}
	if cfg != nil {
		r.cfg = *cfg
	}
	r.decode = func(body []byte) (messages.Command, error) {
		var c T
		dst, _ := any(&c).(messages.Command)
		if err := messages.Decode(body, dst); err != nil {
			return nil, err
		}
		return c, nil
	}
	call := func(env callEnv, cmd messages.Command) *Call[T] {
		return &Call[T]{Key: env.key, Command: cmd.(T), Delivery: env.delivery, Tenant: env.tenant, Try: env.try, lookup: env.lookup} //nolint:errcheck,forcetypeassert // always decode's T
	}
	r.handle = func(ctx context.Context, env callEnv, cmd messages.Command) (o Outcome, err error) {
		defer recoverPanic(&err)
		return op.Handle(withTenant(ctx, env.tenant), call(env, cmd))
	}
	if res, ok := op.(Resolver[T]); ok {
		r.resolve = func(ctx context.Context, env callEnv, cmd messages.Command) (o Outcome, found bool, err error) {
			defer recoverPanic(&err)
			return res.Resolve(withTenant(ctx, env.tenant), call(env, cmd))
		}
	}
	if v, ok := op.(Voider[T]); ok {
		r.void = func(ctx context.Context, env callEnv, cmd messages.Command) (o Outcome, found bool, err error) {
			defer recoverPanic(&err)
			return v.Void(withTenant(ctx, env.tenant), call(env, cmd))
		}
	}
	mux.add(r)
}

func recoverPanic(err *error) {
	if r := recover(); r != nil {
		*err = &PanicError{Value: r, Stack: string(debug.Stack())}
	}
}

// Mux routes command kinds to operations. It is safe for concurrent use.
type Mux struct {
	mu     sync.RWMutex
	routes map[string]*route
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{routes: make(map[string]*route)} }

func (m *Mux) add(r *route) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.kind == "" {
		panic("processor: operation with an empty kind")
	}
	if _, dup := m.routes[r.kind]; dup {
		panic("processor: an operation is already registered for " + r.kind)
	}
	m.routes[r.kind] = r
}

func (m *Mux) route(kind string) (*route, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.routes[kind]
	return r, ok
}

// Kinds returns the registered command kinds, sorted.
func (m *Mux) Kinds() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	kinds := make([]string, 0, len(m.routes))
	for k := range m.routes {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return kinds
}
