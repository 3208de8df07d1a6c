package stripe

import (
	"context"
	"errors"
	"fmt"
	"strings"

	stripego "github.com/stripe/stripe-go/v82"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Voiding a key at Stripe (contract v1.2).
//
// Stripe has no "void this idempotency key" call. What it documents about
// its keys (Idempotent requests, docs.stripe.com/api/idempotent_requests):
//
//	"Stripe's idempotency works by saving the resulting status code and
//	body of the first request made for any given idempotency key,
//	regardless of whether it succeeds or fails. Subsequent requests with
//	the same key return the same result, including 500 errors."
//
//	"The idempotency layer compares incoming parameters to those of the
//	original request and errors if they're not the same to prevent
//	accidental misuse."
//
//	"We save results only after the execution of an endpoint begins. If
//	incoming parameters fail validation, or the request conflicts with
//	another request that's executing concurrently, we don't save the
//	idempotent result because no API endpoint initiates the execution."
//
//	"You can remove keys from the system automatically after they're at
//	least 24 hours old. We generate a new request if a key is reused after
//	the original is pruned."
//
// and of its error types (Errors, docs.stripe.com/api/errors):
//
//	"idempotency_error: Idempotency errors occur when an Idempotency-Key is
//	re-used on a request that does not match the first request's API
//	endpoint and parameters."
//
// So the first request that *executes* with a key owns it for at least 24
// hours, and every later request with the key either gets that request's
// saved answer (same endpoint and parameters) or an idempotency_error.
// A void is therefore a request that executes, cannot move money, and
// differs from the real one: a PaymentIntent created with the key but
// without confirm and without a payment method (status
// requires_payment_method: nothing can be paid until someone confirms it,
// and it is canceled right after). Then:
//
//   - the void executes first (200): it owns the key. A charge frozen in
//     flight that arrives later has other parameters (confirm,
//     payment_method), and a refund another endpoint: Stripe answers it
//     idempotency_error and it charges nothing. Charge and Refund then see
//     the mismatch, find the void holding the key (replaying the void
//     returns its saved answer) and return processor.ErrKeyVoided.
//   - the real request executed first: the void gets idempotency_error,
//     which proves the key holds a request that executed. Replaying the
//     real request (same key, same parameters) then returns that request's
//     saved answer and cannot execute anything new: the charge or refund
//     if it was made, or its refusal (a saved 402) if not.
//   - both at once: one of them gets 409 idempotency_key_in_use ("the
//     request conflicts with another request that's executing
//     concurrently ... You can retry these requests"): a void retried
//     later sees which one won.
//
// Two limits, both in docs/stripe.md. A validation error is not saved, so
// the void must be valid: it uses the charge's own amount and currency.
// And a key is pruned after 24 hours at the earliest: a void that executes
// fresh cannot tell "never charged" from "charged more than 24 hours ago",
// so it then searches for the charge by metadata - which, past 24 hours,
// Stripe's search has long indexed ("data is searchable in less than a
// minute ... Occasionally ... up to an hour behind during outages").

// voidAmount and voidCurrency make the void of a refund key whose charge
// is unknown (nothing to refund was found, so its request never reached
// Stripe): any valid PaymentIntent will do.
const (
	voidAmount   = 100
	voidCurrency = "usd"
)

// voidParams are the parameters of the void of key: a PaymentIntent that
// can never pay, marked metadata[idempay_void].
func voidParams(key string, amount int64, currency, acct string) *stripego.PaymentIntentCreateParams {
	if amount <= 0 || currency == "" {
		amount, currency = voidAmount, voidCurrency
	}
	params := &stripego.PaymentIntentCreateParams{
		Amount:             new(amount),
		Currency:           stripego.String(strings.ToLower(currency)),
		PaymentMethodTypes: []*string{stripego.String("card")},
		Description:        stripego.String("idempay: void of idempotency key " + key + " (never confirmed; holds the key so that no payment is made with it)"),
		Metadata:           map[string]string{MetaKey: key, MetaVoid: "true"},
	}
	params.SetIdempotencyKey(key)
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	return params
}

// void sends the void of key and cancels the PaymentIntent it made (or
// that an earlier void made: a replay returns the same one). nil: the key
// holds the void. A failure with mismatch: the key holds another request.
func (p *Provider) void(ctx context.Context, key string, amount int64, currency, acct string) *failure {
	pi, f := call(ctx, p, func(ctx context.Context) (*stripego.PaymentIntent, error) {
		return p.sc.V1PaymentIntents.Create(ctx, voidParams(key, amount, currency, acct))
	})
	if f != nil {
		return f
	}
	if pi.Status != stripego.PaymentIntentStatusCanceled {
		// Tidiness, not safety: unconfirmed and without a payment method it
		// cannot pay, and nobody holds its client secret.
		if err := p.cancel(ctx, pi.ID, key+"/void-cancel", acct); err != nil {
			p.log.WarnContext(ctx, "stripe: could not cancel the PaymentIntent of a void; it cannot pay, but shows as incomplete",
				"key", key, "payment_intent", pi.ID, "error", err)
		}
	}
	return nil
}

// cancel cancels a PaymentIntent under its own idempotency key.
func (p *Provider) cancel(ctx context.Context, id, idemKey, acct string) error {
	params := &stripego.PaymentIntentCancelParams{CancellationReason: stripego.String("abandoned")}
	params.SetIdempotencyKey(idemKey)
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	_, f := call(ctx, p, func(ctx context.Context) (*stripego.PaymentIntent, error) {
		return p.sc.V1PaymentIntents.Cancel(ctx, id, params)
	})
	if f != nil {
		return f.err
	}
	return nil
}

// heldBy is the error of a charge or refund of key that Stripe answered
// with idempotency_error (held, its failure): the key holds another
// request, and this call did nothing. Replaying the void tells whether it
// is idempay's void: processor.ErrKeyVoided; otherwise ErrKeyHeld, as
// ambiguous (what the key's first request did is unknown to this call).
func (p *Provider) heldBy(ctx context.Context, key string, amount int64, currency, acct string, held *failure) error {
	f := p.void(ctx, key, amount, currency, acct)
	switch {
	case f == nil:
		return fmt.Errorf("stripe: %s: %w", key, processor.ErrKeyVoided)
	case f.v == mismatch:
		return processor.AmbiguousError(fmt.Errorf("%w (key %s; this call did nothing): %w", ErrKeyHeld, key, held.err))
	default:
		return processor.TransientError(fmt.Errorf(
			"stripe: %s is held by another request (this call did nothing: %w); is it the void: %w", key, held.err, f.err))
	}
}

// VoidCharge implements charge.Voider: the charge made with key, or the key
// voided so that none can be. See the comment at the top of this file.
func (p *Provider) VoidCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	acct, err := p.account(ctx)
	if err != nil {
		return messages.ChargeData{}, false, err
	}
	f := p.void(ctx, key, req.Amount, req.Currency, acct)
	if f == nil {
		// The key holds the void: nothing can charge with it now. A charge
		// made with it more than 24 hours ago is found by search.
		c, found, err := p.searchCharge(ctx, key, req, acct)
		return c, found, errResolve("void charge", key, err)
	}
	if f.v != mismatch {
		return messages.ChargeData{}, false, f.engine("void charge " + key)
	}
	// The key holds a request that executed: replaying the charge returns
	// its saved answer, and cannot charge.
	pi, rf := p.createCharge(ctx, key, req, acct)
	if rf == nil {
		c, err := p.settle(ctx, key, req, acct, pi)
		if _, declined := errors.AsType[*charge.DeclinedError](err); declined {
			return messages.ChargeData{}, false, nil // its saved answer is a refusal
		}
		return c, err == nil, errResolve("void charge", key, err)
	}
	switch {
	case rf.v == refused && rf.se.Type == stripego.ErrorTypeCard:
		// A saved 402: the key's request was declined, and every retry of
		// it gets the decline again.
		return messages.ChargeData{}, false, nil
	case rf.v == mismatch:
		return messages.ChargeData{}, false, processor.AmbiguousError(fmt.Errorf("void charge: %w (key %s)", ErrKeyHeld, key))
	case rf.v == ambiguous && rf.se != nil:
		// A saved 5xx, replayed: the PaymentIntent may exist; search.
		c, found, err := p.searchCharge(ctx, key, req, acct)
		if err == nil && found {
			return c, true, nil
		}
		return messages.ChargeData{}, false, rf.engine("void charge " + key + ": replay")
	default:
		return messages.ChargeData{}, false, rf.engine("void charge " + key + ": replay")
	}
}

