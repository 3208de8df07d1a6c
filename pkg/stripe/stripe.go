package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	stripego "github.com/stripe/stripe-go/v82"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Metadata keys the provider writes on Stripe's objects.
const (
	// MetaKey is the idempotency key of the charge, refund or void.
	MetaKey = "idempay_key"
	// MetaAccount is a charge's account_id.
	MetaAccount = "idempay_account"
	// MetaChargeKey is a refund's charge_key.
	MetaChargeKey = "idempay_charge_key"
	// MetaReason is a refund's reason, as the command gave it.
	MetaReason = "idempay_reason"
	// MetaVoid marks the PaymentIntent that voids a key ("true").
	MetaVoid = "idempay_void"
)

// Provider is the Stripe provider. It implements charge.Provider,
// charge.Lookup, charge.Voider, refund.Provider, refund.Lookup and
// refund.Voider, and is safe for concurrent use.
type Provider struct {
	sc  *stripego.Client
	cfg *Config
	log *slog.Logger
}

var (
	_ charge.Provider = (*Provider)(nil)
	_ charge.Lookup   = (*Provider)(nil)
	_ charge.Voider   = (*Provider)(nil)
	_ refund.Provider = (*Provider)(nil)
	_ refund.Lookup   = (*Provider)(nil)
	_ refund.Voider   = (*Provider)(nil)
)

// New returns a Stripe provider. It does no I/O.
func New(cfg *Config) (*Provider, error) {
	c := cfg.WithDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	backends := stripego.NewBackendsWithConfig(&stripego.BackendConfig{
		HTTPClient: c.HTTPClient,
		// stripe-go logs errors to stderr by default; the engine logs what
		// the provider returns.
		LeveledLogger: &stripego.LeveledLogger{Level: stripego.LevelNull},
		// Off: see the package doc. Each retry is the engine's, classified.
		MaxNetworkRetries: stripego.Int64(0),
		URL:               stripego.String(c.APIBase),
	})
	return &Provider{sc: stripego.NewClient(c.APIKey, stripego.WithBackends(backends)), cfg: c, log: c.Logger}, nil
}

// Charge implements charge.Provider: one request, POST /v1/payment_intents
// with confirm=true, the key as Idempotency-Key. A retry with the same key
// sends the same parameters, so Stripe answers it with the first request's
// saved response and charges nothing more.
func (p *Provider) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	acct, err := p.account(ctx)
	if err != nil {
		return messages.ChargeData{}, processor.TransientError(err)
	}
	pi, f := p.createCharge(ctx, key, req, acct)
	if f == nil {
		return p.settle(ctx, key, req, acct, pi)
	}
	switch f.v {
	case refused:
		return messages.ChargeData{}, p.refusal(f)
	case mismatch:
		return messages.ChargeData{}, p.heldBy(ctx, key, req.Amount, req.Currency, acct, f)
	default:
		return messages.ChargeData{}, f.engine("charge " + key)
	}
}

// chargeParams are the parameters of a key's charge: the same on every try,
// which Stripe's idempotency check requires ("The idempotency layer
// compares incoming parameters to those of the original request and
// errors if they're not the same").
func (p *Provider) chargeParams(key string, req messages.ChargeRequest, acct string) *stripego.PaymentIntentCreateParams {
	params := &stripego.PaymentIntentCreateParams{
		Amount:   new(req.Amount),
		Currency: stripego.String(strings.ToLower(req.Currency)),
		Confirm:  new(true),
		// No customer is present: a card that needs authentication is a
		// 402 authentication_required, not a PaymentIntent waiting for an
		// action nobody will take.
		OffSession:    new(true),
		PaymentMethod: stripego.String(p.cfg.PaymentMethod),
		AutomaticPaymentMethods: &stripego.PaymentIntentCreateAutomaticPaymentMethodsParams{
			Enabled: new(true), AllowRedirects: new("never"),
		},
		Metadata: map[string]string{MetaKey: key, MetaAccount: req.AccountID},
	}
	if req.Description != "" {
		params.Description = stripego.String(req.Description)
	}
	params.SetIdempotencyKey(key)
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	return params
}

func (p *Provider) createCharge(ctx context.Context, key string, req messages.ChargeRequest, acct string) (*stripego.PaymentIntent, *failure) {
	return call(ctx, p, func(ctx context.Context) (*stripego.PaymentIntent, error) {
		return p.sc.V1PaymentIntents.Create(ctx, p.chargeParams(key, req, acct))
	})
}

