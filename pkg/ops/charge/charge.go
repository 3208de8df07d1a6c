// Package charge owns the payment.charge operation and the interface of the
// payment provider it charges through.
package charge

import (
	"context"
	"errors"
	"fmt"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// Provider charges cards. Like Stripe with its Idempotency-Key, it takes
// the idempotency key with every call and never charges one key twice: a
// second Charge with the same key returns the first charge. The engine
// relies on that when it resumes a command whose worker died mid-call.
//
// Errors say their class with processor.TransientError (certainly not
// charged; retry), processor.RateLimitedError (not charged; wait what the
// provider asked) or processor.AmbiguousError (it may have been charged;
// retry with the same key, never report failed); a refusal is a
// *DeclinedError. An error with no class counts as ambiguous.
type Provider interface {
	Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error)
}

// Lookup is implemented by providers that can find the charge made for a
// key without making one. req is the command the key was sent with, for a
// provider that looks a key up by replaying its request (Stripe, within
// its idempotency window). With it the engine can tell, when a key's
// history is unknown, whether an attempt charged the card: the charge is
// then answered as succeeded. A lookup that finds nothing does not prove
// that nothing will be charged (a call may still be in flight): only a
// Voider gives that.
type Lookup interface {
	LookupCharge(ctx context.Context, key string, req messages.ChargeRequest) (c messages.ChargeData, found bool, err error)
}

// Voider is implemented by providers that can make a key unusable for a
// charge (contract v1.2, "provider voids"). VoidCharge is a lookup and a
// void in one step, atomic at the provider: if a charge for key exists it
// returns it (found true) and changes nothing; otherwise it makes sure that
// no call with key ever charges, one in flight now included, and returns
// found false. A charge attempted with a voided key fails with
// processor.ErrKeyVoided. With it the engine can answer dead_lettered for a key whose
// history is unknown: nothing was charged, and nothing will be.
type Voider interface {
	VoidCharge(ctx context.Context, key string, req messages.ChargeRequest) (c messages.ChargeData, found bool, err error)
}

// DeclinedError is a provider's definitive refusal, e.g. Code
// "card_declined": stored as a failed outcome, never retried.
type DeclinedError struct {
	Code    string
	Message string
}

func (e *DeclinedError) Error() string { return "declined: " + e.Code + ": " + e.Message }

// Declined returns a *DeclinedError.
func Declined(code, message string) error { return &DeclinedError{Code: code, Message: message} }

// Operation is payment.charge.
type Operation struct{ p Provider }

// New returns the payment.charge operation, charging through p.
func New(p Provider) *Operation { return &Operation{p: p} }

// Register registers payment.charge on mux, charging through p, with the
// engine's default retry policy (a flaky provider is retried briefly inside
// the delivery, then by redelivery).
func Register(mux *processor.Mux, p Provider) { processor.Register(mux, New(p), nil) }

// Handle implements processor.Operation.
func (o *Operation) Handle(ctx context.Context, call *processor.Call[messages.ChargeRequest]) (processor.Outcome, error) {
	req := call.Command
	charge, err := o.p.Charge(ctx, call.Key, req)
	if err == nil {
		return processor.Succeeded(charge), nil
	}
	if errors.Is(err, processor.ErrKeyVoided) {
		return processor.Failed(messages.CodeKeyVoided, voidedMessage,
			messages.ChargeData{AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency}), nil
	}
	if d, ok := errors.AsType[*DeclinedError](err); ok {
		code := d.Code
		if code == "" {
			code = messages.CodeCardDeclined
		}
		msg := d.Message
		if msg == "" {
			msg = "the provider declined the charge"
		}
		return processor.Failed(code, msg, messages.ChargeData{AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency}), nil
	}
	if _, classified := errors.AsType[*processor.Error](err); classified {
		return processor.Outcome{}, err
	}
	return processor.Outcome{}, processor.AmbiguousError(fmt.Errorf("charge: %w", err))
}

// Resolve implements processor.Resolver: the charge the provider holds for
// the key, if it can look one up.
func (o *Operation) Resolve(ctx context.Context, call *processor.Call[messages.ChargeRequest]) (processor.Outcome, bool, error) {
	l, ok := o.p.(Lookup)
	if !ok {
		return processor.Outcome{}, false, errors.New("charge: the provider cannot look up a charge by key")
	}
	c, found, err := l.LookupCharge(ctx, call.Key, call.Command)
	if err != nil || !found {
		return processor.Outcome{}, found, err
	}
	return processor.Succeeded(c), true, nil
}

// Void implements processor.Voider: the charge the provider holds for the
// key, or, if there is none, the key voided so that none can be made.
func (o *Operation) Void(ctx context.Context, call *processor.Call[messages.ChargeRequest]) (processor.Outcome, bool, error) {
	v, ok := o.p.(Voider)
	if !ok {
		return processor.Outcome{}, false, processor.ErrCannotVoid
	}
	c, found, err := v.VoidCharge(ctx, call.Key, call.Command)
	if err != nil || !found {
		return processor.Outcome{}, found, err
	}
	return processor.Succeeded(c), true, nil
}

// voidedMessage explains a failed key_voided outcome.
const voidedMessage = "the idempotency key was voided at the provider after an unknown outcome: nothing was charged, and nothing will be with this key; use a new key"
