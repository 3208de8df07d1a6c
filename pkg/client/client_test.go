package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// rawCommand is a Command whose body is sent verbatim, to send what the
// typed requests cannot: unknown fields, unknown types, huge bodies.
type rawCommand struct {
	kind string
	body json.RawMessage
}

func (r rawCommand) Kind() string                 { return r.kind }
func (rawCommand) Validate() error                { return nil }
func (r rawCommand) MarshalJSON() ([]byte, error) { return r.body, nil }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func charge(amount int64) messages.ChargeRequest {
	return messages.ChargeRequest{AccountID: "acct_42", Amount: amount, Currency: "EUR", Description: "order 1001"}
}

func TestNewKey(t *testing.T) {
	t.Parallel()

	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		k := client.NewKey()
		require.True(t, messages.ValidKey(k), k)
		u, err := uuid.Parse(k)
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), u.Version())
		require.False(t, seen[k], "duplicate key %s", k)
		seen[k] = true
		// v7 keys of one process sort by creation time.
		require.Less(t, prev, k)
		prev = k
	}
}

func TestNew(t *testing.T) {
	t.Parallel()

	t.Run("NilConn", func(t *testing.T) {
		t.Parallel()
		_, err := client.New(nil, nil)
		require.ErrorContains(t, err, "nil *nats.Conn")
	})
	t.Run("InvalidConfig", func(t *testing.T) {
		t.Parallel()
		env, err := testenv.Shared()
		require.NoError(t, err)
		nc, err := testenv.ConnectNATS(env.NATSURL, "config")
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		for field, cfg := range map[string]*client.Config{
			"PublishTimeout":    {PublishTimeout: -time.Second},
			"ResultStream":      {Topology: messages.Topology{ResultStream: "RESULTS.x"}},
			"Subjects.Result":   {Topology: messages.Topology{Subjects: messages.Subjects{Result: "result.>"}}},
			"Retry.MaxInterval": {Retry: client.RetryConfig{InitialInterval: time.Minute, MaxInterval: time.Second}},
		} {
			_, err := client.New(nc, cfg)
			require.ErrorContains(t, err, field)
		}
	})
	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		cfg := (*client.Config)(nil).WithDefaults()
		require.Equal(t, messages.DefaultTopology(), cfg.Topology)
		require.Equal(t, client.PublishTimeoutDefault, cfg.PublishTimeout)
		require.Equal(t, client.ResultTimeoutDefault, cfg.ResultTimeout)
		require.Equal(t, client.RetryMaxRetriesDefault, cfg.Retry.MaxRetries)
		require.NotNil(t, cfg.Logger)
	})
}

func TestClient_Charge(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		env *loadtest.Env
		c   *client.Client
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		env := loadtest.Setup(t, nil)
		return &testBundle{env: env, c: env.MustClient(t, nil)}
	}

	t.Run("Succeeded", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		key := client.NewKey()

		res, err := b.c.Charge(testCtx(t), key, charge(1999))
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, res.Result.Status)
		require.Equal(t, key, res.Result.Key)
		require.Equal(t, messages.KindPaymentCharge, res.Result.Kind)
		require.False(t, res.Result.Replayed)
		require.Equal(t, 1, res.Result.Attempts)
		require.False(t, res.Duplicate)
		// The worker publishes on result.<key>, then answers Reply-To.
		require.Contains(t, []client.Source{client.SourceResultSubject, client.SourceReplyTo}, res.Source)
		require.Equal(t, b.env.Config.Topology.CommandStream, res.Stream)
		require.Equal(t, uint64(1), res.Sequence)
		require.Equal(t, 1, res.PublishAttempts)
		require.Positive(t, res.Latency)
		require.True(t, strings.HasPrefix(res.Data.ChargeID, "ch_"), res.Data.ChargeID)
		require.Equal(t, messages.ChargeData{ChargeID: res.Data.ChargeID, AccountID: "acct_42", Amount: 1999, Currency: "EUR"}, res.Data)
		require.Equal(t, int64(1), b.env.SimCalls(t, key))
	})

	t.Run("FailedIsAResultAndAnError", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		key := client.NewKey()
		req := charge(500)
		req.AccountID = layout.SimDeclinePrefix + "_7"

		res, err := b.c.Charge(testCtx(t), key, req)
		require.ErrorIs(t, err, client.ErrFailed)
		var failed *client.FailedError
		require.ErrorAs(t, err, &failed)
		require.Equal(t, messages.CodeCardDeclined, failed.Code)
		require.NotNil(t, res)
		require.Equal(t, messages.StatusFailed, res.Result.Status)
		require.Equal(t, messages.CodeCardDeclined, res.Result.Code)
		require.Zero(t, res.Data)

		// The failure is the key's outcome: stored, and returned again.
		stored := waitStored(t, b.c, key)
		require.Equal(t, messages.StatusFailed, stored.Status)
		again, err := b.c.Charge(testCtx(t), key, req)
		require.ErrorIs(t, err, client.ErrFailed)
		require.True(t, again.Duplicate)
		require.Equal(t, res.Result.ProcessedAt, again.Result.ProcessedAt)
		require.Equal(t, int64(1), b.env.SimCalls(t, key))

		// A failure binds the key too: another amount is refused.
		req.Amount++
		_, err = b.c.Charge(testCtx(t), key, req)
		require.ErrorIs(t, err, client.ErrKeyReused)
	})
}

