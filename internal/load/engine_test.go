package load_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

func TestParseMix(t *testing.T) {
	t.Parallel()

	for in, want := range map[string]load.Mix{
		"payment=0.7,cart=0.3":           {Payment: 0.7, Cart: 0.3},
		"payment=1":                      {Payment: 1},
		"cart = 2, payment=0":            {Cart: 2},
		"payment.charge=1,cart.add=1":    {Payment: 1, Cart: 1},
		"cart=0.5,payment=0.5,cart=0.25": {Payment: 0.5, Cart: 0.25},
	} {
		got, err := load.ParseMix(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for in, msg := range map[string]string{
		"":                 "type=weight",
		"payment":          "type=weight",
		"refund=1":         `unknown type "refund"`,
		"payment=-1":       "non-negative",
		"payment=x":        "non-negative",
		"payment=0,cart=0": "add up to 0",
		"payment=NaN":      "non-negative",
	} {
		_, err := load.ParseMix(in)
		require.ErrorContains(t, err, msg, in)
	}
	require.Equal(t, "payment=0.7,cart=0.3", load.MixDefault.String())
}

func TestRun_Config(t *testing.T) {
	t.Parallel()

	for field, cfg := range map[string]*load.Config{
		"Count":        {Count: 0},
		"Rate":         {Count: 1, Rate: -1},
		"Concurrency":  {Count: 1, Concurrency: load.MaxConcurrency + 1},
		"Duplicates":   {Count: 1, Duplicates: 1.5},
		"DeclineShare": {Count: 1, DeclineShare: -0.1},
		"RefundShare":  {Count: 1, RefundShare: 2},
		"RunID":        {Count: 1, RunID: "no spaces"},
		"Mix":          {Count: 1, Mix: load.Mix{Payment: -1, Cart: 1}},
	} {
		_, err := load.Run(context.Background(), nopSender{}, cfg)
		require.ErrorContains(t, err, field)
	}
	_, err := load.Run(context.Background(), nil, &load.Config{Count: 1})
	require.ErrorContains(t, err, "nil Sender")
}

// TestRun: commands and in-window duplicates against two workers. Every key
// has one outcome, every duplicate was dropped by JetStream, and the
// provider's ledger and the carts agree with the answers.
func TestRun(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: 2})
	c := env.MustClient(t, nil)

	var last load.Progress
	calls := 0
	s, err := load.Run(context.Background(), c, &load.Config{
		Count: 300, Concurrency: 24, Duplicates: 0.3, DeclineShare: 0.1,
		Progress: func(p load.Progress) { last = p; calls++ },
	})
	require.NoError(t, err)
	require.True(t, s.OK(), "%+v", s)
	require.Empty(t, s.Disagreeing)
	require.Empty(t, s.Errors)
	require.Equal(t, 300, s.Commands)
	dups := s.DuplicatesSent[load.KindRacing] + s.DuplicatesSent[load.KindAfter]
	require.Positive(t, s.DuplicatesSent[load.KindRacing])
	require.Positive(t, s.DuplicatesSent[load.KindAfter])
	require.Zero(t, s.DuplicatesSent[load.KindLate])
	require.Equal(t, 300+dups, s.Sends)
	require.Equal(t, dups, s.DroppedByJetStream, "inside the window JetStream drops every duplicate")
	require.Zero(t, s.ReplayedByWorkers)
	require.Equal(t, s.Sends, s.Answered)
	require.Equal(t, 300, s.ByStatus[messages.StatusSucceeded]+s.ByStatus[messages.StatusFailed])
	require.Positive(t, s.ByCode[messages.CodeCardDeclined])
	require.Equal(t, s.ByStatus[messages.StatusFailed], s.ByCode[messages.CodeCardDeclined])
	require.Equal(t, 300, s.ByCommand[messages.KindPaymentCharge]+s.ByCommand[messages.KindCartAdd])
	require.Positive(t, s.Latency.P50)
	require.LessOrEqual(t, s.Latency.P50, s.Latency.P95)
	require.LessOrEqual(t, s.Latency.P95, s.Latency.P99)
	require.LessOrEqual(t, s.Latency.P99, s.Latency.Max)
	require.Positive(t, s.Throughput)
	require.Equal(t, load.Progress{Done: s.Sends, Total: s.Sends, Dropped: dups}, last)
	require.Equal(t, s.Sends, calls)

	ledger, err := load.CheckLedger(context.Background(), env.RDB, env.Config.KeyPrefix, s)
	require.NoError(t, err)
	require.True(t, ledger.OK(), "%v", ledger.Mismatches)
	require.Equal(t, s.ByCommand[messages.KindPaymentCharge], ledger.ChargeKeys)
	require.Equal(t, ledger.Succeeded, ledger.Charged)
	require.Equal(t, int64(ledger.ChargeKeys), ledger.Calls, "one provider call per key")
	require.Empty(t, ledger.CalledMoreThanOnce)
	require.Positive(t, ledger.CartLines)

	// The whole ledger holds this run's charges and nothing else.
	allCalls, allCharges := env.SimLedger(t)
	require.Len(t, allCalls, ledger.ChargeKeys)
	require.Len(t, allCharges, ledger.Succeeded)
}

