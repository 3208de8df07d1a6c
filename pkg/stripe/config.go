package stripe

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults of Config.
const (
	// APIBaseDefault is Stripe's API.
	APIBaseDefault = "https://api.stripe.com"
	// PaymentMethodDefault is Stripe's test-mode Visa card: charges with it
	// succeed in test mode and do not exist in live mode.
	PaymentMethodDefault = "pm_card_visa"
	// TimeoutDefault bounds one HTTP request to Stripe.
	TimeoutDefault = 30 * time.Second
)

// Config configures the Stripe provider.
type Config struct {
	// APIKey is the secret key the provider calls Stripe with: sk_test_...
	// in test mode, sk_live_... (or a restricted rk_ key) in live mode. It
	// is sent as the Authorization header and never logged. Required.
	APIKey string

	// APIBase is where Stripe's API is served; a test server's base
	// (stripe-mock, http://127.0.0.1:12111) in tests and demos. Defaults to
	// https://api.stripe.com.
	APIBase string

	// PaymentMethod is the PaymentMethod every charge is confirmed with
	// (payment.charge carries an account id, not a card). Keep it stable
	// while keys are in flight: Stripe compares a retry's parameters with
	// the first request's, and a changed one makes the retry a mismatch
	// (see docs/stripe.md). Required with a live key; defaults to
	// pm_card_visa, Stripe's test card, with a test key.
	PaymentMethod string

	// Accounts maps an idempay tenant (the gateway's Idempay-Tenant) to the
	// Stripe Connect account its charges and refunds are made on: the
	// Stripe-Account header of every call for that tenant, its voids and
	// look-ups included (Stripe scopes idempotency keys by account). A
	// tenant not in the map is charged on the platform account. With a
	// non-empty map, a call whose context names no tenant (WithTenant) is
	// refused: the provider cannot tell which account holds the key.
	// Defaults to none: every call on the platform account.
	Accounts map[string]string

	// Timeout bounds one HTTP request to Stripe. A request that times out
	// after it was written may have taken effect: ambiguous. Defaults to
	// 30s.
	Timeout time.Duration

	// HTTPClient makes the requests. Defaults to a client with Timeout.
	HTTPClient *http.Client

	// Logger receives what the provider does besides answering: a void's
	// clean-up that failed. Defaults to a Warn-level text logger on stderr.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with the defaults filled in.
func (c *Config) WithDefaults() *Config {
	var out Config
	if c != nil {
		out = *c
	}
	out.APIBase = strings.TrimRight(cmp.Or(out.APIBase, APIBaseDefault), "/")
	out.Timeout = cmp.Or(out.Timeout, TimeoutDefault)
	if out.PaymentMethod == "" && !live(out.APIKey) {
		out.PaymentMethod = PaymentMethodDefault
	}
	if out.HTTPClient == nil {
		out.HTTPClient = &http.Client{Timeout: out.Timeout}
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return &out
}

func (c *Config) validate() error {
	switch {
	case c.APIKey == "":
		return errors.New("stripe: Config.APIKey is required (a secret key, sk_test_... in test mode)")
	case strings.ContainsAny(c.APIKey, " \t\r\n"):
		return errors.New("stripe: Config.APIKey must not contain white space")
	case c.PaymentMethod == "":
		return errors.New("stripe: Config.PaymentMethod is required with a live key (pm_card_visa exists in test mode only)")
	case c.Timeout < 0:
		return fmt.Errorf("stripe: Config.Timeout must not be negative, got %v", c.Timeout)
	}
	u, err := url.Parse(c.APIBase)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("stripe: Config.APIBase must be an http(s) URL, got %q", c.APIBase)
	}
	for tenant, acct := range c.Accounts {
		if tenant == "" || !strings.HasPrefix(acct, "acct_") {
			return fmt.Errorf("stripe: Config.Accounts: tenant %q must map to a connected account id (acct_...), got %q", tenant, acct)
		}
	}
	return nil
}

// live reports whether key is a live-mode key.
func live(key string) bool {
	return strings.HasPrefix(key, "sk_live_") || strings.HasPrefix(key, "rk_live_")
}
