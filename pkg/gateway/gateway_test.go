package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// TestGateway_Outcomes: every outcome status of the contract, from real
// workers: 201 for each command, 402 card_declined, 422 for the other
// failed outcomes, and GET /v1/results/{key}.
func TestGateway_Outcomes(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, nil)

	chargeKey := newKey()
	r := b.post(t, "/v1/payments", chargeKey, chargeBody("acct_42", 1999))
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	require.Equal(t, "/v1/results/"+chargeKey, r.header.Get("Location"))
	require.False(t, r.replayed())
	res := r.answer(t)
	require.Equal(t, messages.StatusSucceeded, res.Status)
	require.Equal(t, chargeKey, res.Key)
	require.Equal(t, messages.KindPaymentCharge, res.Kind)
	require.False(t, res.Replayed)
	var data messages.ChargeData
	require.NoError(t, json.Unmarshal(res.Data, &data))
	require.Equal(t, int64(1999), data.Amount)
	require.Contains(t, b.charges(t), chargeKey)

	t.Run("Results", func(t *testing.T) {
		t.Parallel()
		got := do(t, http.MethodGet, b.srv.URL+"/v1/results/"+chargeKey, nil)
		require.Equal(t, http.StatusOK, got.status)
		require.Equal(t, string(r.body), string(got.body), "GET returns the POST's body")
		missing := do(t, http.MethodGet, b.srv.URL+"/v1/results/"+newKey(), nil)
		require.Equal(t, http.StatusNotFound, missing.status)
		require.Equal(t, CodeOutcomeNotFound, missing.problem(t).Code)
		bad := do(t, http.MethodGet, b.srv.URL+"/v1/results/NOT-A-KEY", nil)
		require.Equal(t, http.StatusBadRequest, bad.status)
		require.Equal(t, messages.CodeInvalidKey, bad.problem(t).Code)
	})

	t.Run("CardDeclined", func(t *testing.T) {
		t.Parallel()
		key := newKey()
		r := b.post(t, "/v1/payments", key, chargeBody("decline_1", 500))
		require.Equal(t, http.StatusPaymentRequired, r.status)
		p := r.problem(t)
		require.Equal(t, messages.CodeCardDeclined, p.Code)
		require.Equal(t, key, p.Key)
		out, err := messages.DecodeResult(p.Outcome)
		require.NoError(t, err)
		require.Equal(t, messages.StatusFailed, out.Status)
		require.NotContains(t, b.charges(t), key)
	})

	t.Run("Refunds", func(t *testing.T) {
		t.Parallel()
		key := newKey()
		r := b.post(t, "/v1/refunds", key, map[string]any{"charge_key": chargeKey, "amount": 500, "reason": "requested_by_customer"})
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		var rd messages.RefundData
		require.NoError(t, json.Unmarshal(r.answer(t).Data, &rd))
		require.Equal(t, int64(500), rd.RefundedTotal)

		for body, code := range map[string]string{
			`{"charge_key":"` + chargeKey + `","amount":1500}`: messages.CodeRefundExceedsCharge,
			`{"charge_key":"` + newKey() + `","amount":1}`:     messages.CodeChargeNotFound,
		} {
			r := b.post(t, "/v1/refunds", newKey(), []byte(body))
			require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
			require.Equal(t, code, r.problem(t).Code)
		}
	})

	t.Run("Cart", func(t *testing.T) {
		t.Parallel()
		for want := int64(2); want <= 4; want += 2 {
			r := b.post(t, "/v1/carts/cart_7/items", newKey(), map[string]any{"sku": "SKU-RED-M", "quantity": 2})
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			var cd messages.CartAddData
			require.NoError(t, json.Unmarshal(r.answer(t).Data, &cd))
			require.Equal(t, messages.CartAddData{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: want}, cd)
		}
	})
}

