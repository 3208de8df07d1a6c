package processor

import (
	"context"
	"errors"
	"fmt"

	"github.com/idempay/idempay/pkg/messages"
)

// Provider is a payment provider. Like Stripe with its Idempotency-Key, it
// takes the idempotency key with every call and never charges one key twice:
// a second Charge with the same key returns the first charge. The processor
// relies on that when it resumes a command whose worker died mid-call.
//
// Errors are classified with ProviderError: Transient (the charge certainly
// did not happen; retry), Declined (definitive; stored as a failed outcome)
// and Ambiguous (it may have happened; retry with the same key, never report
// failed). An unclassified error is treated as ambiguous.
type Provider interface {
	Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error)
}

// ErrorKind classifies a provider error.
type ErrorKind int

const (
	// KindAmbiguous: the call may or may not have taken effect (a timeout, a
	// lost response). Retried with the same key.
	KindAmbiguous ErrorKind = iota
	// KindTransient: the call certainly did not take effect (rate limit,
	// unavailable before processing). Retried.
	KindTransient
	// KindDeclined: the provider refused the charge; definitive.
	KindDeclined
)

func (k ErrorKind) String() string {
	switch k {
	case KindTransient:
		return "transient"
	case KindDeclined:
		return "declined"
	default:
		return "ambiguous"
	}
}

// ProviderError is an error of a Provider with its classification.
type ProviderError struct {
	Kind ErrorKind
	// Code is the provider's code, e.g. "card_declined".
	Code string
	Err  error
}

func (e *ProviderError) Error() string {
	msg := "provider " + e.Kind.String()
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ProviderError) Unwrap() error { return e.Err }

// TransientError returns a ProviderError of KindTransient.
func TransientError(err error) error { return &ProviderError{Kind: KindTransient, Err: err} }

// AmbiguousError returns a ProviderError of KindAmbiguous.
func AmbiguousError(err error) error { return &ProviderError{Kind: KindAmbiguous, Err: err} }

// DeclinedError returns a ProviderError of KindDeclined with a code such as
// "card_declined".
func DeclinedError(code, message string) error {
	return &ProviderError{Kind: KindDeclined, Code: code, Err: errors.New(message)}
}

// ChargeHandler returns the payment.charge handler, charging through p.
func ChargeHandler(p Provider) Handler { return chargeHandler{p: p} }

type chargeHandler struct{ p Provider }

func (chargeHandler) Kind() string                 { return messages.TypePaymentCharge }
func (chargeHandler) NewCommand() messages.Command { return &messages.ChargeRequest{} }

func (h chargeHandler) Handle(ctx context.Context, call *Call) (Outcome, error) {
	req := *call.Command.(*messages.ChargeRequest) //nolint:errcheck,forcetypeassert // always NewCommand's type; a bug panics, recovered as a PanicError
	charge, err := h.p.Charge(ctx, call.Key, req)
	if err == nil {
		return Succeeded(charge), nil
	}
	var pe *ProviderError
	if errors.As(err, &pe) && pe.Kind == KindDeclined {
		code := pe.Code
		if code == "" {
			code = messages.CodeCardDeclined
		}
		msg := "the provider declined the charge"
		if pe.Err != nil {
			msg = pe.Err.Error()
		}
		return Failed(code, msg, messages.ChargeData{AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency}), nil
	}
	if errors.As(err, &pe) {
		return Outcome{}, err
	}
	return Outcome{}, AmbiguousError(fmt.Errorf("charge: %w", err))
}
