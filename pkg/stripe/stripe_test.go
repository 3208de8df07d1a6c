package stripe_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	stripego "github.com/stripe/stripe-go/v82"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/stripe"
)

const (
	testAPIKey   = "sk_test_4eC39HqLyjWDarjtT1zdp7dc" //nolint:gosec // G101: the example test-mode key of Stripe's docs, for stripe-mock
	pathIntents  = "/v1/payment_intents"
	pathRefunds  = "/v1/refunds"
	pathSearch   = "/v1/payment_intents/search"
	testAccount  = "acct_1Nv0FGQ9RKHgCVdK"
	testTenant   = "tenant_7"
	testChargeID = "pi_3MtwBwLkdIwHu7ix28a3tqPa"
)

type testBundle struct {
	proxy    *faultProxy
	provider *stripe.Provider
}

func setup(tb testing.TB, cfg *stripe.Config) *testBundle {
	tb.Helper()
	proxy := newFaultProxy(tb, mock.URL)
	c := stripe.Config{}
	if cfg != nil {
		c = *cfg
	}
	c.APIKey, c.APIBase = testAPIKey, proxy.URL()
	c.Timeout = 10 * time.Second
	p, err := stripe.New(&c)
	require.NoError(tb, err)
	return &testBundle{proxy: proxy, provider: p}
}

func newKey() string { return uuid.NewString() }

var chargeReq = messages.ChargeRequest{AccountID: "acct_42", Amount: 1999, Currency: "EUR", Description: "order 1001"}

func refundReq(chargeKey string) refund.Request {
	return refund.Request{ChargeKey: chargeKey, ChargeID: testChargeID, Amount: 500, Currency: "EUR",
		ChargeAmount: 1999, Reason: "requested_by_customer"}
}

// requireClass requires err to be of the engine's class c.
func requireClass(tb testing.TB, err error, c processor.Class) {
	tb.Helper()
	require.Error(tb, err)
	got, _ := processor.ClassOf(err)
	require.Equal(tb, c, got, "class of %v", err)
	_, declined := errors.AsType[*charge.DeclinedError](err)
	require.False(tb, declined, "a retried error is never a refusal: %v", err)
}

// TestProvider_Requests makes every call the provider has, for a tenant on
// Connect, and checks that stripe-mock (which validates each request
// against Stripe's OpenAPI description) accepted every one, with the
// headers Stripe needs.
func TestProvider_Requests(t *testing.T) {
	t.Parallel()
	b := setup(t, &stripe.Config{Accounts: map[string]string{testTenant: testAccount}})
	ctx := stripe.WithTenant(t.Context(), testTenant)
	key, refundKey := newKey(), newKey()

	c, err := b.provider.Charge(ctx, key, chargeReq)
	require.NoError(t, err)
	require.NotEmpty(t, c.ChargeID)
	require.Equal(t, messages.ChargeData{ChargeID: c.ChargeID, AccountID: "acct_42", Amount: 1999, Currency: "EUR"}, c)

	found, ok, err := b.provider.LookupCharge(ctx, testenv.StripeMockChargeKey, chargeReq)
	require.NoError(t, err)
	require.True(t, ok)
	require.NotEmpty(t, found.ChargeID)
	_, _, err = b.provider.LookupCharge(ctx, key, chargeReq)
	require.ErrorIs(t, err, stripe.ErrNotFound)

	_, ok, err = b.provider.VoidCharge(ctx, newKey(), chargeReq)
	require.NoError(t, err)
	require.False(t, ok)

	r, err := b.provider.Refund(ctx, refundKey, refundReq(key))
	require.NoError(t, err)
	require.NotEmpty(t, r.RefundID)
	require.Equal(t, messages.RefundData{RefundID: r.RefundID, ChargeID: testChargeID, Amount: 500, Currency: "EUR",
		RefundedTotal: testenv.StripeMockRefunded}, r)
	_, ok, err = b.provider.LookupRefund(ctx, testenv.StripeMockRefundKey, refundReq(key))
	require.NoError(t, err)
	require.True(t, ok)
	_, _, err = b.provider.LookupRefund(ctx, refundKey, refundReq(key))
	require.ErrorIs(t, err, stripe.ErrNotFound)
	_, ok, err = b.provider.VoidRefund(ctx, newKey(), refundReq(key))
	require.NoError(t, err)
	require.False(t, ok)

	seen := b.proxy.requests("", "")
	kinds := map[string]int{}
	for _, s := range seen {
		path := s.Path
		if strings.HasPrefix(path, pathIntents+"/pi_") && strings.HasSuffix(path, "/cancel") {
			path = pathIntents + "/{id}/cancel" // stripe-mock makes a new id each time
		}
		kinds[s.Method+" "+path]++
		require.Equal(t, http.StatusOK, s.Upstream, "stripe-mock refused %s %s %v", s.Method, s.Path, s.Form)
		require.Equal(t, "Bearer "+testAPIKey, s.Header.Get("Authorization"), s.Path)
		require.Equal(t, stripego.APIVersion, s.Header.Get("Stripe-Version"), s.Path)
		require.Equal(t, testAccount, s.Header.Get("Stripe-Account"), s.Path)
		if s.Method == http.MethodPost {
			require.NotEmpty(t, s.Key(), "every POST carries an Idempotency-Key: %s", s.Path)
		}
	}
	require.Equal(t, map[string]int{
		"POST /v1/payment_intents":             3, // the charge, the two voids
		"POST /v1/payment_intents/{id}/cancel": 2, // the voids' PaymentIntents
		"GET /v1/payment_intents/search":       3, // two look-ups, the void's
		"POST /v1/refunds":                     1,
		"GET /v1/refunds":                      3, // two look-ups, the void's
	}, kinds)

	// The charge: the key is the Idempotency-Key and in the metadata.
	ch := b.proxy.requests(http.MethodPost, pathIntents)[0]
	require.Equal(t, key, ch.Key())
	require.Equal(t, key, ch.Form.Get("metadata[idempay_key]"))
	require.Equal(t, "acct_42", ch.Form.Get("metadata[idempay_account]"))
	require.Equal(t, "true", ch.Form.Get("confirm"))
	require.Equal(t, "1999", ch.Form.Get("amount"))
	require.Equal(t, "eur", ch.Form.Get("currency"))
	require.Equal(t, stripe.PaymentMethodDefault, ch.Form.Get("payment_method"))
	// The refund: its own key.
	re := b.proxy.requests(http.MethodPost, pathRefunds)[0]
	require.Equal(t, refundKey, re.Key())
	require.Equal(t, testChargeID, re.Form.Get("payment_intent"))
	require.Equal(t, key, re.Form.Get("metadata[idempay_charge_key]"))
}