// TestGateway_BadRequests: 400, 413 and 415, each refused before anything
// is sent to NATS.
func TestGateway_BadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, nil)
	valid, err := json.Marshal(chargeBody("acct_42", 100))
	require.NoError(t, err)
	key := newKey()
	cases := map[string]struct {
		path    string
		body    []byte
		headers []string
		status  int
		code    string
	}{
		"MissingKey":       {"/v1/payments", valid, []string{"Content-Type", "application/json"}, 400, messages.CodeInvalidKey},
		"UpperCaseKey":     {"/v1/payments", valid, []string{"Content-Type", "application/json", HeaderIdempotencyKey, strings.ToUpper(key)}, 400, messages.CodeInvalidKey},
		"NotAUUID":         {"/v1/payments", valid, []string{"Content-Type", "application/json", HeaderIdempotencyKey, "order-1001"}, 400, messages.CodeInvalidKey},
		"TwoKeys":          {"/v1/payments", valid, []string{"Content-Type", "application/json", HeaderIdempotencyKey, key, HeaderIdempotencyKey, newKey()}, 400, messages.CodeInvalidKey},
		"UnknownField":     {"/v1/payments", []byte(`{"account_id":"a","amount":1,"currency":"EUR","tip":5}`), nil, 400, messages.CodeInvalidPayload},
		"RepeatedName":     {"/v1/payments", []byte(`{"account_id":"a","amount":1,"amount":5000,"currency":"EUR"}`), nil, 400, messages.CodeInvalidPayload},
		"RepeatedEscaped":  {"/v1/carts/c/items", []byte(`{"sku":"S","quantity":1,"quantit\u0079":900}`), nil, 400, messages.CodeInvalidPayload},
		"Fraction":         {"/v1/payments", []byte(`{"account_id":"a","amount":1.5,"currency":"EUR"}`), nil, 400, messages.CodeInvalidPayload},
		"MissingAmount":    {"/v1/payments", []byte(`{"account_id":"a","currency":"EUR"}`), nil, 400, messages.CodeInvalidPayload},
		"NotJSON":          {"/v1/payments", []byte(`account_id=a`), nil, 400, messages.CodeInvalidPayload},
		"BadCartID":        {"/v1/carts/cart%20seven/items", []byte(`{"sku":"S","quantity":1}`), nil, 400, messages.CodeInvalidPayload},
		"CartIDInBody":     {"/v1/carts/cart_7/items", []byte(`{"cart_id":"cart_7","sku":"S","quantity":1}`), nil, 400, messages.CodeInvalidPayload},
		"RefundBadCharge":  {"/v1/refunds", []byte(`{"charge_key":"x","amount":1}`), nil, 400, messages.CodeInvalidPayload},
		"TooLarge":         {"/v1/payments", bigBody(MaxBodySize + 1), nil, 413, messages.CodePayloadTooLarge},
		"TextPlain":        {"/v1/payments", valid, []string{"Content-Type", "text/plain", HeaderIdempotencyKey, key}, 415, CodeUnsupportedMediaType},
		"NoContentType":    {"/v1/payments", valid, []string{HeaderIdempotencyKey, key}, 415, CodeUnsupportedMediaType},
		"Latin1":           {"/v1/payments", valid, []string{"Content-Type", "application/json; charset=latin1", HeaderIdempotencyKey, key}, 415, CodeUnsupportedMediaType},
		"FormContentType":  {"/v1/payments", valid, []string{"Content-Type", "application/x-www-form-urlencoded", HeaderIdempotencyKey, key}, 415, CodeUnsupportedMediaType},
		"CartTooLarge":     {"/v1/carts/c/items", bigBody(MaxBodySize + 1), nil, 413, messages.CodePayloadTooLarge},
		"RefundTextPlain":  {"/v1/refunds", valid, []string{"Content-Type", "text/plain", HeaderIdempotencyKey, key}, 415, CodeUnsupportedMediaType},
		"UnknownRoute":     {"/v1/charges", valid, nil, 404, CodeNotFound},
		"MethodNotAllowed": {"/v1/results/" + key, valid, nil, 405, CodeMethodNotAllowed},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			headers := c.headers
			if headers == nil {
				headers = []string{"Content-Type", "application/json", HeaderIdempotencyKey, newKey()}
			}
			r := do(t, http.MethodPost, b.srv.URL+c.path, c.body, headers...)
			require.Equal(t, c.status, r.status, "%s", r.body)
			require.Equal(t, c.code, r.problem(t).Code)
		})
	}
	// A body of exactly 64 KiB is accepted.
	r := b.post(t, "/v1/payments", newKey(), bigBody(MaxBodySize))
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	// The draft's structured-field form of the key is accepted too.
	quoted := newKey()
	r = do(t, http.MethodPost, b.srv.URL+"/v1/payments", valid, "Content-Type", "application/json; charset=utf-8", HeaderIdempotencyKey, `"`+quoted+`"`)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	require.Equal(t, quoted, r.answer(t).Key)
	require.Equal(t, uint64(2), b.env.CommandsStored(t), "nothing but the two valid requests reached NATS")
}

