package processor_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/processor"
)

func TestProcessor_TransientErrors(t *testing.T) {
	t.Parallel()

	t.Run("RetriedWithinTheDelivery", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var calls atomic.Int32
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if calls.Add(1) <= 2 {
				return messages.ChargeData{}, processor.TransientError(errBoom)
			}
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)
		key := newKey()
		b.charge(t, key, 42)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status)
		require.Equal(t, 1, got.Attempts, "backoff inside the first delivery")
		require.EqualValues(t, 3, calls.Load())
		require.Equal(t, 1, b.charges(t))
	})

	t.Run("RedeliveredWhenRetriesRunOut", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var calls atomic.Int32
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			// The bundle's policy makes 4 calls per delivery: fail them all once.
			if calls.Add(1) <= 4 {
				return messages.ChargeData{}, processor.AmbiguousError(errBoom)
			}
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)
		key := newKey()
		b.charge(t, key, 42)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status)
		require.Equal(t, 2, got.Attempts)
		require.Equal(t, 1, b.charges(t))
		require.Equal(t, 1, b.answers.count(key), "an ambiguous error is never answered as failed")
	})
}

func TestProcessor_DeadLetters(t *testing.T) {
	t.Parallel()

	t.Run("ProviderDownForGood", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 2
		b.cfg.DedupeWindow = 100 * time.Millisecond
		b.cfg.DeadLetterFence = 100 * time.Millisecond // re-driven 150ms after the dead letter
		var down atomic.Bool
		down.Store(true)
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if down.Load() {
				return messages.ChargeData{}, processor.TransientError(errors.New("provider unavailable"))
			}
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)

		key := newKey()
		body := `{"account_id":"acct_9","amount":300,"currency":"EUR"}`
		b.publish(t, messages.KindPaymentCharge, key, body, messages.HeaderReplyTo, b.answers.inbox)

		dl := b.deadLetter(t, messages.KindPaymentCharge)
		require.Equal(t, body, string(dl.Data))
		require.Equal(t, key, dl.Header.Get(messages.HeaderDlqKey))
		require.Equal(t, key, dl.Header.Get(messages.HeaderMsgID), "the copy keeps the command's headers, Nats-Msg-Id included")
		require.Equal(t, b.answers.inbox, dl.Header.Get(messages.HeaderReplyTo))
		require.Equal(t, "2", dl.Header.Get(messages.HeaderDlqDeliveries))
		require.Equal(t, dedupe.EffectNone, dl.Header.Get(messages.HeaderDlqEffect), "a transient error certainly charged nothing")
		require.Contains(t, dl.Header.Get(messages.HeaderDlqReason), "provider unavailable")

		notice := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusRejected, notice.Status)
		require.Equal(t, messages.CodeDeadLettered, notice.Code)
		require.Equal(t, messages.CodeDeadLettered, b.answers.waitReply(t, key).Code)
		b.drained(t)
		requireNoOutcome(t, b, key)

		// The key kept no outcome: re-driven with the same key, it runs.
		down.Store(false)
		waitPast(t, 150*time.Millisecond)
		b.publish(t, messages.KindPaymentCharge, key, body)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 2)[1].Status)
		require.Equal(t, 1, b.charges(t))
	})

	t.Run("PanickingOperationIsOutcomeUnknown", func(t *testing.T) {
		t.Parallel()
		// A panic may come after a side effect, and this operation cannot
		// look its effect up: the client must not be told "not done".
		b := setup(t)
		b.cfg.MaxTries = 3
		mux := b.defaultMux()
		processor.Register(mux, panicOp{}, nil)
		b.startWorker(t, mux, func(c *processor.Config) { c.Concurrency = 1 })

		poison := newKey()
		b.publish(t, panicKind, poison, `{"n":1}`)
		good := newKey()
		b.charge(t, good, 5)
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, good, 1)[0].Status, "other work flows")

		dl := b.deadLetter(t, panicKind)
		require.Equal(t, poison, dl.Header.Get(messages.HeaderDlqKey))
		require.Equal(t, "3", dl.Header.Get(messages.HeaderDlqDeliveries))
		require.Equal(t, dedupe.EffectUnknown, dl.Header.Get(messages.HeaderDlqEffect))
		require.Contains(t, dl.Header.Get(messages.HeaderDlqReason), "operation panicked: poison")
		require.Equal(t, messages.CodeOutcomeUnknown, b.answers.waitAnswers(t, poison, 1)[0].Code)
		b.drained(t)
		requireNoOutcome(t, b, poison)
	})

	t.Run("WorkerDiesOnEveryDelivery", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 2
		// Every attempt dies before the provider call: no delivery ends
		// itself. After its tries, the key is dead-lettered by the next
		// delivery, which asks the provider whether a charge exists: none.
		var deaths atomic.Int32
		b.startWorker(t, nil, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, _ string) bool {
				return at == processor.AfterBegin && deaths.Add(1) > 0
			}
		})
		key := newKey()
		body := `{"account_id":"acct_3","amount":30,"currency":"EUR"}`
		b.publish(t, messages.KindPaymentCharge, key, body, messages.HeaderReplyTo, b.answers.inbox)

		dl := b.deadLetter(t, messages.KindPaymentCharge)
		require.Equal(t, body, string(dl.Data))
		require.Equal(t, key, dl.Header.Get(messages.HeaderDlqKey))
		require.Equal(t, "3", dl.Header.Get(messages.HeaderDlqDeliveries))
		require.Equal(t, dedupe.EffectNone, dl.Header.Get(messages.HeaderDlqEffect), "the provider confirmed no charge")
		require.EqualValues(t, 2, deaths.Load())
		require.Equal(t, messages.CodeDeadLettered, b.answers.waitReply(t, key).Code)
		b.drained(t)
		requireNoOutcome(t, b, key)
	})

	t.Run("DiedAfterChargingIsAnsweredWithTheCharge", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		// The only try charges the card and dies before the commit. With no
		// tries left, the next delivery finds the charge at the provider:
		// it is the key's outcome, not a dead letter.
		var died atomic.Bool
		b.startWorker(t, nil, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, _ string) bool {
				return at == processor.AfterOperation && died.CompareAndSwap(false, true)
			}
		})
		key := newKey()
		b.charge(t, key, 31)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status, "%+v", got)
		require.Equal(t, 1, b.charges(t))
		require.Equal(t, 1, b.calls(t, key), "found by lookup, not charged again")
		requireSameOutcome(t, got, b.stored(t, key))
		b.drained(t)
		requireNoDeadLetters(t, b)
	})

	t.Run("PanicOnceThenSucceeds", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var n atomic.Int32
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if n.Add(1) == 1 {
				panic("nil map somewhere")
			}
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)
		key := newKey()
		b.charge(t, key, 77)
		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status)
		require.Equal(t, 2, got.Attempts, "a panic is not retried in the delivery; the redelivery finishes")
		require.Equal(t, 1, b.charges(t))
	})
}

