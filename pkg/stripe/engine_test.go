package stripe_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/stripe"
)

// engineBundle is a worker (the real engine, in process, on the shared
// NATS and Redis under a namespace of its own) charging through the Stripe
// provider, through a fault proxy, against stripe-mock; and a client.
type engineBundle struct {
	proxy  *faultProxy
	client *client.Client
}

func setupEngine(tb testing.TB, maxDeliver int) *engineBundle {
	tb.Helper()
	env, err := testenv.Shared()
	require.NoError(tb, err)
	ns := testenv.Namespace()
	proxy := newFaultProxy(tb, mock.URL)
	provider, err := stripe.New(&stripe.Config{APIKey: testAPIKey, APIBase: proxy.URL(), Timeout: 2 * time.Second})
	require.NoError(tb, err)

	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(tb, err)
	tb.Cleanup(func() { rdb.Close() })
	nc, err := testenv.ConnectNATS(env.NATSURL, tb.Name())
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)

	top := testenv.Topology(ns)
	mux := processor.NewMux()
	ops.Register(mux, provider, ns+":")
	quick := processor.Backoff{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond,
		MaxElapsedTime: 5 * time.Second, MaxRetries: 2}
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	w, err := processor.New(nc, rdb, mux, &processor.Config{
		Topology: top, KeyPrefix: ns + ":", Concurrency: 4, MaxTries: maxDeliver,
		AckWait: 5 * time.Second, LockTTL: 2 * time.Second,
		NakDelay: 50 * time.Millisecond, MaxNakDelay: 200 * time.Millisecond, LockedDelay: 50 * time.Millisecond,
		// Retry-After is honoured up to RateLimited.MaxInterval inside a
		// delivery.
		Retry:  &processor.Policy{Transient: quick, Ambiguous: quick, RateLimited: processor.Backoff{InitialInterval: 10 * time.Millisecond, MaxInterval: 5 * time.Second, MaxElapsedTime: 10 * time.Second, MaxRetries: 2}},
		Logger: logger,
	})
	require.NoError(tb, err)
	require.NoError(tb, w.Start(tb.Context()))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
		js, err := jetstream.New(nc)
		if err == nil {
			for _, s := range []string{top.CommandStream, top.ResultStream, top.DeadLetterStream} {
				_ = js.DeleteStream(ctx, s)
			}
		}
	})
	cnc, err := testenv.ConnectNATS(env.NATSURL, tb.Name()+"-client")
	require.NoError(tb, err)
	tb.Cleanup(cnc.Close)
	cl, err := client.New(cnc, &client.Config{Topology: top, ResultTimeout: time.Minute})
	require.NoError(tb, err)
	return &engineBundle{proxy: proxy, client: cl}
}