// TestGateway_Replay: a repeated request gets the same status and body
// with Idempotent-Replayed: true, inside the dedupe window (JetStream drops
// the re-send; the outcome is read from RESULTS) and after it (a worker
// replays the stored outcome). The card is charged once.
//
//nolint:tparallel // the subtests run in turn: each counts the messages the shared command stream stored
func TestGateway_Replay(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 300 * time.Millisecond}}, nil)
	for name, account := range map[string]string{"Succeeded": "acct_42", "Declined": "decline_7"} {
		t.Run(name, func(t *testing.T) {
			key := newKey()
			first := b.post(t, "/v1/payments", key, chargeBody(account, 700))
			require.Contains(t, []int{http.StatusCreated, http.StatusPaymentRequired}, first.status, "%s", first.body)
			require.False(t, first.replayed())
			stored := b.env.CommandsStored(t)

			inside := b.post(t, "/v1/payments", key, chargeBody(account, 700))
			require.Equal(t, first.status, inside.status)
			require.Equal(t, string(first.body), string(inside.body))
			require.True(t, inside.replayed())

			after := b.untilStored(t, stored+1, func() *response { return b.post(t, "/v1/payments", key, chargeBody(account, 700)) })
			require.Equal(t, first.status, after.status)
			require.Equal(t, string(first.body), string(after.body), "a worker's replay has the same body")
			require.True(t, after.replayed())
			require.Equal(t, int64(1), b.env.SimCalls(t, key), "the provider was called once")
		})
	}
	require.Len(t, b.charges(t), 1, "one charge in sim:charges")
}

// TestGateway_KeyReuse: the key with another body gets 422
// idempotency_key_reused inside the window (the gateway compares the stored
// outcome's fingerprint), after it (the worker refuses it), while the first
// is in flight (the in-flight message's fingerprint), and on another
// endpoint; nothing is charged for it.
func TestGateway_KeyReuse(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 300 * time.Millisecond}}, nil)
	key := newKey()
	require.Equal(t, http.StatusCreated, b.post(t, "/v1/payments", key, chargeBody("acct_42", 100)).status)
	stored := b.env.CommandsStored(t)

	reused := func() *response { return b.post(t, "/v1/payments", key, chargeBody("acct_42", 999)) }
	inside := reused()
	require.Equal(t, http.StatusUnprocessableEntity, inside.status, "%s", inside.body)
	require.Equal(t, messages.CodeKeyReused, inside.problem(t).Code)
	require.False(t, inside.replayed())

	other := b.post(t, "/v1/carts/cart_1/items", key, map[string]any{"sku": "S", "quantity": 1})
	require.Equal(t, http.StatusUnprocessableEntity, other.status, "%s", other.body)
	require.Equal(t, messages.CodeKeyReused, other.problem(t).Code)

	after := b.untilStored(t, stored+1, reused)
	require.Equal(t, http.StatusUnprocessableEntity, after.status, "%s", after.body)
	require.Equal(t, messages.CodeKeyReused, after.problem(t).Code)

	got := do(t, http.MethodGet, b.srv.URL+"/v1/results/"+key, nil)
	require.Equal(t, int64(100), amountOf(t, got.answer(t)), "the outcome did not change")
	require.Len(t, b.charges(t), 1)
	require.Equal(t, int64(1), b.env.SimCalls(t, key))
}

func amountOf(t *testing.T, res messages.Result) int64 {
	t.Helper()
	var d messages.ChargeData
	require.NoError(t, json.Unmarshal(res.Data, &d))
	return d.Amount
}