func TestClient_AddToCart(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)
	ctx := testCtx(t)

	first, err := c.AddToCart(ctx, client.NewKey(), messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2})
	require.NoError(t, err)
	require.Equal(t, messages.CartAddData{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 2}, first.Data)

	key := client.NewKey()
	second, err := c.AddToCart(ctx, key, messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 3})
	require.NoError(t, err)
	require.Equal(t, int64(5), second.Data.Quantity)

	// A retry of the second add does not add again: it returns its outcome.
	retry, err := c.AddToCart(ctx, key, messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-RED-M", Quantity: 3})
	require.NoError(t, err)
	require.True(t, retry.Duplicate)
	require.Equal(t, int64(5), retry.Data.Quantity)
	qty, err := env.RDB.HGet(ctx, layout.Cart(env.Config.KeyPrefix, "cart_7"), "SKU-RED-M").Int64()
	require.NoError(t, err)
	require.Equal(t, int64(5), qty)
}

// TestClient_Send_ResultBeforeListen: the outcome is published before the
// client subscribes; the client's publish is a duplicate that never reaches
// a worker, and the answer comes from the result stream.
func TestClient_Send_ResultBeforeListen(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)
	ctx := testCtx(t)
	key := client.NewKey()

	// Another process published the command and went away.
	body, err := json.Marshal(charge(1999))
	require.NoError(t, err)
	_, err = env.JS.Publish(ctx, env.Config.Topology.Subjects.CommandFor(messages.KindPaymentCharge), body, jetstream.WithMsgID(key))
	require.NoError(t, err)
	stored := waitStored(t, c, key)

	res, err := c.Charge(ctx, key, charge(1999))
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	require.Equal(t, client.SourceResultStream, res.Source)
	require.Equal(t, *stored, res.Result)
	require.Equal(t, int64(1999), res.Data.Amount)
	require.Equal(t, uint64(1), env.CommandsStored(t))
	require.Equal(t, int64(1), env.SimCalls(t, key))
}

// TestClient_Send_LostAck: the PubAck of the first publish is lost on the
// way back; the client publishes again with the same key, JetStream drops
// the copy, and the one command is processed once.
//
// With a negative DuplicateWait too: the duplicate is of the Send's own
// lost attempt, whose answer is waited for.
func TestClient_Send_LostAck(t *testing.T) {
	t.Parallel()
	for name, wait := range map[string]time.Duration{"DuplicateWaitDefault": 0, "DuplicateWaitNegative": -1} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testLostAck(t, wait)
		})
	}
}

func testLostAck(t *testing.T, duplicateWait time.Duration) {
	t.Helper()
	env := loadtest.Setup(t, nil)
	key := client.NewKey()
	proxy := newAckLossProxy(t, env.NATSURL, messages.HeaderMsgID+": "+key)

	nc, err := nats.Connect(proxy.URL(), nats.Timeout(5*time.Second))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cfg := env.ClientConfig()
	cfg.PublishTimeout = 300 * time.Millisecond
	cfg.Retry = client.RetryConfig{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond}
	cfg.DuplicateWait = duplicateWait
	c, err := client.New(nc, cfg)
	require.NoError(t, err)

	res, err := c.Charge(testCtx(t), key, charge(2500))
	require.NoError(t, err)
	select {
	case <-proxy.Retried():
	default:
		t.Fatal("the proxy never saw a retry")
	}
	require.Equal(t, 2, res.PublishAttempts)
	require.True(t, res.Duplicate, "the retry must be JetStream's duplicate of the lost attempt")
	require.Equal(t, uint64(1), res.Sequence)
	require.Equal(t, messages.StatusSucceeded, res.Result.Status)
	require.False(t, res.Result.Replayed)
	require.Equal(t, uint64(1), env.CommandsStored(t), "one command stored")
	require.Equal(t, int64(1), env.SimCalls(t, key), "one provider call")
	_, charges := env.SimLedger(t)
	require.Len(t, charges, 1)
}