// TestProvider_ChargeErrors is the error table of docs/stripe.md: every
// Stripe error a charge can get, and what it means for the key.
func TestProvider_ChargeErrors(t *testing.T) {
	t.Parallel()
	type want struct {
		class      processor.Class // when not refused
		declined   string          // the failed outcome's code, when refused
		voided     bool            // processor.ErrKeyVoided
		held       bool            // stripe.ErrKeyHeld
		retryAfter time.Duration
		requests   int // POST /v1/payment_intents the proxy saw
	}
	cases := map[string]struct {
		faults []fault
		want   want
	}{
		"CardDeclined": {faults: []fault{{kind: answerAfter, status: 402, body: bodyDeclined}},
			want: want{declined: "card_declined", requests: 1}},
		"InvalidRequest": {faults: []fault{{kind: answerAfter, status: 400, body: bodyInvalid}},
			want: want{declined: "resource_missing", requests: 1}},
		"RateLimited": {faults: []fault{{kind: answerInstead, status: 429, body: bodyRateLimit, header: map[string]string{"Retry-After": "2"}}},
			want: want{class: processor.RateLimited, retryAfter: 2 * time.Second, requests: 1}},
		"LockTimeout": {faults: []fault{{kind: answerInstead, status: 429, body: bodyLockTimeout, header: map[string]string{"Stripe-Should-Retry": "true"}}},
			want: want{class: processor.RateLimited, requests: 1}},
		"KeyInUse": {faults: []fault{{kind: answerInstead, status: 409, body: bodyKeyInUse}},
			want: want{class: processor.Transient, requests: 1}},
		"Unauthorized": {faults: []fault{{kind: answerInstead, status: 401, body: bodyAuth}},
			want: want{class: processor.Transient, requests: 1}},
		"ServerError": {faults: []fault{{kind: answerAfter, status: 500, body: bodyAPIError}},
			want: want{class: processor.Ambiguous, requests: 1}},
		"Unavailable": {faults: []fault{{kind: answerAfter, status: 503, body: bodyAPIError}},
			want: want{class: processor.Ambiguous, requests: 1}},
		"BadGatewayNotJSON": {faults: []fault{{kind: answerAfter, status: 502, body: "<html>502 Bad Gateway</html>"}},
			want: want{class: processor.Ambiguous, requests: 1}},
		"TimeoutAfterWrite": {faults: []fault{{kind: hangAfter}},
			want: want{class: processor.Ambiguous, requests: 1}},
		"ResetAfterWrite": {faults: []fault{{kind: resetAfter}},
			want: want{class: processor.Ambiguous, requests: 1}},
		"MismatchVoided": {faults: []fault{{kind: answerInstead, status: 400, body: bodyMismatch}},
			want: want{voided: true, requests: 2}}, // the charge, then the void replayed
		"MismatchHeld": {faults: []fault{{kind: answerInstead, status: 400, body: bodyMismatch, times: 2}},
			want: want{class: processor.Ambiguous, held: true, requests: 2}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			for _, f := range tc.faults {
				f.name, f.method, f.path = name, http.MethodPost, pathIntents
				b.proxy.add(f)
			}
			ctx := t.Context()
			if tc.faults[0].kind == hangAfter {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Second)
				defer cancel()
			}
			_, err := b.provider.Charge(ctx, newKey(), chargeReq)
			require.Error(t, err)
			switch {
			case tc.want.declined != "":
				d, ok := errors.AsType[*charge.DeclinedError](err)
				require.True(t, ok, "want a refusal, got %v", err)
				require.Equal(t, tc.want.declined, d.Code)
			case tc.want.voided:
				require.ErrorIs(t, err, processor.ErrKeyVoided)
			default:
				requireClass(t, err, tc.want.class)
				_, after := processor.ClassOf(err)
				require.Equal(t, tc.want.retryAfter, after)
				require.Equal(t, tc.want.held, errors.Is(err, stripe.ErrKeyHeld), "%v", err)
			}
			require.Len(t, b.proxy.requests(http.MethodPost, pathIntents), tc.want.requests)
		})
	}
}