// TestGateway_InFlight: while the first request with a key is in flight,
// the same request gets 409 at once, from this gateway or another one (no
// gateway remembers anything), and another body gets 422; once the first
// has its outcome, a repeat is its replay.
func TestGateway_InFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{Sim: sim.Config{Latency: 3 * time.Second}}, nil)
	_, other := b.newGateway(t, nil)
	key := newKey()
	done := make(chan *response, 1)
	go func() { done <- postAsync(b.srv.URL+"/v1/payments", key, mustJSON(chargeBody("acct_42", 100))) }()
	loadtest.WaitFor(t, 5*time.Second, func() bool { return b.env.CommandsStored(t) == 1 }, "the first request's command was not stored")

	for _, srv := range []string{b.srv.URL, other.URL} {
		start := time.Now()
		r := do(t, http.MethodPost, srv+"/v1/payments", mustJSON(chargeBody("acct_42", 100)),
			"Content-Type", "application/json", HeaderIdempotencyKey, key)
		require.Equal(t, http.StatusConflict, r.status, "%s", r.body)
		require.Equal(t, CodeRequestInFlight, r.problem(t).Code)
		require.Equal(t, "1", r.header.Get("Retry-After"))
		require.Less(t, time.Since(start), 2*time.Second, "409 comes at once")
	}
	r := postTo(t, other, "/v1/payments", key, chargeBody("acct_42", 5))
	require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
	require.Equal(t, messages.CodeKeyReused, r.problem(t).Code)

	first := <-done
	require.NoError(t, first.err)
	require.Equal(t, http.StatusCreated, first.status, "%s", first.body)
	again := postTo(t, other, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, http.StatusCreated, again.status)
	require.True(t, again.replayed())
	require.Equal(t, string(first.body), string(again.body))
	require.Len(t, b.charges(t), 1)
}

// TestGateway_Concurrent: two requests with one key at the same time, on
// two gateways: one gets 201 (or 202), the other 409 or the replay, and the
// provider's ledger holds exactly one charge per key.
func TestGateway_Concurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{Workers: 2}, nil)
	_, other := b.newGateway(t, nil)
	const keys = 20
	statuses := map[int]int{}
	for range keys {
		key := newKey()
		var wg sync.WaitGroup
		var rs [2]*response
		for i, srv := range []string{b.srv.URL, other.URL} {
			wg.Go(func() { rs[i] = postAsync(srv+"/v1/payments", key, mustJSON(chargeBody("acct_42", 250))) })
		}
		wg.Wait()
		require.NoError(t, rs[0].err)
		require.NoError(t, rs[1].err)
		var firsts, seconds int
		for _, r := range rs {
			statuses[r.status]++
			switch {
			case (r.status == http.StatusCreated || r.status == http.StatusAccepted) && !r.replayed():
				firsts++
			case r.status == http.StatusConflict, r.status == http.StatusCreated && r.replayed():
				seconds++
			}
		}
		require.Equal(t, 1, firsts, "one first answer: %d %s / %d %s", rs[0].status, rs[0].body, rs[1].status, rs[1].body)
		require.Equal(t, 1, seconds, "one 409 or replay: %d %s / %d %s", rs[0].status, rs[0].body, rs[1].status, rs[1].body)
	}
	t.Logf("statuses of %d pairs: %v", keys, statuses)
	calls, charges := b.env.SimLedger(t)
	require.Len(t, charges, keys, "exactly one charge per key in sim:charges")
	for k, n := range calls {
		require.Equal(t, int64(1), n, "provider calls for %s", k)
	}
}

