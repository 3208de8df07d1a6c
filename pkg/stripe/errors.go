package stripe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	stripego "github.com/stripe/stripe-go/v82"

	"github.com/idempay/idempay/pkg/processor"
)

var (
	// ErrNotFound is a look-up's answer when it found no effect for the key.
	// It is not proof that none was made: Stripe's search is eventually
	// consistent, and a call may still be in flight. Only a void
	// (VoidCharge, VoidRefund) answers "none, and none will be" exactly.
	ErrNotFound = errors.New("stripe: no effect found for the key; not proof that none was made (search is eventually consistent, a call may be in flight): void the key for an exact answer")
	// ErrKeyHeld is a call's error when the key is held at Stripe by a
	// request that is neither the operation's nor idempay's void: another
	// amount, payment method or description under the same key (a changed
	// configuration within Stripe's 24 hours), or another program using the
	// key. The call itself did nothing; what the key's first request did is
	// unknown, so the engine gets it as ambiguous.
	ErrKeyHeld = errors.New("stripe: the idempotency key is held at Stripe by a request with other parameters")
)

// verdict is what one Stripe call's error means for its key. The table in
// docs/stripe.md lists every row with the test that shows it.
type verdict int

const (
	// ambiguous: the call may have taken effect (5xx, a timeout or a reset
	// after the request was written, anything not known). Retried with the
	// same key and parameters; never reported failed.
	ambiguous verdict = iota
	// transient: the call certainly did not take effect (nothing was
	// written; 409 idempotency_key_in_use; 401/403). Retried.
	transient
	// rateLimited: 429 (rate_limit, lock_timeout): Stripe's rate limiters
	// run before its idempotency layer, so nothing was done. Retried after
	// Retry-After.
	rateLimited
	// refused: a definitive refusal (402 card_error, 400/404
	// invalid_request_error): the call did not take effect, and a retry
	// with the same key gets the same answer. A failed outcome.
	refused
	// mismatch: 400 idempotency_error: the key is held by a request with
	// another endpoint or other parameters. This call did nothing; the
	// caller finds out what holds the key (void.go).
	mismatch
)

func (v verdict) String() string {
	switch v {
	case transient:
		return "transient"
	case rateLimited:
		return "rate_limited"
	case refused:
		return "refused"
	case mismatch:
		return "idempotency_mismatch"
	default:
		return "ambiguous"
	}
}

// failure is one failed Stripe call, classified.
type failure struct {
	err   error
	v     verdict
	se    *stripego.Error // Stripe's answer; nil when none was read
	after time.Duration   // the wait a 429 asked for
}

// code is Stripe's error code, "" without one.
func (f *failure) code() stripego.ErrorCode {
	if f.se == nil {
		return ""
	}
	return f.se.Code
}

// engine returns the failure as the engine's error class for op. refused
// and mismatch have no class of their own (the callers turn them into
// outcomes first): they are ambiguous here, the safe side.
func (f *failure) engine(op string) error {
	err := fmt.Errorf("stripe: %s: %s: %w", op, f.v, f.err)
	switch f.v {
	case transient:
		return processor.TransientError(err)
	case rateLimited:
		return processor.RateLimitedError(err, f.after)
	default:
		return processor.AmbiguousError(err)
	}
}

// classify returns what err, the error of one call, means for its key.
// wrote reports whether the whole request was written to the connection:
// an error without an answer from Stripe is ambiguous only then.
func classify(err error, wrote bool) *failure {
	f := &failure{err: err}
	if errors.As(err, &f.se) && f.se.HTTPStatusCode != 0 {
		se := f.se
		switch {
		case se.HTTPStatusCode == http.StatusTooManyRequests:
			// "a request that's rate limited with a 429 can produce a
			// different result with the same idempotency key because rate
			// limiters run before the API's idempotency layer" (Stripe,
			// Advanced error handling). lock_timeout is a 429 too.
			f.v, f.after = rateLimited, retryAfter(se)
		case se.Type == stripego.ErrorTypeIdempotency:
			f.v = mismatch
		case se.HTTPStatusCode == http.StatusConflict:
			// idempotency_key_in_use: "If incoming parameters fail
			// validation, or the request conflicts with another request
			// that's executing concurrently, we don't save the idempotent
			// result because no API endpoint initiates the execution. You
			// can retry these requests." (Stripe, Idempotent requests)
			f.v = transient
		case se.HTTPStatusCode == http.StatusUnauthorized || se.HTTPStatusCode == http.StatusForbidden:
			// A wrong or rotated key, or a restricted key without the
			// permission: refused before anything ran. Retried (an operator
			// fixes the key), dead-lettered as "not done" at the limit.
			f.v = transient
		case se.HTTPStatusCode >= http.StatusInternalServerError:
			// "Subsequent requests with the same key return the same
			// result, including 500 errors" (Stripe, Idempotent requests):
			// a 5xx may come after the endpoint began, and may have done
			// anything.
			f.v = ambiguous
		case se.Type == stripego.ErrorTypeCard || se.Type == stripego.ErrorTypeInvalidRequest:
			f.v = refused
		default:
			f.v = ambiguous
		}
		return f
	}
	f.se = nil
	if !wrote {
		// Connection refused, a DNS or TLS failure, a context cancelled
		// before the request was written: Stripe never had it.
		f.v = transient
		return f
	}
	f.v = ambiguous
	return f
}

// retryAfter reads the Retry-After header of Stripe's answer, in seconds or
// as an HTTP date; 0 when there is none.
func retryAfter(se *stripego.Error) time.Duration {
	if se.LastResponse == nil {
		return 0
	}
	h := se.LastResponse.Header.Get("Retry-After")
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// writeTrace records whether an HTTP request was written whole, for
// classify: stripe-go builds its requests with the context it is given, so
// an httptrace in that context sees every attempt net/http makes (net/http
// itself may resend a request with an Idempotency-Key once on a reused
// connection that died: the same bytes, key and parameters).
type writeTrace struct{ wrote atomic.Bool }

// call runs one Stripe request of p with a writeTrace in its context and
// classifies its error, the API key redacted; the failure is nil on
// success.
func call[T any](ctx context.Context, p *Provider, do func(context.Context) (T, error)) (T, *failure) {
	var w writeTrace
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				w.wrote.Store(true)
			}
		},
	})
	v, err := do(ctx)
	if err == nil {
		return v, nil
	}
	f := classify(err, w.wrote.Load())
	f.err = &redacted{err: err, secret: p.cfg.APIKey}
	return v, f
}

// redacted is an error whose text never shows the API key: Stripe's own
// messages show a masked key, a test server may echo it whole.
type redacted struct {
	err    error
	secret string
}

func (r *redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.secret, "sk_***") }
func (r *redacted) Unwrap() error { return r.err }
