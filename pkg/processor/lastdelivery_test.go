package processor_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/processor"
)

// TestProcessor_LastDelivery holds the promise at the edge of MaxDeliver:
// one test per way it broke before the engine counted a key's attempts
// itself (issue "The last delivery keeps the promise"). Each failed against
// the engine that relied on JetStream's delivery limit and its
// max-deliveries advisory.
func TestProcessor_LastDelivery(t *testing.T) {
	t.Parallel()

	t.Run("1_NoCommandIsStrandedWhenItsWorkersDie", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 2
		// Worker A dies in every attempt it makes (after Begin, before the
		// provider), and then dies for good: whatever it kept in memory
		// about the command is gone.
		var deaths atomic.Int32
		a := b.startWorkerOn(t, b.rdb, nil, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, _ string) bool { return at == processor.AfterBegin && deaths.Add(1) > 0 }
		})
		key := newKey()
		b.publish(t, messages.KindPaymentCharge, key, `{"account_id":"acct_1","amount":11,"currency":"EUR"}`)
		eventuallyf(t, 20*time.Second, func() bool { return deaths.Load() >= 2 }, "two attempts died")
		time.Sleep(b.cfg.AckWait + 500*time.Millisecond) // any advisory of the last delivery has reached A
		stopNow(t, a)

		b.startWorker(t, nil, nil) // B: healthy, knows nothing of the command
		notice := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.CodeDeadLettered, notice.Code, "%+v", notice)
		require.Equal(t, key, b.deadLetter(t, messages.KindPaymentCharge).Header.Get(messages.HeaderDlqKey))
		b.drained(t)
		require.Zero(t, b.charges(t))
	})

	t.Run("2_ARetryThatMeetsTheLockIsNotDeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 3
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

		key := newKey()
		b.charge(t, key, 1500)
		eventuallyf(t, 10*time.Second, func() bool { return inCall.Load() == 1 }, "first delivery in the provider")
		waitPast(t, 150*time.Millisecond)
		// The client re-sends, after the dedupe window: it meets the lock of
		// the first delivery, again and again, far more than MaxDeliver times.
		require.False(t, b.charge(t, key, 1500).Duplicate)
		time.Sleep(2 * time.Second)
		close(release)

		answers := b.answers.waitAnswers(t, key, 2)
		for _, a := range answers {
			require.Equal(t, messages.StatusSucceeded, a.Status, "no dead_lettered for a key that is then charged: %+v", a)
		}
		requireSameOutcome(t, answers[0], answers[1])
		require.Equal(t, 1, b.charges(t))
		b.drained(t)
		requireNoDeadLetters(t, b)
	})

	t.Run("3_AStoredOutcomeReachesRESULTSBeforeItsMessageLeaves", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.startWorker(t, nil, nil)
		// RESULTS refuses the key's result: the subject holds a placeholder
		// and the stream discards new messages per subject, so every
		// result publish of the key fails at once.
		ctx := context.Background()
		key := newKey()
		_, err := b.js.Publish(ctx, b.subjects.ResultFor(key), []byte("placeholder"))
		require.NoError(t, err)
		results, err := b.js.Stream(ctx, b.cfg.Topology.ResultStream)
		require.NoError(t, err)
		sc := results.CachedInfo().Config
		sc.Discard, sc.DiscardNewPerSubject = jetstream.DiscardNew, true
		_, err = b.js.UpdateStream(ctx, sc)
		require.NoError(t, err)

		b.charge(t, key, 33)
		eventuallyf(t, 10*time.Second, func() bool { return b.recordState(t, key) == "completed" }, "outcome stored")
		time.Sleep(b.cfg.AckWait + b.cfg.LockTTL + time.Second) // its only delivery is long over

		sc.Discard, sc.DiscardNewPerSubject = jetstream.DiscardOld, false
		_, err = b.js.UpdateStream(ctx, sc)
		require.NoError(t, err)
		eventuallyf(t, 20*time.Second, func() bool {
			m, err := results.GetLastMsgForSubject(ctx, b.subjects.ResultFor(key))
			if err != nil {
				return false
			}
			r, err := messages.DecodeResult(m.Data)
			return err == nil && r.Status == messages.StatusSucceeded
		}, "the stored outcome reaches RESULTS")
		b.drained(t)
	})

	t.Run("4_ACommitWhoseReplyWasLostIsNotDeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		// The commit script runs, but its reply is lost, four times: every
		// commit the delivery tries.
		var lost atomic.Int32
		rdb := b.hookedRedis(t, nil, func(cmd redis.Cmder, err error) error {
			if isEval(cmd) && slices.Contains(cmd.Args(), any(string(messages.StatusSucceeded))) && lost.Add(1) <= 4 {
				return errors.New("read tcp: i/o timeout (injected: the script ran, its reply was lost)")
			}
			return err
		})
		b.startWorkerOn(t, rdb, nil, nil)
		key := newKey()
		b.charge(t, key, 44)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status, "the stored outcome is answered: %+v", got)
		require.GreaterOrEqual(t, lost.Load(), int32(4), "every commit reply was lost")
		requireSameOutcome(t, got, b.stored(t, key))
		require.Equal(t, 1, b.charges(t))
		b.drained(t)
		requireNoDeadLetters(t, b)
	})

	t.Run("5_ALastDeliveryPausedBeforeItsLockNeverSucceedsAfterTheDeadLetter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		var down atomic.Bool
		down.Store(true)
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if down.Load() {
				return messages.ChargeData{}, processor.TransientError(errors.New("provider unavailable"))
			}
			return b.sim.Charge(ctx, key, req)
		}}
		// The first delivery freezes while it validates the command, before
		// it takes the key's lock: a worker SIGSTOPped, a frozen container.
		g := &gate{paused: make(chan struct{}), resume: make(chan struct{})}
		account := "acct_" + b.ns
		gates.Store(account, g)
		mux := processor.NewMux()
		processor.Register(mux, gatedChargeOp{p: p}, nil)
		b.startWorker(t, mux, nil)
		b.startWorker(t, mux, nil)

		key := newKey()
		b.publish(t, gatedKind, key, gatedCharge{AccountID: account, Amount: 55, Currency: "EUR"})
		<-g.paused
		notice := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.CodeDeadLettered, notice.Code, "%+v", notice)
		down.Store(false)
		close(g.resume) // the paused delivery wakes up, takes the lock, goes on
		time.Sleep(2 * time.Second)

		for _, a := range b.answers.waitAnswers(t, key, 1) {
			require.Equal(t, messages.CodeDeadLettered, a.Code, "after a dead letter the key has no outcome: %+v", a)
		}
		require.Zero(t, b.charges(t), "nothing charged after the client was told it was not")
		b.drained(t)
	})

	t.Run("6_EveryDeadLetterOfAKeyIsKept", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.cfg.DeadLetterFence = 100 * time.Millisecond // re-driven 150ms after the dead letter
		p := &funcProvider{charge: func(context.Context, string, messages.ChargeRequest) (messages.ChargeData, error) {
			return messages.ChargeData{}, processor.TransientError(errors.New("provider unavailable"))
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)
		key := newKey()
		b.charge(t, key, 66)
		require.Equal(t, messages.CodeDeadLettered, b.answers.waitAnswers(t, key, 1)[0].Code)
		waitPast(t, 150*time.Millisecond)
		b.charge(t, key, 66) // re-driven, and dead-lettered again
		require.Equal(t, messages.CodeDeadLettered, b.answers.waitAnswers(t, key, 2)[1].Code)

		s, err := b.js.Stream(context.Background(), b.cfg.Topology.DeadLetterStream)
		require.NoError(t, err)
		eventuallyf(t, 5*time.Second, func() bool {
			info, err := s.Info(context.Background())
			return err == nil && info.State.Msgs == 2
		}, "two dead letters of the key kept (%d)", deadLetterCount(t, b))
		for seq := uint64(1); seq <= 2; seq++ {
			m, err := s.GetMsg(context.Background(), seq)
			require.NoError(t, err)
			require.Equal(t, key, m.Header.Get(messages.HeaderMsgID), "each copy keeps the command's Nats-Msg-Id")
			require.Equal(t, "1", m.Header.Get(messages.HeaderDlqDeliveries))
			require.NotEmpty(t, m.Header.Get(messages.HeaderDlqReason))
		}
	})

	t.Run("7_AReplayExtendsTheRetentionInRedisAndRESULTSAlike", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.ResultTTL = 3 * time.Second
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.cfg.MaxTries = 1 // a 3s retention must cover the redelivery horizon
		b.startWorker(t, nil, nil)
		key := newKey()
		start := time.Now()
		b.charge(t, key, 77)
		first := b.answers.waitAnswers(t, key, 1)[0]

		time.Sleep(time.Until(start.Add(2 * time.Second)))
		b.charge(t, key, 77) // a replay, 2s into a 3s retention
		require.True(t, b.answers.waitAnswers(t, key, 2)[1].Replayed)

		time.Sleep(time.Until(start.Add(4 * time.Second)))
		// 4s after the outcome, 2s after its replay: RESULTS still has it,
		// so must Redis.
		requireSameOutcome(t, first, b.stored(t, key))
		b.charge(t, key, 77)
		third := b.answers.waitAnswers(t, key, 3)[2]
		require.True(t, third.Replayed, "the record outlived its last answer by less than RESULT_TTL: %+v", third)
		requireSameOutcome(t, first, third)
		require.Equal(t, 1, b.calls(t, key), "not run again")
	})

	t.Run("8_ALockOfADeadWorkerOnTheLastDeliveryIsWaitedOut", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.startWorker(t, nil, nil)
		key := newKey()
		// A worker took the lock and died: it expires in 1.5s.
		require.NoError(t, b.rdb.Set(context.Background(), b.cfg.KeyPrefix+"idem:lock:{"+key+"}", "dead-worker", 1500*time.Millisecond).Err())
		b.charge(t, key, 88)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status, "%+v", got)
		require.Equal(t, 1, b.charges(t))
		b.drained(t)
		requireNoDeadLetters(t, b)
	})
}

