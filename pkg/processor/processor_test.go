package processor_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/processor"
)

func TestProcessor_Charge(t *testing.T) {
	t.Parallel()

	t.Run("SucceedsOnceAndStoresTheOutcome", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, nil, nil)
		key := newKey()
		b.publish(t, messages.KindPaymentCharge, key,
			`{"currency":"EUR", "amount":1999, "account_id":"acct_42", "description":"order 1001"}`,
			messages.HeaderReplyTo, b.answers.inbox)

		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status)
		require.Equal(t, messages.KindPaymentCharge, got.Kind)
		require.Equal(t, key, got.Key)
		require.Equal(t, 1, got.Attempts)
		require.False(t, got.Replayed)
		require.Empty(t, got.Code)
		c := data[messages.ChargeData](t, got)
		require.True(t, strings.HasPrefix(c.ChargeID, "ch_"), c.ChargeID)
		require.Equal(t, messages.ChargeData{ChargeID: c.ChargeID, AccountID: "acct_42", Amount: 1999, Currency: "EUR"}, c)

		requireSameOutcome(t, got, b.answers.waitReply(t, key))
		requireSameOutcome(t, got, b.stored(t, key))
		require.Equal(t, 1, b.calls(t, key))
		b.drained(t)
	})

	t.Run("DeclinedIsAStoredFailure", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.startWorker(t, nil, nil)
		key := newKey()
		body := messages.ChargeRequest{AccountID: "decline_7", Amount: 500, Currency: "USD"}
		b.publish(t, messages.KindPaymentCharge, key, body)
		first := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusFailed, first.Status)
		require.Equal(t, messages.CodeCardDeclined, first.Code)
		require.Zero(t, b.charges(t))

		// A retry after the dedupe window replays the failure; the provider
		// is not asked again.
		waitPast(t, 150*time.Millisecond)
		require.False(t, b.publish(t, messages.KindPaymentCharge, key, body).Duplicate)
		second := b.answers.waitAnswers(t, key, 2)[1]
		require.True(t, second.Replayed)
		requireSameOutcome(t, first, second)
		require.Equal(t, 1, b.calls(t, key))
	})
}

func TestProcessor_Duplicates(t *testing.T) {
	t.Parallel()

	t.Run("ImmediateDuplicateIsDroppedByJetStream", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.startWorker(t, nil, nil)
		key := newKey()
		require.False(t, b.charge(t, key, 100).Duplicate)
		require.True(t, b.charge(t, key, 100).Duplicate)
		b.answers.waitAnswers(t, key, 1)
		b.drained(t)
		require.Equal(t, 1, b.answers.count(key))
		require.Equal(t, 1, b.calls(t, key))
	})

	t.Run("DuplicateAfterTheWindowIsReplayed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.startWorker(t, nil, nil)
		key := newKey()
		b.charge(t, key, 100)
		first := b.answers.waitAnswers(t, key, 1)[0]
		waitPast(t, 150*time.Millisecond)

		require.False(t, b.charge(t, key, 100).Duplicate, "outside the window JetStream accepts it")
		second := b.answers.waitAnswers(t, key, 2)[1]
		require.False(t, first.Replayed)
		require.True(t, second.Replayed)
		requireSameOutcome(t, first, second)
		require.Equal(t, 1, b.calls(t, key))
		require.Equal(t, 1, b.charges(t))
		requireSameOutcome(t, first, b.stored(t, key))
	})

	t.Run("SameKeyInFlightOnTwoWorkers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.DedupeWindow = 100 * time.Millisecond
		release := make(chan struct{})
		var inCall atomic.Int32
		slow := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			inCall.Add(1)
			<-release
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, slow)
		b.startWorker(t, mux, nil)
		b.startWorker(t, mux, nil)

		key := newKey()
		b.charge(t, key, 700)
		eventuallyf(t, 10*time.Second, func() bool { return inCall.Load() == 1 }, "first delivery in the provider")
		waitPast(t, 150*time.Millisecond)
		require.False(t, b.charge(t, key, 700).Duplicate)
		// The second copy meets the lock and is handed back, again and
		// again, while the first is in the provider.
		time.Sleep(300 * time.Millisecond)
		require.EqualValues(t, 1, inCall.Load(), "the second copy must not reach the provider while the first holds the key")
		close(release)

		answers := b.answers.waitAnswers(t, key, 2)
		require.False(t, answers[0].Replayed)
		require.True(t, answers[1].Replayed)
		requireSameOutcome(t, answers[0], answers[1])
		require.Equal(t, 1, b.calls(t, key))
		b.drained(t)
	})

	t.Run("KeyReusedWithAnotherPayloadIsRejected", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.startWorker(t, nil, nil)
		key := newKey()
		b.charge(t, key, 1000)
		first := b.answers.waitAnswers(t, key, 1)[0]
		waitPast(t, 150*time.Millisecond)

		b.publish(t, messages.KindPaymentCharge, key, messages.ChargeRequest{AccountID: "acct_42", Amount: 2000, Currency: "EUR"},
			messages.HeaderReplyTo, b.answers.inbox)
		rej := b.answers.waitAnswers(t, key, 2)[1]
		require.Equal(t, messages.StatusRejected, rej.Status)
		require.Equal(t, messages.CodeKeyReused, rej.Code)
		require.Equal(t, messages.CodeKeyReused, b.answers.waitReply(t, key).Code)

		// Another command type under the same key is reuse too.
		waitPast(t, 150*time.Millisecond)
		b.publish(t, messages.KindCartAdd, key, messages.CartAddRequest{CartID: "c", SKU: "s", Quantity: 1})
		require.Equal(t, messages.CodeKeyReused, b.answers.waitAnswers(t, key, 3)[2].Code)

		// Nothing changed: one charge, of the first amount, still stored.
		require.Equal(t, 1, b.calls(t, key))
		requireSameOutcome(t, first, b.stored(t, key))
		require.Zero(t, cartQuantity(t, b, "c", "s"))
	})
}