// TestGateway_Accepted: no answer within Wait gives 202 with Location; the
// command still runs, GET then has its outcome, and a repeat replays it.
func TestGateway_Accepted(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{Workers: -1}, &Config{Wait: 300 * time.Millisecond})
	key := newKey()
	r := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	require.Equal(t, "/v1/results/"+key, r.header.Get("Location"))
	require.Equal(t, "1", r.header.Get("Retry-After"))
	var a acceptedBody
	require.NoError(t, json.Unmarshal(r.body, &a))
	require.Equal(t, acceptedBody{Key: key, Command: messages.KindPaymentCharge, Status: "accepted", Location: "/v1/results/" + key, Detail: a.Detail}, a)

	// Still in flight, with nobody to run it.
	require.Equal(t, http.StatusConflict, b.post(t, "/v1/payments", key, chargeBody("acct_42", 100)).status)
	_, err := b.env.StartWorker(nil)
	require.NoError(t, err)
	var got *response
	loadtest.WaitFor(t, 10*time.Second, func() bool {
		got = do(t, http.MethodGet, b.srv.URL+r.header.Get("Location"), nil)
		return got.status == http.StatusOK
	})
	again := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, http.StatusCreated, again.status)
	require.True(t, again.replayed())
	require.Equal(t, string(got.body), string(again.body))
	require.Len(t, b.charges(t), 1)
}

// TestGateway_DeadLettered: a command dead-lettered within Wait gets 503
// dead_lettered with Retry-After of the dedupe window; a repeat inside the
// window finds the message gone without an outcome and its dead letter
// saying "none": 503 dead_lettered again. Nothing was charged.
func TestGateway_DeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{
		Processor: processor.Config{MaxTries: 1, Retry: noRetries()},
		Sim:       sim.Config{FailureRate: 1},
	}, nil)
	key := newKey()
	for _, attempt := range []string{"first", "repeat"} {
		r := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
		require.Equal(t, http.StatusServiceUnavailable, r.status, "%s: %s", attempt, r.body)
		require.Equal(t, messages.CodeDeadLettered, r.problem(t).Code, attempt)
		require.Equal(t, "120", r.header.Get("Retry-After"), "the dedupe window, 2m")
	}
	require.Empty(t, b.charges(t))
}

// TestGateway_EndedWithoutOutcome: a key whose earlier command left the
// command stream with no outcome gets 504 outcome_unknown unless a dead
// letter says the operation did not take effect: never an answer that
// claims "not done" without proof.
func TestGateway_EndedWithoutOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{Workers: -1}, nil)
	ctx := testCtx(t)
	top := b.env.Config.Topology
	body := mustJSON(chargeBody("acct_42", 100))
	// A command another client published, that then left the stream
	// without an outcome (what a rejection or a dead letter leaves).
	publishGone := func(key string) uint64 {
		ack, err := b.env.JS.PublishMsg(ctx, &nats.Msg{Subject: top.Subjects.CommandFor(messages.KindPaymentCharge), Data: body,
			Header: nats.Header{messages.HeaderMsgID: []string{key}}})
		require.NoError(t, err)
		s, err := b.env.JS.Stream(ctx, top.CommandStream)
		require.NoError(t, err)
		require.NoError(t, s.DeleteMsg(ctx, ack.Sequence))
		return ack.Sequence
	}
	deadLetter := func(key string, seq uint64, effect string) {
		m := nats.NewMsg(top.Subjects.DeadLetterFor(messages.KindPaymentCharge))
		m.Data = body
		m.Header.Set(messages.HeaderMsgID, newKey())
		m.Header.Set(messages.HeaderDlqKey, key)
		m.Header.Set(messages.HeaderDlqStreamSeq, strconv.FormatUint(seq, 10))
		m.Header.Set(messages.HeaderDlqEffect, effect)
		_, err := b.env.JS.PublishMsg(ctx, m)
		require.NoError(t, err)
	}

	noLetter := newKey()
	publishGone(noLetter)
	r := b.post(t, "/v1/payments", noLetter, body)
	require.Equal(t, http.StatusGatewayTimeout, r.status, "%s", r.body)
	require.Equal(t, messages.CodeOutcomeUnknown, r.problem(t).Code)
	require.Equal(t, "120", r.header.Get("Retry-After"))

	for effect, want := range map[string]int{"unknown": http.StatusGatewayTimeout, "none": http.StatusServiceUnavailable} {
		key := newKey()
		seq := publishGone(key)
		deadLetter(newKey(), seq, "none") // another key's, never matched
		deadLetter(key, seq, effect)
		r := b.post(t, "/v1/payments", key, body)
		require.Equal(t, want, r.status, "%s: %s", effect, r.body)
	}
}