const gatedKind = "test.gated_charge"

// gatedCharge is a charge whose first validation freezes while a gate is
// armed for its account: a delivery paused before it takes the lock.
type gatedCharge struct {
	AccountID string `json:"account_id"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
}

type gate struct {
	paused, resume chan struct{}
	once           atomic.Bool
}

var gates sync.Map // account -> *gate

func (gatedCharge) Kind() string { return gatedKind }

func (c gatedCharge) Validate() error {
	if v, ok := gates.Load(c.AccountID); ok {
		if g := v.(*gate); g.once.CompareAndSwap(false, true) { //nolint:errcheck,forcetypeassert // only *gate is stored
			close(g.paused)
			<-g.resume
		}
	}
	return nil
}

// gatedChargeOp charges a gatedCharge through p.
type gatedChargeOp struct{ p charge.Provider }

func (o gatedChargeOp) Handle(ctx context.Context, call *processor.Call[gatedCharge]) (processor.Outcome, error) {
	c := call.Command
	data, err := o.p.Charge(ctx, call.Key, messages.ChargeRequest{AccountID: c.AccountID, Amount: c.Amount, Currency: c.Currency})
	if err != nil {
		return processor.Outcome{}, err
	}
	return processor.Succeeded(data), nil
}

// startWorkerOn starts a processor on rdb with the bundle's config, changed
// by edit, and returns it; the test's cleanup stops it.
func (b *testBundle) startWorkerOn(tb testing.TB, rdb redis.UniversalClient, mux *processor.Mux, edit func(*processor.Config)) *processor.Processor {
	tb.Helper()
	env, _ := testenv.Shared()
	nc, err := testenv.ConnectNATS(env.NATSURL, tb.Name()+"-worker")
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	cfg := b.cfg
	if edit != nil {
		edit(&cfg)
	}
	if mux == nil {
		mux = b.defaultMux()
	}
	p, err := processor.New(nc, rdb, mux, &cfg)
	require.NoError(tb, err)
	require.NoError(tb, p.Start(context.Background()))
	tb.Cleanup(func() { stopNow(tb, p) })
	return p
}

// stopNow stops a processor, cancelling what is in flight.
func stopNow(tb testing.TB, p *processor.Processor) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = p.Stop(ctx)
}

// hookedRedis returns a client of the shared Redis whose every command
// passes through before (may block) and after (may replace the error).
func (b *testBundle) hookedRedis(tb testing.TB, before func(redis.Cmder), after func(redis.Cmder, error) error) *redis.Client {
	tb.Helper()
	env, _ := testenv.Shared()
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(cmdHook{before: before, after: after})
	return rdb
}

type cmdHook struct {
	before func(redis.Cmder)
	after  func(redis.Cmder, error) error
}

func (cmdHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h cmdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.before != nil {
			h.before(cmd)
		}
		err := next(ctx, cmd)
		if h.after != nil {
			if err = h.after(cmd, err); err != nil {
				cmd.SetErr(err)
			}
		}
		return err
	}
}

func (cmdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func isEval(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" }

// recordState returns the state field of key's record, "" for none.
func (b *testBundle) recordState(t *testing.T, key string) string {
	t.Helper()
	s, err := b.rdb.HGet(context.Background(), b.cfg.KeyPrefix+"idem:rec:{"+key+"}", "state").Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	require.NoError(t, err)
	return s
}

func deadLetterCount(t *testing.T, b *testBundle) uint64 {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.cfg.Topology.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}