// TestRun_LateDuplicates: duplicates sent after the workers' dedupe window
// reach a worker, which replays the stored outcome without running again.
func TestRun_LateDuplicates(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 200 * time.Millisecond}})
	c := env.MustClient(t, nil)

	s, err := load.Run(context.Background(), c, &load.Config{
		Count: 40, Concurrency: 8, Duplicates: 1, LateAfter: 400 * time.Millisecond, LateShare: 1,
	})
	require.NoError(t, err)
	require.True(t, s.OK(), "%+v", s)
	require.Equal(t, 40, s.DuplicatesSent[load.KindLate])
	require.Equal(t, 40, s.ReplayedByWorkers)
	require.Zero(t, s.DroppedByJetStream)
	require.GreaterOrEqual(t, s.Elapsed, 400*time.Millisecond)

	ledger, err := load.CheckLedger(context.Background(), env.RDB, env.Config.KeyPrefix, s)
	require.NoError(t, err)
	require.True(t, ledger.OK(), "%v", ledger.Mismatches)
	require.Equal(t, int64(ledger.ChargeKeys), ledger.Calls, "replays never call the provider")
}

// TestRun_Refunds follows charges with refunds, some of them asking for
// more than was charged, and checks them against the provider's ledger.
func TestRun_Refunds(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: 2})
	c := env.MustClient(t, nil)
	s, err := load.Run(context.Background(), c, &load.Config{
		Count: 120, Concurrency: 16, Mix: load.Mix{Payment: 1}, RefundShare: 1, Duplicates: 0.3, Seed: 7,
	})
	require.NoError(t, err)
	require.True(t, s.OK(), "%+v", s)
	require.Equal(t, 120, s.ByCommand[messages.KindPaymentRefund], "every succeeded charge got its refund")
	require.Equal(t, 240, s.Commands)
	require.Zero(t, s.Unanswered)
	require.Positive(t, s.ByCode[messages.CodeRefundExceedsCharge], "some refunds asked for too much: %v", s.ByCode)
	ledger, err := load.CheckLedger(context.Background(), env.RDB, env.Config.KeyPrefix, s)
	require.NoError(t, err)
	require.True(t, ledger.OK(), "%v", ledger.Mismatches)
	require.Equal(t, 120, ledger.RefundKeys)
	require.Equal(t, 120-s.ByCode[messages.CodeRefundExceedsCharge], ledger.Refunded)
}

func TestRun_Rate(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)

	s, err := load.Run(context.Background(), c, &load.Config{Count: 21, Rate: 100, Concurrency: 8})
	require.NoError(t, err)
	require.True(t, s.OK())
	// The first command goes at once, the next 20 at 10ms intervals.
	require.GreaterOrEqual(t, s.Elapsed, 180*time.Millisecond)
}

// TestRun_Timeout: with no worker nothing is answered, and the run still
// ends at its Timeout.
func TestRun_Timeout(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	c := env.MustClient(t, nil)

	start := time.Now()
	s, err := load.Run(context.Background(), c, &load.Config{Count: 100, Concurrency: 4, Timeout: 300 * time.Millisecond})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.False(t, s.OK())
	require.Zero(t, s.Answered)
	require.Positive(t, s.Errors["cut_short"])
	require.Equal(t, 100, s.Unanswered)
}

