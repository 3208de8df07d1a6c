package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/sim"
	"github.com/idempay/idempay/pkg/stripe"
)

// stripeMockKey is the key the demo gives a stripe-mock, which takes any
// well-formed test key: the example key of Stripe's docs.
const stripeMockKey = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

// demoProvider returns the payment provider of --provider and a function
// that stops what it started. With stripe it charges STRIPE_API_BASE with
// STRIPE_API_KEY when set (a stripe-mock, or a test-mode account), else a
// stripe-mock it starts (go tool stripe-mock, built once from the module
// cache); never a live account.
func demoProvider(c *flags, rdb redis.UniversalClient, keyPrefix string, say func(string, ...any)) (ops.Provider, func(), error) {
	if c.Provider != "stripe" {
		p, err := sim.New(rdb, &sim.Config{KeyPrefix: keyPrefix, FailureRate: c.FailureRate})
		return p, func() {}, err
	}
	key, base := os.Getenv("STRIPE_API_KEY"), os.Getenv("STRIPE_API_BASE")
	if strings.HasPrefix(key, "sk_live_") || strings.HasPrefix(key, "rk_live_") {
		return nil, nil, errors.New("STRIPE_API_KEY is a live key: the demo charges test accounts and stripe-mock only")
	}
	stop := func() {}
	if base == "" {
		mock, err := testenv.StartStripeMock()
		if err != nil {
			return nil, nil, fmt.Errorf("start stripe-mock (or set STRIPE_API_BASE to a running one): %w", err)
		}
		stop, base = mock.Shutdown, mock.URL
		say("started stripe-mock at %s (Stripe's API from its OpenAPI description; it keeps no state)", base)
	} else {
		say("charging Stripe's API at %s (STRIPE_API_BASE)", base)
	}
	if key == "" {
		key = stripeMockKey
	}
	p, err := stripe.New(&stripe.Config{APIKey: key, APIBase: base})
	if err != nil {
		stop()
		return nil, nil, err
	}
	return p, stop, nil
}