// VoidRefund implements refund.Voider like VoidCharge: the void is a
// PaymentIntent under the refund's key (another endpoint than
// /v1/refunds, which Stripe's idempotency check compares too).
func (p *Provider) VoidRefund(ctx context.Context, key string, req refund.Request) (messages.RefundData, bool, error) {
	acct, err := p.account(ctx)
	if err != nil {
		return messages.RefundData{}, false, err
	}
	f := p.void(ctx, key, req.ChargeAmount, req.Currency, acct)
	if f == nil {
		if req.ChargeID == "" {
			return messages.RefundData{}, false, nil
		}
		r, found, err := p.listRefund(ctx, key, req, acct)
		return r, found, errResolve("void refund", key, err)
	}
	if f.v != mismatch {
		return messages.RefundData{}, false, f.engine("void refund " + key)
	}
	if req.ChargeID == "" {
		return messages.RefundData{}, false, processor.AmbiguousError(fmt.Errorf(
			"void refund: %w (key %s), and the refund's charge is unknown", ErrKeyHeld, key))
	}
	r, rf := p.createRefund(ctx, key, req, acct)
	switch {
	case rf == nil:
		data, err := p.refunded(key, req, r)
		return data, err == nil, errResolve("void refund", key, err)
	case rf.v == refused && exceeds(rf):
		return messages.RefundData{}, false, nil // its saved answer is the refusal
	case rf.v == mismatch:
		return messages.RefundData{}, false, processor.AmbiguousError(fmt.Errorf("void refund: %w (key %s)", ErrKeyHeld, key))
	default:
		return messages.RefundData{}, false, rf.engine("void refund " + key + ": replay")
	}
}