// TestProvider_ChargeConnectionRefused: nothing listens, so nothing was
// sent: certainly not charged.
func TestProvider_ChargeConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	p, err := stripe.New(&stripe.Config{APIKey: testAPIKey, APIBase: "http://" + addr})
	require.NoError(t, err)
	_, err = p.Charge(t.Context(), newKey(), chargeReq)
	requireClass(t, err, processor.Transient)
}

// TestProvider_ChargeRetry: a charge whose response was lost is retried
// with the same Idempotency-Key and the same parameters, and never reads as
// a refusal.
func TestProvider_ChargeRetry(t *testing.T) {
	t.Parallel()
	for name, kind := range map[string]faultKind{"Timeout": hangAfter, "Reset": resetAfter, "ServerError": answerAfter} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			b.proxy.add(fault{name: name, method: http.MethodPost, path: pathIntents, kind: kind, status: 500, body: bodyAPIError})
			key := newKey()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			_, err := b.provider.Charge(ctx, key, chargeReq)
			requireClass(t, err, processor.Ambiguous)

			c, err := b.provider.Charge(t.Context(), key, chargeReq)
			require.NoError(t, err)
			require.NotEmpty(t, c.ChargeID)
			tries := b.proxy.requests(http.MethodPost, pathIntents)
			require.Len(t, tries, 2)
			require.Equal(t, name, tries[0].Fault)
			require.Equal(t, http.StatusOK, tries[0].Upstream, "the first try reached stripe-mock")
			require.Equal(t, key, tries[0].Key())
			require.Equal(t, tries[0].Key(), tries[1].Key())
			require.Equal(t, tries[0].Form, tries[1].Form)
		})
	}
}