const panicKind = "test.panic"

// panicOp is the operation of "test.panic", which always panics.
type panicOp struct{}

type panicCommand struct {
	N int `json:"n"`
}

func (panicCommand) Kind() string    { return panicKind }
func (panicCommand) Validate() error { return nil }

func (panicOp) Handle(context.Context, *processor.Call[panicCommand]) (processor.Outcome, error) {
	panic("poison")
}

// requireNoDeadLetters checks that the dead-letter stream is empty.
func requireNoDeadLetters(t *testing.T, b *testBundle) {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.cfg.Topology.DeadLetterStream)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing dead-lettered")
}

// deadLetter waits for the first dead letter of kind and returns it.
func (b *testBundle) deadLetter(t *testing.T, kind string) *jetstream.RawStreamMsg {
	t.Helper()
	var msg *jetstream.RawStreamMsg
	eventuallyf(t, 20*time.Second, func() bool {
		s, err := b.js.Stream(context.Background(), b.cfg.Topology.DeadLetterStream)
		if err != nil {
			return false
		}
		msg, err = s.GetLastMsgForSubject(context.Background(), b.subjects.DeadLetterFor(kind))
		return err == nil
	}, "dead letter of %s", kind)
	return msg
}

func requireNoOutcome(t *testing.T, b *testBundle, key string) {
	t.Helper()
	s, err := b.js.Stream(context.Background(), b.cfg.Topology.ResultStream)
	require.NoError(t, err)
	_, err = s.GetLastMsgForSubject(context.Background(), b.subjects.ResultFor(key))
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	rec, err := b.rdb.HGet(context.Background(), b.cfg.KeyPrefix+"idem:rec:{"+key+"}", "state").Result()
	require.NoError(t, err)
	require.Contains(t, []string{string(dedupe.StateIdle), string(dedupe.StateDead)}, rec, "no outcome: only the fingerprint is pinned")
}

