// Package stripe owns idempay's Stripe provider: payment.charge and
// payment.refund on Stripe's API through stripe-go, with the operation's
// idempotency key as Stripe's Idempotency-Key. It implements the provider
// interfaces of packages charge and refund - Provider, Lookup and Voider -
// and owns what they mean at Stripe:
//
//   - which Stripe errors leave a key certainly untouched (retry), possibly
//     charged (ambiguous: never reported failed), or definitively refused
//     (a failed outcome): classify, in errors.go, and the table in
//     docs/stripe.md;
//   - how a charge or refund is found by key without making one (lookup.go):
//     Stripe's search API by metadata for charges, the list of a charge's
//     refunds for refunds; a search that finds nothing is not proof;
//   - how a key is made unusable (void.go): a request that cannot move money
//     spends the key, so that a call frozen in flight fails on Stripe's
//     idempotency check; when the key was spent by the real request, the
//     void's mismatch says so and the real request's saved response is read
//     by replaying it.
//
// A charge is one PaymentIntent, created and confirmed in one request
// (confirm=true, off_session) with the key as Idempotency-Key and in
// metadata[idempay_key]; its id (pi_...) is the charge_id. A refund is one
// Refund of that PaymentIntent under the refund's own key. A tenant on
// Stripe Connect is charged on its connected account (Config.Accounts,
// the Stripe-Account header); see WithTenant.
//
// stripe-go's own retries are off (MaxNetworkRetries 0): each retry is the
// engine's, with the same key and the same parameters, and each failed call
// is classified on its own - stripe-go would report only its last attempt,
// and a connection refused after a lost response would then read as
// "certainly not charged".
package stripe