// TestClient_Send_ValidatesBeforePublishing: what the client can tell is
// wrong never leaves it.
func TestClient_Send_ValidatesBeforePublishing(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)
	ctx := testCtx(t)

	for name, tc := range map[string]struct {
		key  string
		cmd  messages.Command
		want error
	}{
		"InvalidKey":        {"not-a-uuid", charge(1), client.ErrInvalidKey},
		"UpperCaseKey":      {strings.ToUpper(client.NewKey()), charge(1), client.ErrInvalidKey},
		"EmptyKey":          {"", charge(1), client.ErrInvalidKey},
		"ZeroAmount":        {client.NewKey(), charge(0), client.ErrInvalidPayload},
		"LowerCaseCurrency": {client.NewKey(), messages.ChargeRequest{AccountID: "a", Amount: 1, Currency: "eur"}, client.ErrInvalidPayload},
		"QuantityTooLarge":  {client.NewKey(), messages.CartAddRequest{CartID: "c", SKU: "s", Quantity: 1001}, client.ErrInvalidPayload},
		"NilCommand":        {client.NewKey(), nil, client.ErrInvalidPayload},
		"InvalidJSON":       {client.NewKey(), rawCommand{kind: "payment.charge", body: json.RawMessage(`{`)}, client.ErrInvalidPayload},
		"PayloadTooLarge":   {client.NewKey(), rawCommand{kind: "payment.charge", body: bigBody()}, client.ErrPayloadTooLarge},
	} {
		reply, err := c.Send(ctx, tc.key, tc.cmd)
		require.ErrorIs(t, err, tc.want, name)
		require.Nil(t, reply, name)
	}
	require.Equal(t, uint64(0), env.CommandsStored(t), "nothing published")
}

// waitStored polls Status until the key's outcome is stored. The result
// stream stores a message a moment after the server routes it to
// subscribers, so an answer can arrive before Status can read it.
func waitStored(t *testing.T, c *client.Client, key string) *messages.Result {
	t.Helper()
	var res *messages.Result
	loadtest.WaitFor(t, 10*time.Second, func() bool {
		var err error
		res, err = c.Status(context.Background(), key)
		if !errors.Is(err, client.ErrNotFound) {
			require.NoError(t, err)
		}
		return err == nil
	}, "no stored outcome for %s", key)
	return res
}

func bigBody() json.RawMessage {
	return json.RawMessage(`{"account_id":"acct_42","amount":1,"currency":"EUR","description":"` +
		strings.Repeat("x", messages.MaxBodySize) + `"}`)
}