// TestProcessor_CrashAt kills a delivery at each step of the happy path -
// the processor walks away exactly as a SIGKILLed worker would: no nak, no
// unlock, no ack - and checks that the redelivery finishes the command with
// one charge (or one cart increment) and answers identical to any earlier
// one. On a single Redis cart.add has no steps between its lock and its
// commit: its effect is in the script that begins and commits. With
// SeparateEffects (what a Redis Cluster gets; TestProcessor_RedisCluster
// runs the same cases there) its effect is applied between Begin and the
// commit, and each step between them is a crash point of its own.
func TestProcessor_CrashAt(t *testing.T) {
	t.Parallel()
	steps := map[string][]processor.Failpoint{
		messages.KindPaymentCharge: {processor.AfterLock, processor.AfterBegin, processor.AfterOperation,
			processor.AfterCommit, processor.AfterPublish},
		messages.KindCartAdd: {processor.AfterLock, processor.AfterCommit, processor.AfterPublish},
		cartApart:            cartApartSteps,
	}
	for kind, points := range steps {
		for _, point := range points {
			t.Run(string(point)+"/"+kind, func(t *testing.T) {
				t.Parallel()
				crashAt(t, setup(t), kind, point)
			})
		}
	}
}

// cartApart is cart.add with its effect applied apart from the commit
// (Config.SeparateEffects, or any Redis Cluster), in the crash tests.
const cartApart = messages.KindCartAdd + "(apart)"

// cartApartSteps are its crash points: every step has one.
var cartApartSteps = []processor.Failpoint{processor.AfterLock, processor.AfterBegin, processor.AfterOperation,
	processor.AfterCommit, processor.AfterPublish}

// crashAt runs one command of kind (cartApart: cart.add, separate effects)
// with a worker that dies once at point and a healthy peer, and checks
// that it ends with one effect and one outcome.
func crashAt(t *testing.T, b *testBundle, kind string, point processor.Failpoint) {
	t.Helper()
	apart := kind == cartApart
	if apart {
		kind = messages.KindCartAdd
		b.cfg.SeparateEffects = true
	}
	var fired atomic.Bool
	crashOnce := func(c *processor.Config) {
		c.Failpoint = func(at processor.Failpoint, _ string) bool { return at == point && fired.CompareAndSwap(false, true) }
	}
	b.startWorker(t, nil, crashOnce)
	b.startWorker(t, nil, nil) // a healthy peer may take the redelivery

	key := newKey()
	cart := "cart_" + strconv.Itoa(int(time.Now().UnixNano()%1e6))
	if kind == messages.KindPaymentCharge {
		b.charge(t, key, 1234)
	} else {
		b.publish(t, kind, key, messages.CartAddRequest{CartID: cart, SKU: "SKU-1", Quantity: 3})
	}
	first := b.answers.waitAnswers(t, key, 1)[0]
	b.drained(t)
	require.True(t, fired.Load(), "the failpoint never fired")

	answers := b.answers.waitAnswers(t, key, 1)
	for _, a := range answers {
		require.Equal(t, messages.StatusSucceeded, a.Status)
		requireSameOutcome(t, first, a)
	}
	requireSameOutcome(t, first, b.stored(t, key))
	if kind == messages.KindPaymentCharge {
		require.Equal(t, 1, b.charges(t), "exactly one charge")
		wantCalls := 1
		if point == processor.AfterOperation {
			wantCalls = 2 // resumed: the provider is asked again, with the same key
		}
		require.Equal(t, wantCalls, b.calls(t, key))
	} else {
		require.EqualValues(t, 3, cartQuantity(t, b, cart, "SKU-1"), "added exactly once")
		require.EqualValues(t, 3, data[messages.CartAddData](t, first).Quantity)
		appliedKey := layout.CartApplied(b.cfg.KeyPrefix, cart, key, first.Fingerprint)
		applied, err := b.rdb.Get(context.Background(), appliedKey).Result()
		if apart && point != processor.AfterLock {
			require.NoError(t, err, "the add is remembered in the cart's slot")
			require.Equal(t, "3", applied)
			ttl := b.rdb.PTTL(context.Background(), appliedKey).Val()
			require.Positive(t, ttl, "it expires on its own")
		} else if !apart {
			require.ErrorIs(t, err, redis.Nil, "the commit script applies the add: nothing to remember")
		}
	}
	switch point {
	case processor.AfterCommit, processor.AfterPublish:
		require.Equal(t, 1, first.Attempts, "stored by the first delivery")
	default:
		require.Equal(t, 2, first.Attempts, "stored by the redelivery")
	}
	wantAnswers := 1
	if point == processor.AfterPublish {
		wantAnswers = 2 // the original, then the redelivery's replay
	}
	require.Len(t, b.answers.waitAnswers(t, key, wantAnswers), wantAnswers)
	require.Equal(t, point == processor.AfterCommit, first.Replayed)
}

