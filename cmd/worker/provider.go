package main

import (
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/sim"
	"github.com/idempay/idempay/pkg/stripe"
)

// stripeFlags configure --provider stripe. The key is read like any flag
// and never logged; prefer the variable, which no process list shows.
type stripeFlags struct {
	StripeAPIKey        string            `name:"stripe-api-key" env:"STRIPE_API_KEY" help:"Stripe secret key for --provider stripe: sk_test_... for a test-mode account (or any sk_test_ key for stripe-mock). Never logged; prefer the variable STRIPE_API_KEY to the flag, which process lists show."`
	StripeAPIBase       string            `name:"stripe-api-base" env:"STRIPE_API_BASE" default:"https://api.stripe.com" help:"Stripe API base URL for --provider stripe; a test server's, e.g. a stripe-mock at http://127.0.0.1:12111 (go tool stripe-mock -http-port 12111)."`
	StripePaymentMethod string            `name:"stripe-payment-method" env:"STRIPE_PAYMENT_METHOD" default:"" help:"For --provider stripe: the PaymentMethod every charge is confirmed with. Empty: pm_card_visa, Stripe's test card, with a test key; required with a live key. See docs/stripe.md."`
	StripeAccounts      map[string]string `name:"stripe-accounts" env:"STRIPE_ACCOUNTS" placeholder:"TENANT=ACCT" help:"For --provider stripe on Connect: the connected account of each gateway tenant, e.g. acme=acct_1Abc,globex=acct_2Def (the Stripe-Account of every call for a command of that tenant, its voids and look-ups included). A tenant not listed is charged on the platform account; with a map set, a command without a tenant is refused."`
}

// check is the flags' part of Validate.
func (s *stripeFlags) check(provider string) error {
	if provider == "stripe" && s.StripeAPIKey == "" {
		return errors.New("--provider stripe needs --stripe-api-key (STRIPE_API_KEY)")
	}
	return nil
}

// newProvider returns the payment provider the flags name.
func newProvider(f *flags, rdb redis.UniversalClient) (ops.Provider, error) {
	if f.Provider == "stripe" {
		return stripe.New(&stripe.Config{
			APIKey: f.StripeAPIKey, APIBase: f.StripeAPIBase, PaymentMethod: f.StripePaymentMethod,
			Accounts: f.StripeAccounts,
		})
	}
	return sim.New(rdb, &sim.Config{
		KeyPrefix: f.KeyPrefix, Latency: f.SimLatency, FailureRate: f.SimFailureRate, AmbiguousRate: f.SimAmbiguousRate,
	})
}
