package processor

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrStop is the cause of the contexts a Processor cancels when it
	// stops, so that work can tell "stopping" from "failed".
	ErrStop = errors.New("processor: stopping")
	// ErrKeyVoided is a provider's refusal of a call with a key it voided
	// earlier (contract v1.2): nothing took effect and nothing will. The
	// shipped operations answer it as a failed outcome, code key_voided.
	ErrKeyVoided = errors.New("processor: the idempotency key was voided at the provider")
	// ErrCannotVoid is a Voider's answer when the provider behind it cannot
	// void a key: the key's outcome stays unknown.
	ErrCannotVoid = errors.New("processor: the provider cannot void a key")
)

// Class says what an operation's error means for its effect, and so how the
// engine retries it. An error that does not say is Ambiguous: the engine
// never assumes an effect did not happen.
type Class int

const (
	// Ambiguous: the call may or may not have taken effect (a timeout, a
	// lost response, a panic). Retried with the same key; at the limit the
	// engine asks the operation's Resolver, and without a confirmation the
	// command is dead-lettered with outcome_unknown, never dead_lettered.
	Ambiguous Class = iota
	// Transient: the call certainly did not take effect (refused before
	// processing, unavailable, a precondition not met yet). Retried.
	Transient
	// RateLimited: the call did not take effect and the other side asked to
	// wait (Error.RetryAfter) before the next one.
	RateLimited
	// Deferred: the operation did not start, because something it depends
	// on is not settled yet (a refund's charge still in progress). Nothing
	// was called; the try is given back to the key and the message comes
	// back after Error.RetryAfter (or the engine's growing delay), without
	// holding a worker slot in between.
	Deferred
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case RateLimited:
		return "rate_limited"
	case Deferred:
		return "deferred"
	default:
		return "ambiguous"
	}
}

// Error is an operation error with its Class. Operations and the providers
// behind them return one through TransientError, AmbiguousError or
// RateLimitedError; the engine reads it with errors.As anywhere in the
// chain.
type Error struct {
	Class Class
	// RetryAfter is how long a RateLimited error asks to wait; 0 for none.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	msg := e.Class.String()
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// TransientError marks err as certainly without effect.
func TransientError(err error) error { return &Error{Class: Transient, Err: err} }

// AmbiguousError marks err as possibly with effect.
func AmbiguousError(err error) error { return &Error{Class: Ambiguous, Err: err} }

// RateLimitedError marks err as without effect, with the wait the other
// side asked for (0 when it named none).
func RateLimitedError(err error, retryAfter time.Duration) error {
	return &Error{Class: RateLimited, RetryAfter: retryAfter, Err: err}
}

// DeferredError marks err as "not started yet, come back later": see
// Deferred. after is the wait it asks for (0: the engine's growing delay).
func DeferredError(err error, after time.Duration) error {
	return &Error{Class: Deferred, RetryAfter: after, Err: err}
}

// ClassOf returns err's Class and, for RateLimited, the wait it asks for.
// An error without a Class is Ambiguous.
func ClassOf(err error) (Class, time.Duration) {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Class, e.RetryAfter
	}
	return Ambiguous, 0
}

// PanicError is an operation's panic, recovered. It is Ambiguous (the
// operation may have done something before it panicked) and is not retried
// inside the delivery: a panic is likely to repeat.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("operation panicked: %v", e.Value) }

// Reasons a processor is not ready.
var (
	errNotStarted = errors.New("processor: not started")
	errNATSDown   = errors.New("processor: not connected to NATS")
)

type readyError struct {
	what string
	err  error
}

func (e *readyError) Error() string { return "processor: " + e.what + " unreachable: " + e.err.Error() }
func (e *readyError) Unwrap() error { return e.err }