func TestProcessor_Rejections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, nil, nil)

	valid := `{"account_id":"acct_1","amount":10,"currency":"EUR"}`
	cases := map[string]struct {
		kind string
		body string
		code string
	}{
		"UnknownCommand":      {"refund.issue", valid, messages.CodeUnknownCommand},
		"UnknownField":        {messages.KindPaymentCharge, `{"account_id":"a","amount":10,"currency":"EUR","cvv":"123"}`, messages.CodeInvalidPayload},
		"FractionalAmount":    {messages.KindPaymentCharge, `{"account_id":"a","amount":10.5,"currency":"EUR"}`, messages.CodeInvalidPayload},
		"ExponentAmount":      {messages.KindPaymentCharge, `{"account_id":"a","amount":1e3,"currency":"EUR"}`, messages.CodeInvalidPayload},
		"ZeroAmount":          {messages.KindPaymentCharge, `{"account_id":"a","amount":0,"currency":"EUR"}`, messages.CodeInvalidPayload},
		"LowerCaseCurrency":   {messages.KindPaymentCharge, `{"account_id":"a","amount":1,"currency":"eur"}`, messages.CodeInvalidPayload},
		"NotJSON":             {messages.KindPaymentCharge, `amount=10`, messages.CodeInvalidPayload},
		"QuantityTooLarge":    {messages.KindCartAdd, `{"cart_id":"c","sku":"s","quantity":1001}`, messages.CodeInvalidPayload},
		"BadCartID":           {messages.KindCartAdd, `{"cart_id":"c 1","sku":"s","quantity":1}`, messages.CodeInvalidPayload},
		"PayloadTooLarge":     {messages.KindCartAdd, `{"cart_id":"c","sku":"s","quantity":1,"x":"` + strings.Repeat("a", messages.MaxBodySize) + `"}`, messages.CodePayloadTooLarge},
		"EmptyBody":           {messages.KindCartAdd, ``, messages.CodeInvalidPayload},
		"ArrayBody":           {messages.KindCartAdd, `[]`, messages.CodeInvalidPayload},
		"TrailingGarbage":     {messages.KindCartAdd, `{"cart_id":"c","sku":"s","quantity":1} x`, messages.CodeInvalidPayload},
		"MisCasedFieldName":   {messages.KindCartAdd, `{"Cart_ID":"c","sku":"s","quantity":1}`, messages.CodeInvalidPayload},
		"InvalidPayloadFirst": {messages.KindPaymentCharge, `{"amount":"10"}`, messages.CodeInvalidPayload},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := newKey()
			b.publish(t, tc.kind, key, tc.body, messages.HeaderReplyTo, b.answers.inbox)
			got := b.answers.waitAnswers(t, key, 1)[0]
			require.Equal(t, messages.StatusRejected, got.Status)
			require.Equal(t, tc.code, got.Code, got.Message)
			require.NotEmpty(t, got.Message)
			require.Equal(t, tc.kind, got.Kind)
			require.Equal(t, got, b.answers.waitReply(t, key))
		})
	}

	t.Run("InvalidKeyIsAnsweredOnlyOnReplyTo", func(t *testing.T) {
		t.Parallel()
		for _, key := range []string{"", "not-a-uuid", strings.ToUpper(newKey()), "{" + newKey() + "}"} {
			marker := "acct_" + strings.ReplaceAll(newKey(), "-", "")[:20]
			inbox := nats.NewInbox()
			sub, err := b.nc.SubscribeSync(inbox)
			require.NoError(t, err)
			b.publish(t, messages.KindPaymentCharge, key, `{"account_id":"`+marker+`","amount":1,"currency":"EUR"}`,
				messages.HeaderReplyTo, inbox)
			m, err := sub.NextMsg(10 * time.Second)
			require.NoError(t, err, "key %q", key)
			got, err := messages.DecodeResult(m.Data)
			require.NoError(t, err)
			require.Equal(t, messages.StatusRejected, got.Status)
			require.Equal(t, messages.CodeInvalidKey, got.Code)
			require.Equal(t, key, got.Key)
			require.NoError(t, sub.Unsubscribe())
		}
	})

	t.Run("ValidBodyAfterInvalidPayloadRuns", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.startWorker(t, nil, nil)
		key := newKey()
		b.publish(t, messages.KindPaymentCharge, key, `{"account_id":"a","amount":-1,"currency":"EUR"}`)
		require.Equal(t, messages.CodeInvalidPayload, b.answers.waitAnswers(t, key, 1)[0].Code)
		waitPast(t, 150*time.Millisecond)
		b.charge(t, key, 10)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 2)[1].Status)
	})

	t.Run("UnsafeReplyToIsIgnored", func(t *testing.T) {
		t.Parallel()
		key, victim := newKey(), newKey()
		// A client must not be able to forge another key's outcome.
		b.publish(t, messages.KindPaymentCharge, key, valid, messages.HeaderReplyTo, b.subjects.ResultFor(victim))
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		require.Zero(t, b.answers.count(victim))
	})

	// A Reply-To that is a system subject to some readers once a control
	// character or a non-breaking space in front of it is dropped ("\v$JS.API..."
	// , "\u00a0$JS..."): only visible ASCII is answered.
	for name, prefix := range map[string]string{"ControlCharacter": "\x01", "NonBreakingSpace": "\u00a0"} {
		t.Run("UnsafeReplyTo"+name+"IsIgnored", func(t *testing.T) {
			t.Parallel()
			key := newKey()
			spy := prefix + b.ns + ".spy." + name
			got := make(chan *nats.Msg, 1)
			sub, err := b.nc.ChanSubscribe(spy, got)
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			require.NoError(t, b.nc.Flush())
			b.publish(t, messages.KindPaymentCharge, key, valid, messages.HeaderReplyTo, spy)
			require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
			require.NoError(t, b.nc.Flush())
			select {
			case m := <-got:
				t.Fatalf("the worker answered on %q: %s", m.Subject, m.Data)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

func TestProcessor_Cart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cfg.DedupeWindow = 100 * time.Millisecond
	b.startWorker(t, nil, nil)

	k1, k2 := newKey(), newKey()
	b.publish(t, messages.KindCartAdd, k1, messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2})
	r1 := b.answers.waitAnswers(t, k1, 1)[0]
	require.Equal(t, messages.CartAddData{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2}, data[messages.CartAddData](t, r1))
	b.publish(t, messages.KindCartAdd, k2, messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 3})
	require.EqualValues(t, 5, data[messages.CartAddData](t, b.answers.waitAnswers(t, k2, 1)[0]).Quantity)

	// A late duplicate of the first replays "2", the quantity right after
	// that command, and adds nothing.
	waitPast(t, 150*time.Millisecond)
	b.publish(t, messages.KindCartAdd, k1, messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2})
	replay := b.answers.waitAnswers(t, k1, 2)[1]
	require.True(t, replay.Replayed)
	requireSameOutcome(t, r1, replay)
	require.EqualValues(t, 5, cartQuantity(t, b, "cart_7", "SKU-RED-M"))
}