// TestClient_Send_Rejections: every rejection a worker answers maps to its
// sentinel, and the key's state does not change.
func TestClient_Send_Rejections(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)

	for name, tc := range map[string]struct {
		cmd  messages.Command
		want error
		msg  string
	}{
		"InvalidPayload": {
			rawCommand{kind: messages.KindPaymentCharge, body: json.RawMessage(`{"account_id":"a","amount":1,"currency":"EUR","tip":5}`)},
			client.ErrInvalidPayload, `"tip"`,
		},
		"IntegerWithFraction": {
			rawCommand{kind: messages.KindCartAdd, body: json.RawMessage(`{"cart_id":"c","sku":"s","quantity":1.5}`)},
			client.ErrInvalidPayload, "quantity",
		},
		"UnknownCommand": {
			rawCommand{kind: "payment.capture", body: json.RawMessage(`{"charge_id":"ch_1"}`)},
			client.ErrUnknownCommand, "payment.capture",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := client.NewKey()
			reply, err := c.Send(testCtx(t), key, tc.cmd)
			require.ErrorIs(t, err, tc.want)
			var rej *messages.RejectError
			require.ErrorAs(t, err, &rej)
			require.Contains(t, rej.Message, tc.msg)
			require.NotNil(t, reply)
			require.Equal(t, messages.StatusRejected, reply.Result.Status)
			require.Equal(t, client.SourceReplyTo, reply.Source)
			_, err = c.Status(testCtx(t), key)
			require.ErrorIs(t, err, client.ErrNotFound, "a rejection is never stored")
		})
	}

	// The client refuses a body this large, so publish it by hand, as a
	// client in another language might.
	t.Run("PayloadTooLarge", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		key := client.NewKey()
		answers := make(chan *nats.Msg, 4)
		sub, err := env.NC.ChanSubscribe(env.Config.Topology.Subjects.RejectedFor(key), answers)
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		_, err = env.JS.Publish(ctx, env.Config.Topology.Subjects.CommandFor(messages.KindPaymentCharge), bigBody(), jetstream.WithMsgID(key))
		require.NoError(t, err)
		select {
		case m := <-answers:
			res, err := messages.DecodeResult(m.Data)
			require.NoError(t, err)
			require.ErrorIs(t, client.ResultError(&res), client.ErrPayloadTooLarge)
		case <-ctx.Done():
			t.Fatal("no rejection")
		}
	})

	// Inside the dedupe window JetStream drops the second publish, so no
	// worker sees it; the client notices that the stored outcome is another
	// command's and refuses to pass it off as this one's.
	t.Run("KeyReusedInsideWindow", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		key := client.NewKey()
		_, err := c.Charge(ctx, key, charge(100))
		require.NoError(t, err)

		res, err := c.Charge(ctx, key, charge(200))
		require.ErrorIs(t, err, client.ErrKeyReused)
		require.True(t, res.Duplicate)
		require.Empty(t, res.Result.Status, "no answer may be passed off as this command's")

		_, err = c.AddToCart(ctx, key, messages.CartAddRequest{CartID: "c", SKU: "s", Quantity: 1})
		require.ErrorIs(t, err, client.ErrKeyReused)
		require.Equal(t, int64(1), env.SimCalls(t, key))
	})
}

// TestClient_Send_KeyReused: past the dedupe window the reused key reaches
// a worker, which refuses it.
func TestClient_Send_KeyReused(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 200 * time.Millisecond}})
	c := env.MustClient(t, nil)
	ctx := testCtx(t)
	key := client.NewKey()
	first, err := c.Charge(ctx, key, charge(100))
	require.NoError(t, err)

	var reply *client.ChargeResult
	loadtest.WaitFor(t, 10*time.Second, func() bool {
		reply, err = c.Charge(ctx, key, charge(200))
		return !reply.Duplicate
	}, "every publish stayed inside the dedupe window")
	require.ErrorIs(t, err, client.ErrKeyReused)
	// The worker's refusal of this message: on its inbox, or on
	// rejected.<key> with its fingerprint, whichever came first.
	require.Contains(t, []client.Source{client.SourceReplyTo, client.SourceRejectedSubject}, reply.Source)
	require.Equal(t, messages.StatusRejected, reply.Result.Status)
	require.Equal(t, messages.Fingerprint(charge(200)), reply.Result.Fingerprint)

	// The key's outcome is unchanged, and a true retry past the window is
	// replayed by the worker.
	stored := waitStored(t, c, key)
	require.Equal(t, first.Result.ProcessedAt, stored.ProcessedAt)
	require.Equal(t, first.Result.Data, stored.Data)
	loadtest.WaitFor(t, 10*time.Second, func() bool {
		reply, err = c.Charge(ctx, key, charge(100))
		return !reply.Duplicate
	})
	require.NoError(t, err)
	require.True(t, reply.Result.Replayed)
	require.Equal(t, first.Data, reply.Data)
	require.Equal(t, first.Result.ProcessedAt, reply.Result.ProcessedAt)
	require.Equal(t, int64(1), env.SimCalls(t, key))
}