// settle turns the PaymentIntent a charge request returned into the
// charge's answer. A confirmed card payment is succeeded, or was refused
// with a 402; the other states are read again (a replayed response is the
// first one's, and the PaymentIntent may have moved on since).
func (p *Provider) settle(ctx context.Context, key string, req messages.ChargeRequest, acct string, pi *stripego.PaymentIntent) (messages.ChargeData, error) {
	if pi.Status != stripego.PaymentIntentStatusSucceeded && pi.ID != "" {
		params := &stripego.PaymentIntentRetrieveParams{}
		if acct != "" {
			params.SetStripeAccount(acct)
		}
		cur, f := call(ctx, p, func(ctx context.Context) (*stripego.PaymentIntent, error) {
			return p.sc.V1PaymentIntents.Retrieve(ctx, pi.ID, params)
		})
		if f != nil {
			// The charge request was answered; only its state is unknown.
			return messages.ChargeData{}, processor.AmbiguousError(fmt.Errorf(
				"stripe: charge %s: PaymentIntent %s is %s; reading it again: %w", key, pi.ID, pi.Status, f.err))
		}
		pi = cur
	}
	data := messages.ChargeData{ChargeID: pi.ID, AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency}
	switch pi.Status {
	case stripego.PaymentIntentStatusSucceeded:
		return data, nil
	case stripego.PaymentIntentStatusCanceled:
		return messages.ChargeData{}, charge.Declined("payment_canceled", "the PaymentIntent "+pi.ID+" was canceled without a payment")
	case stripego.PaymentIntentStatusRequiresPaymentMethod, stripego.PaymentIntentStatusRequiresAction,
		stripego.PaymentIntentStatusRequiresConfirmation:
		// Nothing was paid, and only a customer could go on (nobody holds
		// the client secret): cancel it so that nobody can, then refuse.
		if err := p.cancel(ctx, pi.ID, key+"/cancel", acct); err != nil {
			return messages.ChargeData{}, processor.TransientError(fmt.Errorf(
				"stripe: charge %s: PaymentIntent %s is %s, nothing paid; cancelling it: %w", key, pi.ID, pi.Status, err))
		}
		code, msg := "payment_incomplete", "the payment was not completed"
		if e := pi.LastPaymentError; e != nil && e.Code != "" {
			code, msg = string(e.Code), e.Msg
		}
		return messages.ChargeData{}, charge.Declined(code, fmt.Sprintf("%s (PaymentIntent %s was %s; canceled)", msg, pi.ID, pi.Status))
	default: // processing, requires_capture: money may move yet
		return messages.ChargeData{}, processor.AmbiguousError(fmt.Errorf(
			"stripe: charge %s: PaymentIntent %s is %s", key, pi.ID, pi.Status))
	}
}

// refusal is the charge's failed outcome for a refused request: the card
// declined (402 card_error, code card_declined, expired_card, ...) or the
// request invalid (400 invalid_request_error). Stripe saved that answer
// under the key, so every retry would get it again. The message is
// Stripe's, the API key redacted (a test server may echo it).
func (p *Provider) refusal(f *failure) error {
	code, msg := string(f.code()), strings.ReplaceAll(f.se.Msg, p.cfg.APIKey, "sk_***")
	if code == "" {
		code = string(f.se.Type)
	}
	if d := f.se.DeclineCode; d != "" {
		msg += " (decline_code " + string(d) + ")"
	}
	return charge.Declined(code, msg)
}