type nopSender struct{}

func (nopSender) Send(context.Context, string, messages.Command) (*client.Reply, error) {
	return nil, errors.New("not used")
}

// TestRun_Reuse: keys sent again with another payload are refused as
// idempotency_key_reused, by the client inside the dedupe window and by a
// worker after it, and their outcomes stay those of the first payload.
func TestRun_Reuse(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Processor: processor.Config{DedupeWindow: 200 * time.Millisecond}})
	c := env.MustClient(t, nil)

	var mu sync.Mutex
	sends := map[load.SendKind]int{}
	refusedBy := map[string]int{} // "worker" or "client"
	s, err := load.Run(context.Background(), c, &load.Config{
		Count: 60, Concurrency: 8, ReuseShare: 1, LateAfter: 400 * time.Millisecond, Seed: 3,
		OnSend: func(sent load.Sent) {
			mu.Lock()
			defer mu.Unlock()
			sends[sent.Kind]++
			if sent.Kind != load.KindReuse {
				return
			}
			assert.ErrorIs(t, sent.Err, client.ErrKeyReused)
			if sent.Reply != nil && sent.Reply.Result.Status == messages.StatusRejected {
				refusedBy["worker"]++
			} else {
				refusedBy["client"]++
			}
		},
	})
	require.NoError(t, err)
	require.True(t, s.OK(), "%+v", s)
	require.Equal(t, 60, s.ReuseRefused)
	require.Empty(t, s.ReuseAccepted)
	require.Equal(t, map[load.SendKind]int{load.KindOriginal: 60, load.KindReuse: 60}, sends)
	require.Positive(t, refusedBy["worker"], "late re-uses reach a worker: %v", refusedBy)
	require.Positive(t, refusedBy["client"], "early re-uses are dropped by JetStream: %v", refusedBy)

	ledger, err := load.CheckLedger(context.Background(), env.RDB, env.Config.KeyPrefix, s)
	require.NoError(t, err)
	require.True(t, ledger.OK(), "%v", ledger.Mismatches)
	require.Equal(t, int64(ledger.ChargeKeys), ledger.Calls, "a re-used key never runs again")
}

// TestRun_RetryUnanswered: a send whose answer was lost is sent again with
// the same key, and the retry gets the key's one outcome.
func TestRun_RetryUnanswered(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	c := env.MustClient(t, nil)
	lossy := &losingSender{c: c, lost: map[string]bool{}}

	var retries atomic.Int64
	s, err := load.Run(context.Background(), lossy, &load.Config{
		Count: 30, Concurrency: 4, RetryUnanswered: true,
		OnSend: func(sent load.Sent) {
			if sent.Kind == load.KindRetry {
				retries.Add(1)
				if assert.NoError(t, sent.Err) {
					assert.True(t, sent.Reply.Duplicate, "inside the window the retry is dropped and reads the stored outcome")
				}
			}
		},
	})
	require.NoError(t, err)
	require.Equal(t, int64(30), retries.Load())
	require.Zero(t, s.Unanswered)
	require.Empty(t, s.Disagreeing)
	require.Equal(t, 60, s.Sends)
	require.Equal(t, 30, s.Errors["result_timeout"], "the lost answers")
	require.Zero(t, s.NotSent)
}

// losingSender loses the answer to the first send of every key, as a
// client whose answer never arrived: the command was still processed.
type losingSender struct {
	c    *client.Client
	mu   sync.Mutex
	lost map[string]bool
}

func (l *losingSender) Send(ctx context.Context, key string, cmd messages.Command) (*client.Reply, error) {
	reply, err := l.c.Send(ctx, key, cmd)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lost[key] && err == nil {
		l.lost[key] = true
		return &client.Reply{Duplicate: reply.Duplicate, Stream: reply.Stream, Sequence: reply.Sequence},
			fmt.Errorf("%w (answer lost on purpose)", client.ErrResultTimeout)
	}
	return reply, err
}