// TestClient_Send_ReuseLearntFromTheLookup: a re-use past the dedupe
// window whose message a worker holds (paused after the lock) when the
// client's wait ends. The key is bound to the first body, so the message
// can only be refused: the lookup says so, and Send returns ErrKeyReused,
// not ErrResultTimeout (on which the gateway answered 202 and then, on
// its Location, the first body's outcome: found by the fault explorer,
// seed 138).
func TestClient_Send_ReuseLearntFromTheLookup(t *testing.T) {
	t.Parallel()
	var hold atomic.Bool
	env := loadtest.Setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 200 * time.Millisecond,
		Failpoint: func(at processor.Failpoint, _ string) bool {
			if at == processor.AfterLock && hold.Load() {
				time.Sleep(2 * time.Second) // a paused worker
			}
			return false
		}}})
	c := env.MustClient(t, nil)
	ctx := testCtx(t)
	key := client.NewKey()
	_, err := c.Charge(ctx, key, charge(100))
	require.NoError(t, err)
	hold.Store(true)
	time.Sleep(300 * time.Millisecond) // past the dedupe window

	cfg := env.ClientConfig()
	cfg.ResultTimeout = 500 * time.Millisecond
	reply, err := env.MustClient(t, cfg).Charge(ctx, key, charge(200))
	require.ErrorIs(t, err, client.ErrKeyReused)
	require.False(t, reply.Duplicate, "a message of its own, past the window")
	require.Equal(t, client.SourceLookup, reply.Source)
	require.Equal(t, messages.Fingerprint(charge(200)), reply.Result.Fingerprint, "its own message's refusal")
	require.Equal(t, int64(1), env.SimCalls(t, key))
}

func TestClient_Send_DeadLettered(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{
		Processor: processor.Config{MaxTries: 1, Retry: noRetries()},
		Sim:       sim.Config{FailureRate: 1},
	})
	c := env.MustClient(t, nil)
	key := client.NewKey()

	res, err := c.Charge(testCtx(t), key, charge(100))
	require.ErrorIs(t, err, client.ErrDeadLettered)
	require.Equal(t, messages.StatusRejected, res.Result.Status)
	_, err = c.Status(testCtx(t), key)
	require.ErrorIs(t, err, client.ErrNotFound)
}

func TestClient_Send_NoStream(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	cfg := env.ClientConfig()
	cfg.Topology.Subjects.Command = env.NS + ".nowhere"
	cfg.Retry = client.RetryConfig{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxRetries: 2}
	c := env.MustClient(t, cfg)

	reply, err := c.Charge(testCtx(t), client.NewKey(), charge(100))
	require.ErrorIs(t, err, client.ErrNoStream)
	require.Nil(t, reply)
	require.Contains(t, err.Error(), "3 attempts")
}

func TestClient_Send_ResultTimeout(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	cfg := env.ClientConfig()
	cfg.ResultTimeout = 200 * time.Millisecond
	c := env.MustClient(t, cfg)
	ctx := testCtx(t)
	key := client.NewKey()

	reply, err := c.Charge(ctx, key, charge(100))
	require.ErrorIs(t, err, client.ErrResultTimeout)
	require.False(t, reply.Duplicate)
	require.Empty(t, reply.Result.Status)

	// The command is stored: once a worker runs, the same key's retry
	// returns its outcome.
	_, err = env.StartWorker(nil)
	require.NoError(t, err)
	patient := env.MustClient(t, nil)
	res, err := patient.Charge(ctx, key, charge(100))
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	require.Equal(t, messages.StatusSucceeded, res.Result.Status)
	require.Equal(t, int64(1), env.SimCalls(t, key))

	// A cancelled context ends the wait with its cause.
	cctx, cancel := context.WithCancelCause(ctx)
	stop := errors.New("caller gave up")
	cancel(stop)
	_, err = c.Charge(cctx, client.NewKey(), charge(1))
	require.ErrorIs(t, err, stop)
}

// TestClient_Send_ResultTimeoutBoundsStreamReads: after a duplicate PubAck
// the client reads the key's stored outcome from RESULTS; a read whose
// reply never comes (the server stopped between the two, as the chaos
// suite's nats-term scenario found) must not hold Send past ResultTimeout,
// whatever the caller's deadline.
func TestClient_Send_ResultTimeoutBoundsStreamReads(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	key := client.NewKey()
	first := env.MustClient(t, nil)
	pctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	reply, _ := first.Charge(pctx, key, charge(100)) // stored; no worker answers it
	require.NotNil(t, reply, "the first publish was acknowledged")

	proxy := newSilenceProxy(t, env.NATSURL, `"duplicate": true`)
	nc, err := nats.Connect(proxy.URL(), nats.Timeout(5*time.Second))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cfg := env.ClientConfig()
	cfg.PublishTimeout, cfg.ResultTimeout = 500*time.Millisecond, time.Second
	c, err := client.New(nc, cfg)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	reply, err = c.Charge(ctx, key, charge(100))
	require.ErrorIs(t, err, client.ErrResultTimeout)
	require.True(t, reply.Duplicate)
	select {
	case <-proxy.Silent():
	default:
		t.Fatal("the proxy never went silent")
	}
	require.Less(t, time.Since(start), 5*time.Second, "bounded by ResultTimeout and PublishTimeout, not by the caller's minute")
}