// TestProvider_VoidCharge: the void spends the key on a PaymentIntent that
// cannot pay; when the key already holds the charge, the mismatch says so
// and the replayed charge answers.
func TestProvider_VoidCharge(t *testing.T) {
	t.Parallel()
	t.Run("KeyFree", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		key := newKey()
		_, found, err := b.provider.VoidCharge(t.Context(), key, chargeReq)
		require.NoError(t, err)
		require.False(t, found)
		posts := b.proxy.requests(http.MethodPost, pathIntents)
		require.Len(t, posts, 1)
		v := posts[0]
		require.Equal(t, key, v.Key())
		require.Equal(t, "true", v.Form.Get("metadata[idempay_void]"))
		require.Empty(t, v.Form.Get("confirm"), "a void is never confirmed")
		require.Empty(t, v.Form.Get("payment_method"), "a void has no payment method")
		require.Len(t, b.proxy.requests(http.MethodGet, pathSearch), 1, "past 24h only search knows the key")
	})
	t.Run("ChargedBefore", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		key := newKey()
		b.proxy.add(fault{name: "mismatch", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 400, body: bodyMismatch})
		c, found, err := b.provider.VoidCharge(t.Context(), key, chargeReq)
		require.NoError(t, err)
		require.True(t, found)
		require.NotEmpty(t, c.ChargeID)
		posts := b.proxy.requests(http.MethodPost, pathIntents)
		require.Len(t, posts, 2)
		require.Equal(t, "true", posts[1].Form.Get("confirm"), "the replay is the charge's own request")
		require.Equal(t, key, posts[1].Key())
	})
	t.Run("DeclinedBefore", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "mismatch", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 400, body: bodyMismatch})
		b.proxy.add(fault{name: "declined", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 402, body: bodyDeclined})
		_, found, err := b.provider.VoidCharge(t.Context(), newKey(), chargeReq)
		require.NoError(t, err)
		require.False(t, found)
	})
	t.Run("InUse", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "in_use", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 409, body: bodyKeyInUse})
		_, found, err := b.provider.VoidCharge(t.Context(), newKey(), chargeReq)
		requireClass(t, err, processor.Transient)
		require.False(t, found)
	})
	t.Run("HeldByOther", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "mismatch", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 400, body: bodyMismatch, times: 2})
		_, found, err := b.provider.VoidCharge(t.Context(), newKey(), chargeReq)
		require.ErrorIs(t, err, stripe.ErrKeyHeld)
		require.False(t, found)
	})
	t.Run("ChargedLongAgo", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		// The key was pruned (the void executes), and search knows its
		// charge: stripe-mock's fixture carries this key.
		c, found, err := b.provider.VoidCharge(t.Context(), testenv.StripeMockChargeKey, chargeReq)
		require.NoError(t, err)
		require.True(t, found)
		require.NotEmpty(t, c.ChargeID)
	})
}

// TestProvider_LookupCharge: a look-up never sends a request that could
// charge, and nothing found is not proof.
func TestProvider_LookupCharge(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	_, found, err := b.provider.LookupCharge(t.Context(), newKey(), chargeReq)
	require.ErrorIs(t, err, stripe.ErrNotFound)
	require.False(t, found)
	c, found, err := b.provider.LookupCharge(t.Context(), testenv.StripeMockChargeKey, chargeReq)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "acct_42", c.AccountID)
	require.Empty(t, b.proxy.requests(http.MethodPost, ""), "a look-up only reads")
	b.proxy.add(fault{name: "down", method: http.MethodGet, path: pathSearch, kind: answerAfter, status: 500, body: bodyAPIError})
	_, found, err = b.provider.LookupCharge(t.Context(), testenv.StripeMockChargeKey, chargeReq)
	require.Error(t, err)
	require.False(t, found)
}

// TestProvider_RefundErrors: what a refund's errors mean.
func TestProvider_RefundErrors(t *testing.T) {
	t.Parallel()
	t.Run("Exceeds", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "refunded", method: http.MethodPost, path: pathRefunds, kind: answerAfter, status: 400, body: bodyRefunded})
		_, err := b.provider.Refund(t.Context(), newKey(), refundReq(newKey()))
		ex, ok := errors.AsType[*refund.ExceedsError](err)
		require.True(t, ok, "%v", err)
		// Read from the PaymentIntent's latest charge: stripe-mock's fixture.
		require.Equal(t, int64(testenv.StripeMockRefunded), ex.RefundedTotal)
	})
	t.Run("MismatchVoided", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "mismatch", method: http.MethodPost, path: pathRefunds, kind: answerInstead, status: 400, body: bodyMismatch})
		key := newKey()
		_, err := b.provider.Refund(t.Context(), key, refundReq(newKey()))
		require.ErrorIs(t, err, processor.ErrKeyVoided)
		voids := b.proxy.requests(http.MethodPost, pathIntents)
		require.Len(t, voids, 1)
		require.Equal(t, key, voids[0].Key())
	})
	t.Run("ServerError", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "500", method: http.MethodPost, path: pathRefunds, kind: answerAfter, status: 500, body: bodyAPIError})
		_, err := b.provider.Refund(t.Context(), newKey(), refundReq(newKey()))
		requireClass(t, err, processor.Ambiguous)
	})
	t.Run("InvalidRequest", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "400", method: http.MethodPost, path: pathRefunds, kind: answerAfter, status: 400, body: bodyInvalid})
		_, err := b.provider.Refund(t.Context(), newKey(), refundReq(newKey()))
		refused, ok := errors.AsType[*refund.RefusedError](err)
		require.True(t, ok, "a definitive refusal: %v", err)
		require.NotEmpty(t, refused.Code)
	})
	t.Run("VoidRefundedBefore", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.proxy.add(fault{name: "mismatch", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 400, body: bodyMismatch})
		r, found, err := b.provider.VoidRefund(t.Context(), newKey(), refundReq(newKey()))
		require.NoError(t, err)
		require.True(t, found)
		require.NotEmpty(t, r.RefundID)
		require.Len(t, b.proxy.requests(http.MethodPost, pathRefunds), 1, "the replayed refund")
	})
}

