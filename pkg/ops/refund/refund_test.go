package refund_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// charge makes a succeeded charge of amount and returns its key.
func charge(t *testing.T, c *client.Client, account string, amount int64) (string, messages.ChargeData) {
	t.Helper()
	key := client.NewKey()
	res, err := c.Charge(ctxT(t), key, messages.ChargeRequest{AccountID: account, Amount: amount, Currency: "EUR"})
	require.NoError(t, err)
	return key, res.Data
}

func refunded(t *testing.T, env *loadtest.Env, chargeKey string) int64 {
	t.Helper()
	n, err := env.RDB.HGet(context.Background(), layout.SimRefunded(env.Config.KeyPrefix), chargeKey).Int64()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	require.NoError(t, err)
	return n
}

func TestRefund(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 200 * time.Millisecond}})
	c := env.MustClient(t, nil)

	t.Run("FullAndPartial", func(t *testing.T) {
		t.Parallel()
		chargeKey, ch := charge(t, c, "acct_full", 1000)
		first, err := c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 300, Reason: "damaged"})
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, first.Result.Status)
		require.Equal(t, ch.ChargeID, first.Data.ChargeID)
		require.EqualValues(t, 300, first.Data.Amount)
		require.Equal(t, "EUR", first.Data.Currency)
		require.EqualValues(t, 300, first.Data.RefundedTotal)
		require.NotEmpty(t, first.Data.RefundID)

		rest, err := c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 700})
		require.NoError(t, err)
		require.EqualValues(t, 1000, rest.Data.RefundedTotal, "refunded in full")
		require.NotEqual(t, first.Data.RefundID, rest.Data.RefundID)

		_, err = c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 1})
		var failed *client.FailedError
		require.ErrorAs(t, err, &failed)
		require.Equal(t, messages.CodeRefundExceedsCharge, failed.Code, "nothing is left")
		require.EqualValues(t, 1000, refunded(t, env, chargeKey))
	})

	t.Run("ReplayedByKey", func(t *testing.T) {
		t.Parallel()
		chargeKey, _ := charge(t, c, "acct_replay", 500)
		key := client.NewKey()
		req := messages.RefundRequest{ChargeKey: chargeKey, Amount: 200}
		first, err := c.Refund(ctxT(t), key, req)
		require.NoError(t, err)
		time.Sleep(300 * time.Millisecond) // past the dedupe window: a worker replays
		again, err := c.Refund(ctxT(t), key, req)
		require.NoError(t, err)
		require.True(t, again.Result.Replayed)
		require.Equal(t, first.Data, again.Data)
		require.EqualValues(t, 200, refunded(t, env, chargeKey), "refunded once")

		// The same refund key for another amount is a key reused.
		_, err = c.Refund(ctxT(t), key, messages.RefundRequest{ChargeKey: chargeKey, Amount: 201})
		require.ErrorIs(t, err, client.ErrKeyReused)
	})

	t.Run("Failures", func(t *testing.T) {
		t.Parallel()
		declinedKey := client.NewKey()
		_, err := c.Charge(ctxT(t), declinedKey, messages.ChargeRequest{AccountID: layout.SimDeclinePrefix + "_r", Amount: 100, Currency: "EUR"})
		require.ErrorIs(t, err, client.ErrFailed)
		chargeKey, _ := charge(t, c, "acct_fail", 100)
		cartKey := client.NewKey()
		_, err = c.AddToCart(ctxT(t), cartKey, messages.CartAddRequest{CartID: "cart_r", SKU: "S", Quantity: 1})
		require.NoError(t, err)

		for name, tc := range map[string]struct {
			req  messages.RefundRequest
			code string
		}{
			"NeverCharged":     {messages.RefundRequest{ChargeKey: client.NewKey(), Amount: 1}, messages.CodeChargeNotFound},
			"NotACharge":       {messages.RefundRequest{ChargeKey: cartKey, Amount: 1}, messages.CodeChargeNotFound},
			"ChargeDeclined":   {messages.RefundRequest{ChargeKey: declinedKey, Amount: 1}, messages.CodeChargeNotRefundable},
			"MoreThanCharged":  {messages.RefundRequest{ChargeKey: chargeKey, Amount: 101}, messages.CodeRefundExceedsCharge},
			"MuchMoreThanLeft": {messages.RefundRequest{ChargeKey: chargeKey, Amount: messages.MaxAmount}, messages.CodeRefundExceedsCharge},
		} {
			t.Run(name, func(t *testing.T) {
				res, err := c.Refund(ctxT(t), client.NewKey(), tc.req)
				var failed *client.FailedError
				require.ErrorAs(t, err, &failed, "%+v", res)
				require.Equal(t, tc.code, failed.Code)
				require.Equal(t, messages.StatusFailed, res.Result.Status)
				require.NotEmpty(t, res.Result.Message)
			})
		}
		require.Zero(t, refunded(t, env, chargeKey), "no failed refund refunded anything")

		// Invalid bodies are refused before anything runs.
		_, err = c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: "not-a-key", Amount: 1})
		require.ErrorIs(t, err, client.ErrInvalidPayload)
		_, err = c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 0})
		require.ErrorIs(t, err, client.ErrInvalidPayload)
	})
}