func TestClient_Status(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)
	ctx := testCtx(t)

	_, err := c.Status(ctx, "nope")
	require.ErrorIs(t, err, client.ErrInvalidKey)
	_, err = c.Status(ctx, client.NewKey())
	require.ErrorIs(t, err, client.ErrNotFound)

	key := client.NewKey()
	res, err := c.Charge(ctx, key, charge(42))
	require.NoError(t, err)
	require.Equal(t, res.Result, *waitStored(t, c, key))

	// Direct gets, when the stream allows them (nats-server 2.9+), read the
	// same outcome.
	rs, err := env.JS.Stream(ctx, env.Config.Topology.ResultStream)
	require.NoError(t, err)
	sc := rs.CachedInfo().Config
	sc.AllowDirect = true
	_, err = env.JS.UpdateStream(ctx, sc)
	require.NoError(t, err)
	direct, err := env.MustClient(t, nil).Status(ctx, key)
	require.NoError(t, err)
	require.Equal(t, res.Result, *direct)

	// Without the result stream (before any worker created it), the
	// workers' lookup service still has the outcome; a key it does not
	// know is not found.
	cfg := env.ClientConfig()
	cfg.Topology.ResultStream = env.NS + "_NOSUCH"
	viaLookup, err := env.MustClient(t, cfg).Status(ctx, key)
	require.NoError(t, err)
	require.Equal(t, res.Result.Data, viaLookup.Data)
	_, err = env.MustClient(t, cfg).Status(ctx, client.NewKey())
	require.ErrorIs(t, err, client.ErrNotFound)
}

// TestClient_Status_AfterResultsMaxAge: workers with RESULTS_MAX_AGE
// shorter than RESULT_TTL keep an outcome's message in the result stream
// only that long; Status still returns the outcome afterwards, from the
// key's record through the lookup service.
func TestClient_Status_AfterResultsMaxAge(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Processor: processor.Config{
		DedupeWindow: 500 * time.Millisecond, ResultsMaxAge: time.Second}})
	c := env.MustClient(t, nil)
	ctx := testCtx(t)

	rs, err := env.JS.Stream(ctx, env.Config.Topology.ResultStream)
	require.NoError(t, err)
	require.Equal(t, time.Second, rs.CachedInfo().Config.MaxAge)

	key := client.NewKey()
	res, err := c.Charge(ctx, key, charge(43))
	require.NoError(t, err)
	require.Equal(t, res.Result, *waitStored(t, c, key))
	require.Eventually(t, func() bool {
		_, err := rs.GetLastMsgForSubject(ctx, env.Config.Topology.Subjects.ResultFor(key))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	}, 15*time.Second, 100*time.Millisecond, "the outcome's message outlived RESULTS_MAX_AGE")

	got, err := c.Status(ctx, key)
	require.NoError(t, err)
	require.Equal(t, res.Result.Status, got.Status)
	require.Equal(t, res.Result.Key, got.Key)
	require.JSONEq(t, string(res.Result.Data), string(got.Data))

	// A re-send after the dedupe window is answered from the record too.
	again, err := c.Charge(ctx, key, charge(43))
	require.NoError(t, err)
	require.JSONEq(t, string(res.Result.Data), string(again.Result.Data))
}

// noRetries is a policy that gives up a delivery at its first error.
func noRetries() *processor.Policy {
	b := processor.Backoff{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxElapsedTime: time.Second}
	return &processor.Policy{Transient: b, Ambiguous: b, RateLimited: b}
}