// TestGateway_AcceptedNeedsItsRecord: a 202 promises that its Location
// answers (pending, then the outcome), never 404, and the record that
// keeps that promise lives in the state bucket. Found by the fault
// explorer (seed 17, the gateway's link hung while it wrote the record):
// the gateway answered 202 anyway, and its Location said 404 for good once
// the command was dead-lettered. A record that cannot be written now gets
// 503, and the same request again is answered from what NATS holds.
func TestGateway_AcceptedNeedsItsRecord(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	b := &testBundle{env: env}
	bucket := env.NS + "_blocked"
	// A stream that holds the bucket's subjects: the bucket cannot be made.
	_, err := env.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: env.NS + "_blocker", Subjects: []string{"$KV." + bucket + ".>"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = env.JS.DeleteStream(context.WithoutCancel(t.Context()), env.NS+"_blocker") })
	_, srv := b.newGateway(t, &Config{Wait: 200 * time.Millisecond, StateBucket: bucket})

	key := newKey()
	r := postTo(t, srv, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, http.StatusServiceUnavailable, r.status, "no 202 without its record: %s", r.body)
	p := r.problem(t)
	require.Equal(t, CodeServiceUnavailable, p.Code)
	require.Contains(t, p.Detail, "was accepted")
	require.Equal(t, "1", r.header.Get("Retry-After"))
	// The same request again meets the stored command: in flight.
	require.Equal(t, http.StatusConflict, postTo(t, srv, "/v1/payments", key, chargeBody("acct_42", 100)).status)
}

// TestGateway_NotAccepted: without a stream for the command, 503 once the
// client's retries run out; with a publish that nothing confirms, 504
// publish_unconfirmed (it may have been accepted).
func TestGateway_NotAccepted(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	b := &testBundle{env: env}

	// Wait outlasts the client's retries (5, about 1.3s of backoff), so
	// the answer is the last attempt's "no stream". With a shorter Wait an
	// attempt can be in flight when the request's time runs out: that one
	// may have been stored, and the honest answer is 504, not 503 (CI saw
	// it on a loaded machine).
	env.Config.Topology.Subjects.Command = env.NS + ".nowhere"
	_, srv := b.newGateway(t, &Config{Wait: 10 * time.Second})
	r := postTo(t, srv, "/v1/payments", newKey(), chargeBody("acct_42", 1))
	require.Equal(t, http.StatusServiceUnavailable, r.status, "%s", r.body)
	require.Equal(t, CodeServiceUnavailable, r.problem(t).Code)

	// A responder that never answers: the PubAck never comes.
	env.Config.Topology.Subjects.Command = env.NS + ".void"
	sub, err := env.NC.SubscribeSync(env.NS + ".void.>")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_, srv = b.newGateway(t, &Config{Wait: time.Second, PublishTimeout: 200 * time.Millisecond})
	r = postTo(t, srv, "/v1/payments", newKey(), chargeBody("acct_42", 1))
	require.Equal(t, http.StatusGatewayTimeout, r.status, "%s", r.body)
	require.Equal(t, CodePublishUnconfirmed, r.problem(t).Code)
}

// TestGateway_Rejections maps the rejections a worker can answer; those
// the gateway's own checks make impossible from HTTP are written here
// directly.
func TestGateway_Rejections(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, nil)
	for code, status := range map[string]int{
		messages.CodeOutcomeUnknown: http.StatusGatewayTimeout, messages.CodeDeadLettered: http.StatusServiceUnavailable,
		messages.CodeUnknownCommand: http.StatusNotImplemented, messages.CodeInvalidPayload: http.StatusBadRequest,
		messages.CodePayloadTooLarge: http.StatusRequestEntityTooLarge, messages.CodeKeyReused: http.StatusUnprocessableEntity,
		"some_new_code": http.StatusGatewayTimeout,
	} {
		rec := &recorder{header: http.Header{}}
		key := newKey()
		b.gw.writeRejection(context.Background(), rec, opKey{client: key, op: key}, &messages.RejectError{Code: code, Message: "m"})
		require.Equal(t, status, rec.status, code)
	}
}

// recorder is a minimal http.ResponseWriter for TestGateway_Rejections.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.status = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
