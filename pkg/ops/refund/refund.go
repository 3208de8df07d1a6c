// Package refund owns the payment.refund operation (contract v1.1): a
// refund of an earlier payment.charge, named by the charge's idempotency
// key, under its own key; and the interface of the provider that refunds.
package refund

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// Request is what the provider is asked to refund.
type Request struct {
	// ChargeKey and ChargeID name the charge: its idempotency key and the
	// provider's id.
	ChargeKey string
	ChargeID  string
	// Amount is this refund's, in the charge's Currency; ChargeAmount is
	// what was charged.
	Amount       int64
	Currency     string
	ChargeAmount int64
	Reason       string
}

// Provider refunds charges. Like Charge, Refund is idempotent on its key
// (the refund's own idempotency key): a second call with the same key
// returns the first refund and refunds nothing more. It never lets the
// refunds of one charge add up to more than the charge, whatever their keys
// and however they race: a refund that would is an *ExceedsError. Other
// errors say their class like a charge.Provider's.
type Provider interface {
	Refund(ctx context.Context, key string, req Request) (messages.RefundData, error)
}

// Lookup is implemented by providers that can find the refund made for a
// key without making one (see charge.Lookup); req is the request the key
// was sent with.
type Lookup interface {
	LookupRefund(ctx context.Context, key string, req Request) (r messages.RefundData, found bool, err error)
}

// Voider is implemented by providers that can make a refund key unusable
// (see charge.Voider): VoidRefund returns the refund made for key if there
// is one (found), and otherwise makes sure no call with key ever refunds.
// A refund attempted with a voided key fails with processor.ErrKeyVoided.
type Voider interface {
	VoidRefund(ctx context.Context, key string, req Request) (r messages.RefundData, found bool, err error)
}

// RefusedError is a provider's definitive refusal of a refund other than
// ExceedsError (an invalid request, a charge the provider cannot refund):
// nothing was refunded, and the refund fails with Code, never retried.
type RefusedError struct {
	Code    string
	Message string
}

func (e *RefusedError) Error() string { return "refund refused: " + e.Code + ": " + e.Message }

// Refused returns a *RefusedError.
func Refused(code, message string) error { return &RefusedError{Code: code, Message: message} }

// ExceedsError is a provider's refusal of a refund that would take the
// charge's refunds over its amount: a failed refund_exceeds_charge.
type ExceedsError struct {
	// RefundedTotal is what was refunded of the charge before this one.
	RefundedTotal int64
}

func (e *ExceedsError) Error() string {
	return fmt.Sprintf("refund: exceeds what is left of the charge (%d already refunded)", e.RefundedTotal)
}

// RetryPolicy is the refund's own retry policy: a refund of a charge still
// in progress waits for it, longer than a charge retries a flaky provider
// (up to a minute inside a delivery, then by redelivery).
func RetryPolicy() *processor.Policy {
	p := processor.DefaultPolicy()
	p.Transient = processor.Backoff{InitialInterval: 200 * time.Millisecond, MaxInterval: 5 * time.Second,
		MaxElapsedTime: time.Minute, MaxRetries: 30, RandomizationFactor: 0.3}
	return p
}

// Operation is payment.refund.
type Operation struct{ p Provider }

// New returns the payment.refund operation, refunding through p.
func New(p Provider) *Operation { return &Operation{p: p} }

// Register registers payment.refund on mux with RetryPolicy.
func Register(mux *processor.Mux, p Provider) {
	processor.Register(mux, New(p), &processor.OpConfig{Retry: RetryPolicy()})
}

// errChargeInProgress is retried: a refund waits for its charge.
var errChargeInProgress = errors.New("refund: the charge is still in progress; waiting for its outcome")

// Handle implements processor.Operation: it reads the charge's outcome from
// the store, then refunds through the provider.
func (o *Operation) Handle(ctx context.Context, call *processor.Call[messages.RefundRequest]) (processor.Outcome, error) {
	req := call.Command
	r, refused, err := o.request(ctx, call)
	if err != nil || refused != nil {
		return deref(refused), err
	}
	data, err := o.p.Refund(ctx, call.Key, r)
	if err == nil {
		return processor.Succeeded(data), nil
	}
	if errors.Is(err, processor.ErrKeyVoided) {
		return processor.Failed(messages.CodeKeyVoided,
			"the refund's idempotency key was voided at the provider after an unknown outcome: nothing was refunded, and nothing will be with this key; use a new key", nil), nil
	}
	if rf, ok := errors.AsType[*RefusedError](err); ok {
		code := cmp.Or(rf.Code, "refund_refused")
		return processor.Failed(code, cmp.Or(rf.Message, "the provider refused the refund"), nil), nil
	}
	if ex, ok := errors.AsType[*ExceedsError](err); ok {
		return processor.Failed(messages.CodeRefundExceedsCharge,
			fmt.Sprintf("a refund of %d would exceed the charge of %d %s, of which %d is already refunded",
				req.Amount, r.ChargeAmount, r.Currency, ex.RefundedTotal),
			messages.RefundData{ChargeID: r.ChargeID, Amount: req.Amount, Currency: r.Currency, RefundedTotal: ex.RefundedTotal}), nil
	}
	if _, classified := errors.AsType[*processor.Error](err); classified {
		return processor.Outcome{}, err
	}
	return processor.Outcome{}, processor.AmbiguousError(fmt.Errorf("refund: %w", err))
}