// TestClient_Send_DuplicateWait: with a negative DuplicateWait, a publish
// that JetStream drops as a duplicate of a message still in flight returns
// at once, naming the earlier message; once that message has an outcome,
// the same call returns it.
func TestClient_Send_DuplicateWait(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	cfg := env.ClientConfig()
	cfg.ResultTimeout = 100 * time.Millisecond
	first := env.MustClient(t, cfg)
	cfg = env.ClientConfig()
	cfg.DuplicateWait = -1
	eager := env.MustClient(t, cfg)
	ctx := testCtx(t)
	key := client.NewKey()

	reply, err := first.Charge(ctx, key, charge(100))
	require.ErrorIs(t, err, client.ErrResultTimeout)
	require.False(t, reply.Duplicate)

	start := time.Now()
	again, err := eager.Charge(ctx, key, charge(100))
	require.ErrorIs(t, err, client.ErrResultTimeout)
	require.Less(t, time.Since(start), 5*time.Second, "a negative DuplicateWait does not wait for the answer")
	require.True(t, again.Duplicate)
	require.Equal(t, reply.Sequence, again.Sequence, "the Reply names the earlier message")
	require.Empty(t, again.Result.Status)

	_, err = env.StartWorker(nil)
	require.NoError(t, err)
	waitStored(t, eager, key)
	// Status may find the outcome by key (the lookup service reads the
	// Redis record) a moment before the worker's RESULTS publish lands:
	// wait for RESULTS, which the duplicate below must be answered from.
	rs, err := env.JS.Stream(ctx, env.Config.Topology.ResultStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := rs.GetLastMsgForSubject(ctx, env.Config.Topology.Subjects.ResultFor(key))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the outcome never reached RESULTS")
	res, err := eager.Charge(ctx, key, charge(100))
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	require.Equal(t, client.SourceResultStream, res.Source)
	require.Equal(t, int64(1), env.SimCalls(t, key))
}

// TestClient_Send_SettledBehindUnknown: a Send that reads its answers late
// (a duplicate's lookup that waits on the workers) finds its message's
// outcome_unknown and, queued behind it, the resolver's dead_lettered of
// the same message. It answers dead_lettered: the key is settled, and a
// client told "not known yet" would wait for a resolution it was already
// sent. Before the fix it answered outcome_unknown (seen failing); the
// explorer found it (seed 381, network faults between workers and NATS).
func TestClient_Send_SettledBehindUnknown(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	cfg := env.ClientConfig()
	cfg.ResultTimeout = 5 * time.Second
	c := env.MustClient(t, cfg)
	top := env.Config.Topology
	key := client.NewKey()
	cmd := charge(1999)
	fp := messages.Fingerprint(cmd)

	// An earlier message of the key: the Send below gets a duplicate
	// PubAck, reads RESULTS (nothing) and asks the lookup service.
	_, err := env.JS.PublishMsg(testCtx(t), &nats.Msg{Subject: top.Subjects.CommandFor(cmd.Kind()),
		Header: nats.Header{"Nats-Msg-Id": []string{key}}, Data: []byte(`{}`)})
	require.NoError(t, err)
	// The lookup service answers late; meanwhile both notices reach the
	// Send's subscriptions: the delivery's outcome_unknown, then the
	// resolver's dead_lettered.
	notice := func(code string, at time.Time) []byte {
		return messages.Result{Key: key, Kind: cmd.Kind(), Status: messages.StatusRejected, Code: code,
			Fingerprint: fp, ProcessedAt: at.UTC()}.Marshal()
	}
	now := time.Now()
	sub, err := env.NC.Subscribe(top.Subjects.LookupFor(key), func(m *nats.Msg) {
		// An older message's dead_lettered, arriving late, says nothing of
		// the unknown after it and is passed over; the resolver's, decided
		// after the unknown, settles it.
		_ = env.NC.Publish(top.Subjects.RejectedFor(key), notice(messages.CodeOutcomeUnknown, now))
		_ = env.NC.Publish(top.Subjects.RejectedFor(key), notice(messages.CodeDeadLettered, now.Add(-time.Second)))
		_ = env.NC.Publish(top.Subjects.RejectedFor(key), notice(messages.CodeDeadLettered, now.Add(time.Second)))
		_ = env.NC.Flush()
		time.Sleep(200 * time.Millisecond)
		_ = m.Respond(messages.KeyState{Key: key, State: messages.KeyStateAbsent}.Marshal())
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, env.NC.Flush())

	reply, err := c.Send(testCtx(t), key, cmd)
	require.ErrorIs(t, err, client.ErrDeadLettered)
	require.True(t, reply.Duplicate)
	require.Equal(t, messages.CodeDeadLettered, reply.Result.Code)
	require.Equal(t, client.SourceRejectedSubject, reply.Source)
	require.Equal(t, now.Add(time.Second).UTC().Truncate(time.Millisecond), reply.Result.ProcessedAt.Truncate(time.Millisecond))
}

// TestClient_Send_StaleDeadLetterIsNotThisMessages: a Send that stored a
// new message does not take a dead letter decided before that message
// for its own - a message stored past the dead letter's fence runs again
// and may take effect. The fault explorer found it through the gateway
// (seed 718): a publish repeated on a hung link landed past the fence,
// was told the previous message's dead_lettered from rejected.<key>, and
// its own message then charged. Here no worker runs: the notices and the
// lookup answers are the test's.
func TestClient_Send_StaleDeadLetterIsNotThisMessages(t *testing.T) {
	t.Parallel()
	cmd := charge(2500)
	fp := messages.Fingerprint(cmd)

	// send sends cmd under a new key while rejected.<key> carries a
	// dead_lettered decided at decided (published once the Send's message
	// is stored) and the lookup service says the key's dead letter covers
	// messages stored until deadBefore.
	send := func(t *testing.T, decided, deadBefore func() time.Time) (*client.Reply, error) {
		t.Helper()
		env := loadtest.Setup(t, &loadtest.Options{Workers: -1}) // its own stream: the count below is this Send's
		top := env.Config.Topology
		key := client.NewKey()
		lookup, err := env.NC.Subscribe(top.Subjects.LookupFor(key), func(m *nats.Msg) {
			_ = m.Respond(messages.KeyState{Key: key, State: messages.KeyStateDeadLettered, Kind: cmd.Kind(), Fingerprint: fp,
				DeadBefore: deadBefore()}.Marshal())
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = lookup.Unsubscribe() })
		require.NoError(t, env.NC.Flush())
		stored := env.CommandsStored(t)
		go func() {
			loadtest.WaitFor(t, 5*time.Second, func() bool { return env.CommandsStored(t) > stored })
			time.Sleep(50 * time.Millisecond) // the PubAck is back
			_ = env.NC.Publish(top.Subjects.RejectedFor(key), messages.Result{Key: key, Kind: cmd.Kind(), Status: messages.StatusRejected,
				Code: messages.CodeDeadLettered, Fingerprint: fp, ProcessedAt: decided().UTC()}.Marshal())
		}()
		cfg := env.ClientConfig()
		cfg.ResultTimeout = time.Second
		return env.MustClient(t, cfg).Send(testCtx(t), key, cmd)
	}
	start := time.Now()
	at := func(d time.Duration) func() time.Time { return func() time.Time { return start.Add(d) } }
	// Decided after the PubAck came, however late it is on a loaded machine.
	later := func() time.Time { return time.Now().Add(5 * time.Second) }

	t.Run("DecidedBeforeAndNoLongerCovering", func(t *testing.T) {
		t.Parallel()
		reply, err := send(t, at(-2*time.Second), at(-time.Second))
		require.ErrorIs(t, err, client.ErrResultTimeout, "the message waits for its own answer")
		require.False(t, reply.Duplicate)
		require.Empty(t, reply.Result.Status)
	})
	t.Run("DecidedAfterTheMessage", func(t *testing.T) {
		t.Parallel()
		reply, err := send(t, later, at(-time.Second))
		require.ErrorIs(t, err, client.ErrDeadLettered)
		require.Equal(t, client.SourceRejectedSubject, reply.Source)
	})
	t.Run("DecidedBeforeButStillCovering", func(t *testing.T) {
		t.Parallel()
		reply, err := send(t, at(-2*time.Second), at(time.Minute))
		require.ErrorIs(t, err, client.ErrDeadLettered, "within the fence the message is answered as that dead letter")
		require.Equal(t, client.SourceRejectedSubject, reply.Source)
	})
}

// TestClient_Lookup_DeadBefore: the lookup service tells how long the
// key's dead letter covers the messages of the key (its moment plus the
// workers' DEAD_LETTER_FENCE), which a Send compares with when its own
// message was stored.
func TestClient_Lookup_DeadBefore(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{
		Processor: processor.Config{MaxTries: 1, Retry: noRetries(), DeadLetterFence: 2 * time.Second},
		Sim:       sim.Config{FailureRate: 1},
	})
	c := env.MustClient(t, nil)
	key := client.NewKey()
	res, err := c.Charge(testCtx(t), key, charge(100))
	require.ErrorIs(t, err, client.ErrDeadLettered)
	st, err := c.Lookup(testCtx(t), key)
	require.NoError(t, err)
	require.Equal(t, messages.KeyStateDeadLettered, st.State)
	decided := res.Result.ProcessedAt
	// The fence is counted from a moment just before the notice (the
	// dead letter's copy is stored in between): a second of slack on a
	// loaded machine.
	require.WithinRange(t, st.DeadBefore, decided.Add(time.Second), decided.Add(3*time.Second), "the dead letter's moment plus the fence")
}