// TestRefund_RacingRefundsNeverExceedTheCharge sends two refunds of one
// charge at once, under different keys, to two workers: together they are
// more than the charge, so exactly one must be refused.
func TestRefund_RacingRefundsNeverExceedTheCharge(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: 2})
	c := env.MustClient(t, nil)
	for round := range 5 {
		chargeKey, _ := charge(t, c, "acct_race", 1000)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() {
				_, errs[i] = c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 600})
			})
		}
		wg.Wait()
		ok, exceeded := 0, 0
		for _, err := range errs {
			var failed *client.FailedError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &failed) && failed.Code == messages.CodeRefundExceedsCharge:
				exceeded++
			default:
				t.Fatalf("round %d: unexpected answer %v", round, err)
			}
		}
		require.Equal(t, 1, ok, "round %d", round)
		require.Equal(t, 1, exceeded, "round %d", round)
		require.EqualValues(t, 600, refunded(t, env, chargeKey))
	}
}

// TestRefund_WaitsForItsChargeInProgress refunds a charge whose provider
// call is still under way: the refund waits (retried, never failed) and
// refunds once the charge succeeded.
func TestRefund_WaitsForItsChargeInProgress(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: 2, Sim: sim.Config{Latency: 1500 * time.Millisecond}})
	c := env.MustClient(t, nil)
	chargeKey := client.NewKey()
	charged := make(chan error, 1)
	go func() {
		_, err := c.Charge(ctxT(t), chargeKey, messages.ChargeRequest{AccountID: "acct_wait", Amount: 800, Currency: "EUR"})
		charged <- err
	}()
	// Once the charge is in progress (its record exists), refund it.
	rec := env.Config.KeyPrefix + "idem:rec:{" + chargeKey + "}"
	loadtest.WaitFor(t, 10*time.Second, func() bool { return env.RDB.Exists(context.Background(), rec).Val() == 1 })
	res, err := c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 800})
	require.NoError(t, err, "%+v", res)
	require.NoError(t, <-charged)
	require.EqualValues(t, 800, res.Data.RefundedTotal)
}

// TestRefund_KilledAfterTheProviderCall kills the refund's delivery right
// after the provider refunded (the engine walks away as a SIGKILLed worker
// would): the next delivery asks the provider again with the same refund
// key and gets the same refund. Refunded once.
func TestRefund_KilledAfterTheProviderCall(t *testing.T) {
	t.Parallel()
	var armed, fired atomic.Bool
	env := loadtest.Setup(t, &loadtest.Options{Workers: 2, Processor: processor.Config{
		AckWait: 2 * time.Second, LockTTL: time.Second,
		Failpoint: func(at processor.Failpoint, _ string) bool {
			return at == processor.AfterOperation && armed.Load() && fired.CompareAndSwap(false, true)
		},
	}})
	c := env.MustClient(t, nil)
	chargeKey, _ := charge(t, c, "acct_kill", 900)
	armed.Store(true)
	res, err := c.Refund(ctxT(t), client.NewKey(), messages.RefundRequest{ChargeKey: chargeKey, Amount: 400})
	require.NoError(t, err)
	require.True(t, fired.Load(), "the failpoint fired")
	require.Equal(t, 2, res.Result.Attempts, "finished by the redelivery")
	require.EqualValues(t, 400, res.Data.RefundedTotal)
	require.EqualValues(t, 400, refunded(t, env, chargeKey), "refunded once")
	n, err := env.RDB.HLen(context.Background(), layout.SimRefunds(env.Config.KeyPrefix)).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}
