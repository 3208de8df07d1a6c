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
	StripeAPIKey        string `name:"stripe-api-key" env:"STRIPE_API_KEY" help:"Stripe secret key for --provider stripe: sk_test_... for a test-mode account (or any sk_test_ key for stripe-mock). Never logged; prefer the variable STRIPE_API_KEY to the flag, which process lists show."`
	StripeAPIBase       string `name:"stripe-api-base" env:"STRIPE_API_BASE" default:"https://api.stripe.com" help:"Stripe API base URL for --provider stripe; a test server's, e.g. a stripe-mock at http://127.0.0.1:12111 (go tool stripe-mock -http-port 12111)."`
	StripePaymentMethod string `name:"stripe-payment-method" env:"STRIPE_PAYMENT_METHOD" default:"" help:"For --provider stripe: the PaymentMethod every charge is confirmed with. Empty: pm_card_visa, Stripe's test card, with a test key; required with a live key. See docs/stripe.md."`
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
		})
	}
	return sim.New(rdb, &sim.Config{
		KeyPrefix: f.KeyPrefix, Latency: f.SimLatency, FailureRate: f.SimFailureRate, AmbiguousRate: f.SimAmbiguousRate,
	})
}