// funcProvider is a Provider made of a function, for tests.
type funcProvider struct {
	charge func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error)
}

var _ charge.Provider = (*funcProvider)(nil)

func (f *funcProvider) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	return f.charge(ctx, key, req)
}

// waitPast waits out a JetStream duplicate window. It is a sleep on
// purpose: the window is wall-clock time on the server.
func waitPast(t *testing.T, d time.Duration) { //nolint:unparam // callers name the wait next to the window it outlasts
	t.Helper()
	time.Sleep(d)
}

var errBoom = errors.New("boom")

func TestProcessor_Stats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cfg.DedupeWindow = 100 * time.Millisecond
	cfg := b.cfg
	w, err := newProcessor(t, b, b.defaultMux(), &cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(context.Background()) })

	key := newKey()
	b.charge(t, key, 10)
	b.answers.waitAnswers(t, key, 1)
	waitPast(t, 150*time.Millisecond)
	b.charge(t, key, 10) // replayed
	b.answers.waitAnswers(t, key, 2)
	bad := newKey()
	b.publish(t, messages.KindCartAdd, bad, `{"cart_id":"c"}`)
	b.answers.waitAnswers(t, bad, 1)
	declined := newKey()
	b.publish(t, messages.KindPaymentCharge, declined, messages.ChargeRequest{AccountID: "decline_1", Amount: 1, Currency: "EUR"})
	b.answers.waitAnswers(t, declined, 1)

	want := processor.Stats{Deliveries: 4, Succeeded: 1, Failed: 1, Replayed: 1, Rejected: 1}
	// Counted just after the answer is published: poll.
	eventuallyf(t, 5*time.Second, func() bool { return w.Stats() == want }, "stats %+v, want %+v", w.Stats(), want)
}