// Refund implements refund.Provider: one request, POST /v1/refunds of the
// charge's PaymentIntent with the refund's key as Idempotency-Key. Stripe
// itself never lets the refunds of a charge exceed it.
func (p *Provider) Refund(ctx context.Context, key string, req refund.Request) (messages.RefundData, error) {
	acct, err := p.account(ctx)
	if err != nil {
		return messages.RefundData{}, processor.TransientError(err)
	}
	if req.ChargeID == "" {
		return messages.RefundData{}, processor.TransientError(fmt.Errorf("stripe: refund %s: the charge %s has no Stripe id", key, req.ChargeKey))
	}
	r, f := p.createRefund(ctx, key, req, acct)
	if f == nil {
		return p.refunded(key, req, r)
	}
	switch {
	case f.v == mismatch:
		return messages.RefundData{}, p.heldBy(ctx, key, req.ChargeAmount, req.Currency, acct, f)
	case f.v == refused && exceeds(f):
		return messages.RefundData{}, p.exceeded(ctx, req, acct, f)
	case f.v == refused:
		// A definitive refusal: nothing was refunded; the refund fails
		// with Stripe's code, never retried.
		return messages.RefundData{}, refund.Refused(string(f.code()), fmt.Sprintf("stripe refused the refund: %v", f.err))
	default:
		return messages.RefundData{}, f.engine("refund " + key)
	}
}

// refundReasons are the reasons Stripe's Refund takes; any other reason is
// kept in the metadata only.
var refundReasons = map[string]bool{"duplicate": true, "fraudulent": true, "requested_by_customer": true}

func refundParams(key string, req refund.Request, acct string) *stripego.RefundCreateParams {
	params := &stripego.RefundCreateParams{
		PaymentIntent: stripego.String(req.ChargeID),
		Amount:        new(req.Amount),
		Metadata:      map[string]string{MetaKey: key, MetaChargeKey: req.ChargeKey},
	}
	if req.Reason != "" {
		params.Metadata[MetaReason] = req.Reason
		if refundReasons[req.Reason] {
			params.Reason = stripego.String(req.Reason)
		}
	}
	// The charge as it stands right after this refund: refunded_total.
	params.AddExpand("charge")
	params.SetIdempotencyKey(key)
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	return params
}

func (p *Provider) createRefund(ctx context.Context, key string, req refund.Request, acct string) (*stripego.Refund, *failure) {
	return call(ctx, p, func(ctx context.Context) (*stripego.Refund, error) {
		return p.sc.V1Refunds.Create(ctx, refundParams(key, req, acct))
	})
}

// refunded is the answer for a Refund Stripe returned.
func (p *Provider) refunded(key string, req refund.Request, r *stripego.Refund) (messages.RefundData, error) {
	if r.Status == stripego.RefundStatusFailed || r.Status == stripego.RefundStatusCanceled {
		return messages.RefundData{}, processor.TransientError(fmt.Errorf(
			"stripe: refund %s: Refund %s is %s: nothing refunded", key, r.ID, r.Status))
	}
	data := messages.RefundData{RefundID: r.ID, ChargeID: req.ChargeID, Amount: req.Amount, Currency: req.Currency}
	if r.Charge != nil {
		data.RefundedTotal = r.Charge.AmountRefunded
	}
	return data, nil
}

// exceeds reports whether a refused refund was refused for its amount:
// "This method will return an error when called on an already-refunded
// charge, or when trying to refund more money than is left on a charge"
// (Stripe, Create a refund).
func exceeds(f *failure) bool {
	if c := f.code(); c == stripego.ErrorCodeChargeAlreadyRefunded || c == stripego.ErrorCodeAmountTooLarge {
		return true
	}
	return f.se != nil && f.se.Param == "amount" && strings.Contains(f.se.Msg, "greater than")
}

// exceeded returns the refund's *refund.ExceedsError with what was
// refunded of the charge, read from Stripe.
func (p *Provider) exceeded(ctx context.Context, req refund.Request, acct string, f *failure) error {
	params := &stripego.PaymentIntentRetrieveParams{}
	params.AddExpand("latest_charge")
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	pi, rf := call(ctx, p, func(ctx context.Context) (*stripego.PaymentIntent, error) {
		return p.sc.V1PaymentIntents.Retrieve(ctx, req.ChargeID, params)
	})
	if rf != nil {
		return processor.TransientError(fmt.Errorf("stripe: refund of %s exceeds the charge (%w); reading what was refunded: %w",
			req.ChargeID, f.err, rf.err))
	}
	total := req.ChargeAmount // "already refunded" with nothing to read: all of it
	if pi.LatestCharge != nil {
		total = pi.LatestCharge.AmountRefunded
	}
	return &refund.ExceedsError{RefundedTotal: total}
}

// errResolve wraps what keeps a look-up or void from an answer.
func errResolve(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*processor.Error](err); ok {
		return err
	}
	return fmt.Errorf("stripe: %s %s: %w", op, key, err)
}