// request reads the charge the refund names and returns the provider's
// request for it; or the refund's definitive failure when there is nothing
// to refund; or an error (the charge still in progress: Deferred).
func (o *Operation) request(ctx context.Context, call *processor.Call[messages.RefundRequest]) (Request, *processor.Outcome, error) {
	req := call.Command
	st, err := call.Lookup(ctx, req.ChargeKey)
	if err != nil {
		return Request{}, nil, processor.TransientError(fmt.Errorf("refund: read the charge: %w", err))
	}
	switch {
	case st.Status == processor.KeyAbsent || st.Status == processor.KeyDead || st.Kind != messages.KindPaymentCharge:
		o := processor.Failed(messages.CodeChargeNotFound,
			"no charge with key "+req.ChargeKey+" succeeded or is in progress", nil)
		return Request{}, &o, nil
	case st.Status == processor.KeyInProgress:
		return Request{}, nil, processor.DeferredError(errChargeInProgress, 0)
	case st.Outcome.Status != messages.StatusSucceeded:
		o := processor.Failed(messages.CodeChargeNotRefundable,
			"the charge "+req.ChargeKey+" failed ("+st.Outcome.Code+"): there is nothing to refund", nil)
		return Request{}, &o, nil
	}
	var c messages.ChargeData
	if err := json.Unmarshal(st.Outcome.Data, &c); err != nil {
		return Request{}, nil, fmt.Errorf("refund: the stored charge of %s: %w", req.ChargeKey, err)
	}
	return Request{
		ChargeKey: req.ChargeKey, ChargeID: c.ChargeID, Amount: req.Amount, Currency: c.Currency,
		ChargeAmount: c.Amount, Reason: req.Reason,
	}, nil, nil
}

func deref(o *processor.Outcome) processor.Outcome {
	if o == nil {
		return processor.Outcome{}
	}
	return *o
}

// Resolve implements processor.Resolver: the refund the provider holds for
// the key, if it can look one up.
func (o *Operation) Resolve(ctx context.Context, call *processor.Call[messages.RefundRequest]) (processor.Outcome, bool, error) {
	l, ok := o.p.(Lookup)
	if !ok {
		return processor.Outcome{}, false, errors.New("refund: the provider cannot look up a refund by key")
	}
	r, err := o.requestForLookup(ctx, call)
	if err != nil {
		return processor.Outcome{}, false, err
	}
	data, found, err := l.LookupRefund(ctx, call.Key, r)
	if err != nil || !found {
		return processor.Outcome{}, found, err
	}
	return processor.Succeeded(data), true, nil
}

// Void implements processor.Voider: the refund the provider holds for the
// key, or, if there is none, the key voided so that none can be made.
func (o *Operation) Void(ctx context.Context, call *processor.Call[messages.RefundRequest]) (processor.Outcome, bool, error) {
	v, ok := o.p.(Voider)
	if !ok {
		return processor.Outcome{}, false, processor.ErrCannotVoid
	}
	r, err := o.requestForLookup(ctx, call)
	if err != nil {
		return processor.Outcome{}, false, err
	}
	data, found, err := v.VoidRefund(ctx, call.Key, r)
	if err != nil || !found {
		return processor.Outcome{}, found, err
	}
	return processor.Succeeded(data), true, nil
}

// requestForLookup is the request a refund key was sent with, for a
// provider that looks refunds up by their request. A refund whose charge
// has nothing to refund never reached the provider; its request then names
// the charge key alone.
func (o *Operation) requestForLookup(ctx context.Context, call *processor.Call[messages.RefundRequest]) (Request, error) {
	r, refused, err := o.request(ctx, call)
	if refused != nil {
		return Request{ChargeKey: call.Command.ChargeKey, Amount: call.Command.Amount, Reason: call.Command.Reason}, nil
	}
	return r, err
}