// TestProvider_Tenants: a tenant on Connect is charged on its account; a
// call that names no tenant is refused before anything is sent.
func TestProvider_Tenants(t *testing.T) {
	t.Parallel()
	b := setup(t, &stripe.Config{Accounts: map[string]string{testTenant: testAccount}})
	_, err := b.provider.Charge(t.Context(), newKey(), chargeReq)
	requireClass(t, err, processor.Transient)
	require.Empty(t, b.proxy.requests("", ""))

	_, err = b.provider.Charge(stripe.WithTenant(t.Context(), "tenant_not_on_connect"), newKey(), chargeReq)
	require.NoError(t, err)
	_, err = b.provider.Charge(stripe.WithTenant(t.Context(), testTenant), newKey(), chargeReq)
	require.NoError(t, err)
	seen := b.proxy.requests(http.MethodPost, pathIntents)
	require.Len(t, seen, 2)
	require.Empty(t, seen[0].Header.Get("Stripe-Account"))
	require.Equal(t, testAccount, seen[1].Header.Get("Stripe-Account"))
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		cfg  stripe.Config
		want string
	}{
		"NoKey":           {cfg: stripe.Config{}, want: "Config.APIKey is required"},
		"LiveNeedsMethod": {cfg: stripe.Config{APIKey: "sk_live_x"}, want: "Config.PaymentMethod is required with a live key"},
		"BadBase":         {cfg: stripe.Config{APIKey: testAPIKey, APIBase: "127.0.0.1:12111"}, want: "Config.APIBase"},
		"BadAccount":      {cfg: stripe.Config{APIKey: testAPIKey, Accounts: map[string]string{"t": "x"}}, want: "Config.Accounts"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := stripe.New(&tc.cfg)
			require.ErrorContains(t, err, tc.want)
			if tc.cfg.APIKey != "" {
				require.NotContains(t, err.Error(), tc.cfg.APIKey, "the key is never in an error")
			}
		})
	}
	p, err := stripe.New(&stripe.Config{APIKey: "sk_live_x", PaymentMethod: "pm_123"})
	require.NoError(t, err)
	require.NotNil(t, p)
}

// TestProvider_ChargeIncomplete: a confirmed PaymentIntent that did not pay
// (stripe-mock's own fixture is one, requires_payment_method) is read
// again, canceled so that nobody can pay it later, and refused.
func TestProvider_ChargeIncomplete(t *testing.T) {
	t.Parallel()
	bundled, err := testenv.StartStripeMockBundled()
	require.NoError(t, err)
	t.Cleanup(bundled.Shutdown)
	proxy := newFaultProxy(t, bundled.URL)
	p, err := stripe.New(&stripe.Config{APIKey: testAPIKey, APIBase: proxy.URL()})
	require.NoError(t, err)
	key := newKey()
	_, err = p.Charge(t.Context(), key, chargeReq)
	d, ok := errors.AsType[*charge.DeclinedError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "payment_incomplete", d.Code)
	seen := proxy.requests("", "")
	kinds := make([]string, 0, len(seen))
	for _, s := range seen {
		require.Equal(t, http.StatusOK, s.Upstream)
		kinds = append(kinds, s.Method)
	}
	require.Equal(t, []string{"POST", "GET", "POST"}, kinds, "the charge, reading it again, the cancel")
	cancel := seen[2]
	require.True(t, strings.HasSuffix(cancel.Path, "/cancel"), cancel.Path)
	require.Equal(t, key+"/cancel", cancel.Key())
}

// TestProvider_KeyNeverInErrors: stripe-mock answers a key it does not
// like with a 401 that quotes it whole (Stripe masks it); the provider's
// errors, which the engine logs, never carry it.
func TestProvider_KeyNeverInErrors(t *testing.T) {
	t.Parallel()
	const odd = "sk_test_idempay_not_well_formed"
	proxy := newFaultProxy(t, mock.URL)
	p, err := stripe.New(&stripe.Config{APIKey: odd, APIBase: proxy.URL()})
	require.NoError(t, err)
	_, err = p.Charge(t.Context(), newKey(), chargeReq)
	requireClass(t, err, processor.Transient)
	se, ok := errors.AsType[*stripego.Error](err)
	require.True(t, ok)
	require.Contains(t, se.Msg, odd, "stripe-mock quotes the key")
	require.NotContains(t, err.Error(), odd)
	require.Contains(t, err.Error(), "sk_***")
}