// TestProvider_Engine runs commands through the real engine with the Stripe
// provider, and shows what the client is told when Stripe misbehaves.
func TestProvider_Engine(t *testing.T) {
	t.Parallel()

	t.Run("LostResponseRetried", func(t *testing.T) {
		t.Parallel()
		b := setupEngine(t, 3)
		b.proxy.add(fault{name: "reset", method: http.MethodPost, path: pathIntents, kind: resetAfter})
		key := newKey()
		res, err := b.client.Charge(t.Context(), key, chargeReq)
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, res.Result.Status)
		require.NotEmpty(t, res.Data.ChargeID)
		tries := b.proxy.requests(http.MethodPost, pathIntents)
		require.Len(t, tries, 2)
		require.Equal(t, http.StatusOK, tries[0].Upstream, "the lost try reached stripe-mock")
		require.Equal(t, key, tries[0].Key())
		require.Equal(t, key, tries[1].Key(), "the retry carries the same Idempotency-Key")
		require.Equal(t, tries[0].Form, tries[1].Form, "and the same parameters")
	})

	t.Run("RateLimitedWaitsRetryAfter", func(t *testing.T) {
		t.Parallel()
		b := setupEngine(t, 3)
		b.proxy.add(fault{name: "429", method: http.MethodPost, path: pathIntents, kind: answerInstead, status: 429,
			body: bodyRateLimit, header: map[string]string{"Retry-After": "1"}})
		res, err := b.client.Charge(t.Context(), newKey(), chargeReq)
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, res.Result.Status)
		tries := b.proxy.requests(http.MethodPost, pathIntents)
		require.Len(t, tries, 2)
		require.Equal(t, tries[0].Key(), tries[1].Key())
		require.GreaterOrEqual(t, tries[1].At.Sub(tries[0].At), time.Second, "the retry came after Retry-After")
	})

	t.Run("DeclineIsOneFailedAnswer", func(t *testing.T) {
		t.Parallel()
		b := setupEngine(t, 3)
		b.proxy.add(fault{name: "402", method: http.MethodPost, path: pathIntents, kind: answerAfter, status: 402, body: bodyDeclined})
		res, err := b.client.Charge(t.Context(), newKey(), chargeReq)
		var failed *client.FailedError
		require.ErrorAs(t, err, &failed)
		require.Equal(t, messages.CodeCardDeclined, failed.Code)
		require.Equal(t, messages.StatusFailed, res.Result.Status)
		require.Equal(t, 1, res.Result.Attempts)
		require.Len(t, b.proxy.requests(http.MethodPost, pathIntents), 1, "one request")
	})

	t.Run("AmbiguousToTheEndIsNeverFailed", func(t *testing.T) {
		t.Parallel()
		// Every charge request reaches stripe-mock and its response is
		// lost; search finds nothing. The client must not be told failed
		// (nor dead_lettered): the charge may have been made.
		b := setupEngine(t, 2)
		b.proxy.add(fault{name: "reset", method: http.MethodPost, path: pathIntents, kind: resetAfter, times: -1})
		key := newKey()
		res, err := b.client.Charge(t.Context(), key, chargeReq)
		require.Error(t, err)
		require.NotErrorIs(t, err, client.ErrFailed, "never failed")
		require.NotErrorIs(t, err, client.ErrDeadLettered, "never dead_lettered")
		var rej *messages.RejectError
		require.ErrorAs(t, err, &rej)
		require.Equal(t, messages.CodeOutcomeUnknown, rej.Code)
		require.Equal(t, messages.StatusRejected, res.Result.Status)
		var tries, voids []seenRequest
		for _, r := range b.proxy.requests(http.MethodPost, pathIntents) {
			if r.Form.Get("metadata[idempay_void]") == "true" {
				voids = append(voids, r) // the last try asks Stripe to void the key: reset too
				continue
			}
			tries = append(tries, r)
		}
		require.GreaterOrEqual(t, len(tries), 2)
		for _, tr := range tries {
			require.Equal(t, key, tr.Key())
			require.Equal(t, tries[0].Form, tr.Form)
		}
		require.NotEmpty(t, voids, "the key out of tries, unknown, is voided before any certain answer")
		for _, v := range voids {
			require.Equal(t, key, v.Key())
		}
	})

	t.Run("ChargeThenRefund", func(t *testing.T) {
		t.Parallel()
		b := setupEngine(t, 3)
		key := newKey()
		c, err := b.client.Charge(t.Context(), key, chargeReq)
		require.NoError(t, err)
		r, err := b.client.Refund(t.Context(), newKey(), messages.RefundRequest{ChargeKey: key, Amount: 500, Reason: "requested_by_customer"})
		require.NoError(t, err)
		require.Equal(t, messages.RefundData{RefundID: r.Data.RefundID, ChargeID: c.Data.ChargeID, Amount: 500, Currency: "EUR",
			RefundedTotal: testenv.StripeMockRefunded}, r.Data)
		refunds := b.proxy.requests(http.MethodPost, pathRefunds)
		require.Len(t, refunds, 1)
		require.Equal(t, c.Data.ChargeID, refunds[0].Form.Get("payment_intent"))
	})
}