func TestProcessor_LockLost(t *testing.T) {
	t.Parallel()

	t.Run("WatchdogCancelsTheOperation", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var calls atomic.Int32
		inCall := make(chan struct{})
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			c, err := b.sim.Charge(ctx, key, req)
			if calls.Add(1) == 1 {
				close(inCall)
				<-ctx.Done() // charged, then stuck until the watchdog gives up
				return messages.ChargeData{}, processor.AmbiguousError(context.Cause(ctx))
			}
			return c, err
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)
		key := newKey()
		b.charge(t, key, 900)
		<-inCall
		// Someone else's value: the lock is no longer ours.
		require.NoError(t, b.rdb.Set(context.Background(), b.cfg.KeyPrefix+"idem:lock:{"+key+"}", "other", 300*time.Millisecond).Err())

		got := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, got.Status, "%+v", got)
		require.Equal(t, 2, got.Attempts)
		require.EqualValues(t, 2, calls.Load())
		require.Equal(t, 1, b.charges(t), "the provider key made the second call harmless")
	})

	t.Run("PausedWorkerPublishesTheStoredOutcome", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		resume := make(chan struct{})
		var paused atomic.Bool
		pausedAt := make(chan struct{})
		// Worker A pauses after its provider call, like a GC pause or a
		// SIGSTOP, long past its lock and its AckWait.
		b.startWorker(t, nil, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, _ string) bool {
				if at == processor.AfterOperation && paused.CompareAndSwap(false, true) {
					close(pausedAt)
					<-resume
				}
				return false
			}
		})
		key := newKey()
		b.charge(t, key, 321)
		<-pausedAt
		b.startWorker(t, nil, nil) // worker B takes the redelivery and finishes
		first := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, 2, first.Attempts)
		close(resume) // A wakes up and tries to commit its own outcome

		answers := b.answers.waitAnswers(t, key, 2)
		for _, a := range answers {
			requireSameOutcome(t, first, a)
		}
		require.Equal(t, 1, b.charges(t))
		requireSameOutcome(t, first, b.stored(t, key))
	})
}

func TestProcessor_Stop(t *testing.T) {
	t.Parallel()

	t.Run("DrainsInFlightCommands", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		inCall := make(chan struct{})
		var once sync.Once
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			once.Do(func() { close(inCall) })
			time.Sleep(300 * time.Millisecond) // a slow provider
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		env := b.cfg
		w, err := newProcessor(t, b, mux, &env)
		require.NoError(t, err)
		key := newKey()
		b.charge(t, key, 10)
		<-inCall
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, w.Stop(ctx))
		<-w.Stopped()
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		b.drained(t)
	})

	t.Run("ExpiredStopLeavesWorkForRedelivery", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		inCall := make(chan struct{})
		var n atomic.Int32
		p := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if n.Add(1) == 1 {
				close(inCall)
				<-ctx.Done() // stuck until the processor gives up
				return messages.ChargeData{}, processor.AmbiguousError(context.Cause(ctx))
			}
			return b.sim.Charge(ctx, key, req)
		}}
		mux := processor.NewMux()
		charge.Register(mux, p)
		env := b.cfg
		w, err := newProcessor(t, b, mux, &env)
		require.NoError(t, err)
		key := newKey()
		b.charge(t, key, 10)
		<-inCall
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, w.Stop(ctx), context.DeadlineExceeded)

		b.startWorker(t, mux, nil) // the next worker finishes it
		require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
		require.Equal(t, 1, b.charges(t))
	})
}

