package stripe

import (
	"context"
	"fmt"
	"strings"

	stripego "github.com/stripe/stripe-go/v82"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Looking an effect up by key without making one.
//
// A replay of the request (same key, same parameters) returns its saved
// answer only when the key holds one: when it holds none - the request
// never reached Stripe, or its key was pruned after 24 hours - the replay
// *is* the charge. So a look-up never replays on its own; the void does,
// behind the idempotency_error that proves the key holds a request (void.go).
//
// Charges are looked up with Stripe's search API, by metadata. Stripe
// documents it as eventually consistent: "Don't use search in read-after-
// write flows where strict consistency is necessary. Under normal operating
// conditions, data is searchable in less than a minute. Occasionally,
// propagation of new or updated data can be up to an hour behind during
// outages." (Search PaymentIntents). What that means for the answer:
//
//   - a succeeded PaymentIntent found with the key is the charge: money
//     moved, and search does not make charges up;
//   - a void, or a PaymentIntent that was refused (it holds the key's
//     saved refusal), proves no charge can be made with the key;
//   - nothing found is not proof: the charge may be minutes old, or in
//     flight. LookupCharge then returns ErrNotFound, and only the void
//     answers exactly.
//
// Refunds cannot be searched; the list of a PaymentIntent's refunds is
// read instead (a list, not a search: current), filtered by metadata. It
// finds a refund made, but nothing found still says nothing of a call in
// flight: ErrNotFound too.

// searchHits is what a search by key found.
type searchHits struct {
	charge  *stripego.PaymentIntent // a succeeded PaymentIntent made with the key
	none    bool                    // the key's void, or a refusal it holds: no charge can be made
	pending *stripego.PaymentIntent // a PaymentIntent with the key that may still pay
}

// searchQuery is the search query for metadata[idempay_key] = key.
func searchQuery(key string) string {
	return fmt.Sprintf("metadata['%s']:'%s'", MetaKey, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(key))
}

// search finds the PaymentIntents made with key.
func (p *Provider) search(ctx context.Context, key, acct string) (searchHits, *failure) {
	params := &stripego.PaymentIntentSearchParams{}
	params.Query = searchQuery(key)
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	return call(ctx, p, func(ctx context.Context) (searchHits, error) {
		var hits searchHits
		for pi, err := range p.sc.V1PaymentIntents.Search(ctx, params) {
			if err != nil {
				return hits, err
			}
			hits.add(key, pi)
		}
		return hits, nil
	})
}

// add sorts one search hit. The query matched the key already; the
// metadata is checked again so that nothing but the key's own objects
// counts.
func (h *searchHits) add(key string, pi *stripego.PaymentIntent) {
	if pi == nil || pi.Metadata[MetaKey] != key {
		return
	}
	switch {
	case pi.Metadata[MetaVoid] != "":
		h.none = true
	case pi.Status == stripego.PaymentIntentStatusSucceeded:
		h.charge = pi
	case pi.Status == stripego.PaymentIntentStatusCanceled,
		pi.Status == stripego.PaymentIntentStatusRequiresPaymentMethod && pi.LastPaymentError != nil:
		h.none = true
	default:
		h.pending = pi
	}
}

// searchCharge is the charge search finds for key: found, or not, or an
// error when a PaymentIntent with the key may still pay.
func (p *Provider) searchCharge(ctx context.Context, key string, req messages.ChargeRequest, acct string) (messages.ChargeData, bool, error) {
	hits, f := p.search(ctx, key, acct)
	switch {
	case f != nil:
		return messages.ChargeData{}, false, f.engine("search " + key)
	case hits.charge != nil:
		return chargeData(hits.charge, req), true, nil
	case hits.pending != nil:
		return messages.ChargeData{}, false, processor.AmbiguousError(fmt.Errorf(
			"stripe: PaymentIntent %s of key %s is %s", hits.pending.ID, key, hits.pending.Status))
	}
	return messages.ChargeData{}, false, nil
}

func chargeData(pi *stripego.PaymentIntent, req messages.ChargeRequest) messages.ChargeData {
	return messages.ChargeData{ChargeID: pi.ID, AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency}
}

// LookupCharge implements charge.Lookup with Stripe's search, without
// making a charge: the charge if search finds it; found false with no
// error only when search proves none can be made (the key's void, or its
// refusal); otherwise ErrNotFound, which is not proof (see above).
func (p *Provider) LookupCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	acct, err := p.account(ctx)
	if err != nil {
		return messages.ChargeData{}, false, err
	}
	hits, f := p.search(ctx, key, acct)
	switch {
	case f != nil:
		return messages.ChargeData{}, false, f.engine("look up charge " + key)
	case hits.charge != nil:
		return chargeData(hits.charge, req), true, nil
	case hits.pending != nil:
		return messages.ChargeData{}, false, fmt.Errorf("stripe: look up charge %s: PaymentIntent %s is %s",
			key, hits.pending.ID, hits.pending.Status)
	case hits.none:
		return messages.ChargeData{}, false, nil
	}
	return messages.ChargeData{}, false, fmt.Errorf("look up charge %s: %w", key, ErrNotFound)
}

// listRefund finds the refund made with key among the refunds of the
// charge: found or not, as the list stands now.
func (p *Provider) listRefund(ctx context.Context, key string, req refund.Request, acct string) (messages.RefundData, bool, error) {
	params := &stripego.RefundListParams{PaymentIntent: stripego.String(req.ChargeID)}
	params.AddExpand("data.charge")
	if acct != "" {
		params.SetStripeAccount(acct)
	}
	r, f := call(ctx, p, func(ctx context.Context) (*stripego.Refund, error) {
		for r, err := range p.sc.V1Refunds.List(ctx, params) {
			if err != nil {
				return nil, err
			}
			if r != nil && r.Metadata[MetaKey] == key {
				return r, nil
			}
		}
		return nil, nil //nolint:nilnil // not found
	})
	if f != nil {
		return messages.RefundData{}, false, f.engine("list the refunds of " + req.ChargeID)
	}
	if r == nil {
		return messages.RefundData{}, false, nil
	}
	data, err := p.refunded(key, req, r)
	return data, err == nil, err
}

// LookupRefund implements refund.Lookup with the list of the charge's
// refunds: the refund if it is there, ErrNotFound otherwise (a refund
// still in flight may land later; VoidRefund answers exactly).
func (p *Provider) LookupRefund(ctx context.Context, key string, req refund.Request) (messages.RefundData, bool, error) {
	acct, err := p.account(ctx)
	if err != nil {
		return messages.RefundData{}, false, err
	}
	if req.ChargeID == "" {
		return messages.RefundData{}, false, fmt.Errorf("look up refund %s: the charge %s has no Stripe id: %w", key, req.ChargeKey, ErrNotFound)
	}
	r, found, err := p.listRefund(ctx, key, req, acct)
	if err != nil || found {
		return r, found, err
	}
	return messages.RefundData{}, false, fmt.Errorf("look up refund %s: %w", key, ErrNotFound)
}