// newProcessor starts a processor whose Stop the test calls itself.
func newProcessor(t *testing.T, b *testBundle, mux *processor.Mux, cfg *processor.Config) (*processor.Processor, error) {
	t.Helper()
	p, err := processor.New(b.nc, b.rdb, mux, cfg)
	if err != nil {
		return nil, err
	}
	if err := p.Start(context.Background()); err != nil {
		return nil, err
	}
	return p, nil
}

func TestProcessor_New(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := processor.New(b.nc, b.rdb, processor.NewMux(), nil)
	require.ErrorContains(t, err, "no operations")
	_, err = processor.New(b.nc, b.rdb, b.defaultMux(), &processor.Config{DedupeWindow: time.Hour, ResultTTL: time.Minute})
	require.ErrorContains(t, err, "ResultTTL")
	_, err = processor.New(b.nc, b.rdb, b.defaultMux(), &processor.Config{ResultsMaxAge: time.Second})
	require.ErrorContains(t, err, "ResultsMaxAge (1s) must be between DedupeWindow (2m0s) and ResultTTL (24h0m0s)")
	_, err = processor.New(nil, b.rdb, b.defaultMux(), nil)
	require.Error(t, err)
}

func TestProcessor_StreamsMatchTheContract(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, nil, func(c *processor.Config) { c.AckWait, c.MaxTries = 0, 0 })
	ctx := context.Background()

	cmds, err := b.js.Stream(ctx, b.cfg.Topology.CommandStream)
	require.NoError(t, err)
	ci, err := cmds.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.WorkQueuePolicy, ci.Config.Retention)
	require.Equal(t, jetstream.FileStorage, ci.Config.Storage)
	require.Equal(t, 2*time.Minute, ci.Config.Duplicates)

	res, err := b.js.Stream(ctx, b.cfg.Topology.ResultStream)
	require.NoError(t, err)
	ri, err := res.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, ri.Config.MaxMsgsPerSubject)
	require.Equal(t, 24*time.Hour, ri.Config.MaxAge)
	require.Equal(t, jetstream.LimitsPolicy, ri.Config.Retention)

	cons, err := cmds.Consumer(ctx, "workers")
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.AckExplicitPolicy, info.Config.AckPolicy)
	require.Equal(t, 30*time.Second, info.Config.AckWait)
	// The contract's "at most 10 deliveries" is counted by the workers, per
	// key (Config.MaxDeliver): the consumer itself never stops redelivering,
	// so no message can be left in the work queue without an end.
	require.Equal(t, -1, info.Config.MaxDeliver)

	// Idempotent: a second worker with the same settings changes nothing.
	b.startWorker(t, nil, func(c *processor.Config) { c.AckWait, c.MaxTries = 0, 0 })
}

// TestProcessor_StartTogether starts several workers at once against an
// empty server, as a deployment of replicas does: creating the streams and
// the consumer must be idempotent under that race.
func TestProcessor_StartTogether(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			env := b.cfg
			p, err := newProcessor(t, b, b.defaultMux(), &env)
			if err == nil {
				t.Cleanup(func() { _ = p.Stop(context.Background()) })
			}
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	key := newKey()
	b.charge(t, key, 5)
	require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
}

// TestProcessor_ConsumerDeleted deletes the durable consumer under a running
// worker, as a careless operator might: the worker recreates it and goes on.
func TestProcessor_ConsumerDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, nil, nil)
	ctx := context.Background()
	first := newKey()
	b.charge(t, first, 1)
	b.answers.waitAnswers(t, first, 1)

	require.NoError(t, b.js.DeleteConsumer(ctx, b.cfg.Topology.CommandStream, "workers"))
	key := newKey()
	b.charge(t, key, 2)
	require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
}
