package processor_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// TestProcessor_Truth holds the rule of contract v1.2's "Certainty": an
// answer never claims what the provider's ledger does not hold. Each case
// is a way the engine broke it before the key's certainty lived in its
// record (issue "Never claim what the ledger does not hold"); each failed
// against that engine.
func TestProcessor_Truth(t *testing.T) {
	t.Parallel()

	// Item 1: a delivery retries across error classes. Its first call takes
	// effect and loses its response (ambiguous); the later ones fail
	// transiently. The last error alone says "certainly not charged".
	t.Run("1_CertaintyComesFromTheKeysHistory", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		p := &scripted{sim: b.sim, script: []callFault{chargedThenLost, transient}, repeatLast: true}
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)

		key := newKey()
		b.charge(t, key, 700)
		answer := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, 1, b.charges(t), "the first call charged")
		require.Equal(t, messages.StatusSucceeded, answer.Status,
			"the provider holds the charge: answered as such, never dead_lettered: %+v", answer)
		requireNoDeadLetters(t, b)
	})

	// The same history with a provider that can neither look a key up nor
	// void it: nothing can make the answer certain.
	t.Run("1_WithoutLookupTheAnswerIsUnknown", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		p := &scripted{sim: b.sim, script: []callFault{chargedThenLost, transient}, repeatLast: true}
		mux := processor.NewMux()
		charge.Register(mux, chargeOnly{p})
		b.startWorker(t, mux, nil)

		key := newKey()
		b.charge(t, key, 700)
		answer := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.CodeOutcomeUnknown, answer.Code, "%+v", answer)
		require.Equal(t, dedupe.EffectUnknown, b.deadLetter(t, messages.KindPaymentCharge).Header.Get(messages.HeaderDlqEffect))
	})

	// Item 3: a refund of a charge that was dead-lettered has nothing to
	// wait for: it fails at once, charge_not_found, instead of waiting in its
	// worker slot for a minute per try and ending dead-lettered itself.
	t.Run("3_ARefundOfADeadLetteredChargeFailsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 2
		p := &scripted{sim: b.sim, script: []callFault{transient}, repeatLast: true}
		mux := processor.NewMux()
		charge.Register(mux, p)
		refund.Register(mux, b.sim) // the refund's own policy: it waits long for a charge in progress
		b.startWorker(t, mux, nil)

		chargeKey := newKey()
		b.charge(t, chargeKey, 700)
		require.Equal(t, messages.CodeDeadLettered, b.answers.waitAnswers(t, chargeKey, 1)[0].Code)

		refundKey := newKey()
		b.publish(t, messages.KindPaymentRefund, refundKey, messages.RefundRequest{ChargeKey: chargeKey, Amount: 100})
		answer := b.answers.waitAnswers(t, refundKey, 1)[0]
		require.Equal(t, messages.StatusFailed, answer.Status, "%+v", answer)
		require.Equal(t, messages.CodeChargeNotFound, answer.Code)
	})

	// The README's "Not covered" row: a worker frozen after it began a try
	// (SIGSTOP, a frozen container) past its lock; another worker finds the
	// try unreported and the key out of tries, and dead-letters it; then the
	// frozen worker resumes and calls the provider. The key must be voided
	// at the provider first, so that the late call charges nothing.
	t.Run("FrozenCallCannotChargeAfterDeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		key := newKey()
		resume, called := make(chan struct{}), make(chan struct{})
		var froze atomic.Bool
		b.startWorker(t, nil, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, k string) bool {
				if at == processor.AfterBegin && k == key && froze.CompareAndSwap(false, true) {
					<-resume // paused: no watchdog runs, the lock expires
				}
				if at == processor.AfterOperation && k == key {
					close(called)
				}
				return false
			}
		})
		b.charge(t, key, 900)
		eventuallyf(t, 10*time.Second, froze.Load, "the first worker froze after Begin")
		b.startWorker(t, nil, nil) // the redelivery finds the key out of tries
		answer := b.answers.waitAnswers(t, key, 1)[0]
		close(resume)
		<-called // the resumed worker's call reached the provider
		b.drained(t)
		if answer.Code == messages.CodeDeadLettered {
			require.Zero(t, b.charges(t), "told dead_lettered, then charged by the frozen call")
		} else {
			require.Equal(t, messages.CodeOutcomeUnknown, answer.Code, "%+v", answer)
		}
	})

	// Found by the fault explorer (seed 55): a delivery paused after Begin
	// on the key's last try, past its lock's TTL. Another delivery took the
	// key over, found it out of tries with a history it could not settle
	// (the provider's lookup down) and dead-lettered it as outcome_unknown.
	// The paused delivery then woke up on what it had read before the
	// pause (last try, effect none): it called the provider without the
	// lock, and, out of tries, published a dead-letter copy claiming
	// Dlq-Effect: none before its fenced record write failed. A delivery
	// now confirms its lock before each provider call and before the copy.
	t.Run("APausedDeliveryActsOnNothingItReadBeforeThePause", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.cfg.Retry = quickPolicy(0) // one call a try: the copy follows it at once
		key := newKey()
		p := &scripted{sim: b.sim, script: []callFault{transient}, repeatLast: true}
		p.askFailures.Store(1 << 20) // the provider cannot be asked: the takeover says unknown
		var afterResume atomic.Int32
		var resumed atomic.Bool
		p.note = func(_ context.Context, call string) {
			if resumed.Load() && call == "charge" {
				afterResume.Add(1)
			}
		}
		mux := processor.NewMux()
		charge.Register(mux, p)
		resume, done := make(chan struct{}), make(chan struct{})
		var froze atomic.Bool
		b.startWorker(t, mux, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, k string) bool {
				if at == processor.AfterBegin && k == key && froze.CompareAndSwap(false, true) {
					<-resume // paused: no watchdog runs, the lock expires
					resumed.Store(true)
				}
				if at == processor.AfterOperation && k == key && resumed.Load() {
					close(done)
				}
				return false
			}
		})
		b.charge(t, key, 700)
		eventuallyf(t, 10*time.Second, froze.Load, "the first worker froze after Begin")
		b.startWorker(t, mux, nil) // the redelivery takes the key over
		answer := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.CodeOutcomeUnknown, answer.Code, "%+v", answer)
		require.Equal(t, dedupe.EffectUnknown, b.deadLetter(t, messages.KindPaymentCharge).Header.Get(messages.HeaderDlqEffect))
		// Past the dead-letter stream's duplicate window: a copy made now
		// is kept, as the explorer's was (a re-drive ran in between).
		time.Sleep(3 * processor.DeadLetterDuplicates)
		close(resume)
		<-done
		b.drained(t)
		s, err := b.js.Stream(context.Background(), b.cfg.Topology.DeadLetterStream)
		require.NoError(t, err)
		info, err := s.Info(context.Background())
		require.NoError(t, err)
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
			m, err := s.GetMsg(context.Background(), seq)
			require.NoError(t, err)
			require.Equal(t, dedupe.EffectUnknown, m.Header.Get(messages.HeaderDlqEffect),
				"dead-letter copy %d claims what the key's history does not hold", seq)
		}
		require.Zero(t, afterResume.Load(), "the paused delivery called the provider without the lock")
	})

	// Found by the chaos suite's provider-outage-mix: a client re-sends its
	// command after the dedupe window while the first copy still runs; the
	// first copy runs out of tries and is dead-lettered as dead_lettered;
	// the second copy, already queued, then ran as a re-drive and took
	// effect - after the client was told it never would. Every copy
	// published before the dead letter ends as that dead letter.
	t.Run("ACopyQueuedBeforeTheDeadLetterEndsWithIt", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.cfg.DedupeWindow = 100 * time.Millisecond
		release := make(chan struct{})
		var calls atomic.Int32
		slow := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if calls.Add(1) == 1 {
				<-release
				return messages.ChargeData{}, processor.TransientError(errors.New("unavailable"))
			}
			return b.sim.Charge(ctx, key, req) // the provider is back
		}}
		mux := processor.NewMux()
		charge.Register(mux, slow)
		b.startWorker(t, mux, func(c *processor.Config) { c.Retry = quickPolicy(0) })

		key := newKey()
		b.charge(t, key, 800)
		eventuallyf(t, 10*time.Second, func() bool { return calls.Load() == 1 }, "the first copy is in the provider")
		waitPast(t, 150*time.Millisecond)
		require.False(t, b.charge(t, key, 800).Duplicate, "a second copy, after the window")
		time.Sleep(300 * time.Millisecond) // it meets the first copy's lock
		close(release)

		answers := b.answers.waitAnswers(t, key, 2)
		for _, a := range answers {
			require.Equal(t, messages.CodeDeadLettered, a.Code, "every copy sent before the dead letter ends as it: %+v", a)
		}
		b.drained(t)
		require.Zero(t, b.charges(t), "told dead_lettered, then charged by the queued copy")
	})

	// Found by the explorer once it cut the clients' network (seed 89): a
	// client re-sent its command after the dedupe window, just before it
	// was told the first copy's dead_lettered, over a link that added a
	// few hundred milliseconds; the copy reached NATS after the fence's
	// 100ms margin and ran as a re-drive, and charged. The fence now
	// covers a copy that reaches NATS up to a second after the dead
	// letter; one published 300ms after it ends as that dead letter.
	t.Run("ACopySlowedOnTheClientsLinkEndsWithTheDeadLetter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.cfg.DedupeWindow = 100 * time.Millisecond
		var calls atomic.Int32
		flaky := &funcProvider{charge: func(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
			if calls.Add(1) == 1 {
				return messages.ChargeData{}, processor.TransientError(errors.New("unavailable"))
			}
			return b.sim.Charge(ctx, key, req) // the provider is back
		}}
		mux := processor.NewMux()
		charge.Register(mux, flaky)
		b.startWorker(t, mux, func(c *processor.Config) { c.Retry = quickPolicy(0) })

		key := newKey()
		b.charge(t, key, 800)
		first := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.CodeDeadLettered, first.Code, "%+v", first)
		time.Sleep(300 * time.Millisecond) // the copy on its way over a slow link
		require.False(t, b.charge(t, key, 800).Duplicate, "a second copy, after the window")

		answers := b.answers.waitAnswers(t, key, 2)
		require.Equal(t, messages.CodeDeadLettered, answers[1].Code, "a copy that reached NATS 300ms after the dead letter ends as it: %+v", answers[1])
		b.drained(t)
		require.Zero(t, b.charges(t), "told dead_lettered, then charged by a copy slowed on the client's link")
	})

	// Suspected, confirmed: on a Redis Cluster (here: SeparateEffects, the
	// same path) a worker paused between Begin and applying a cart.add's
	// effect could add after its key was answered dead_lettered.
	t.Run("PausedEffectCannotApplyAfterDeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries = 1
		b.cfg.SeparateEffects = true
		key := newKey()
		resume, called := make(chan struct{}), make(chan struct{})
		var froze atomic.Bool
		b.startWorker(t, nil, func(c *processor.Config) {
			c.Failpoint = func(at processor.Failpoint, k string) bool {
				if at == processor.AfterBegin && k == key && froze.CompareAndSwap(false, true) {
					<-resume
				}
				if at == processor.AfterOperation && k == key {
					close(called) // the effect was applied, or refused
				}
				return false
			}
		})
		b.publish(t, messages.KindCartAdd, key, messages.CartAddRequest{CartID: "cart_frozen", SKU: "SKU-1", Quantity: 2})
		eventuallyf(t, 10*time.Second, froze.Load, "the first worker froze after Begin")
		b.startWorker(t, nil, nil)
		answer := b.answers.waitAnswers(t, key, 1)[0]
		close(resume)
		<-called
		b.drained(t)
		quantity := cartQuantity(t, b, "cart_frozen", "SKU-1")
		switch answer.Code {
		case messages.CodeDeadLettered:
			require.Zero(t, quantity, "told dead_lettered, then the paused worker added the item")
		default:
			require.Equal(t, messages.StatusSucceeded, answer.Status, "%+v", answer)
			require.EqualValues(t, 2, quantity)
		}
	})
}

// Suspected in issue 17, confirmed: the dead-letter copy ran without the
// lock's watchdog. A copy that takes longer than LOCK_TTL (the dead-letter
// stream slow or gone, its publish retried) let the lock expire under the
// delivery that was still dead-lettering the key, so another delivery of
// the key could run meanwhile. The watchdog now covers every step a
// delivery takes holding the lock.
func TestProcessor_DeadLetterHoldsTheLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cfg.MaxTries = 1
	p := &scripted{sim: b.sim, script: []callFault{transient}, repeatLast: true}
	mux := processor.NewMux()
	charge.Register(mux, p)
	b.startWorker(t, mux, nil)
	// No dead-letter stream: every copy fails, retried for a few seconds.
	require.NoError(t, b.js.DeleteStream(context.Background(), b.cfg.Topology.DeadLetterStream))

	key := newKey()
	b.charge(t, key, 500)
	lockKey := b.cfg.KeyPrefix + "idem:lock:{" + key + "}"
	var first string
	eventuallyf(t, 10*time.Second, func() bool {
		first = b.rdb.Get(context.Background(), lockKey).Val()
		return first != ""
	}, "the delivery holds the lock")
	taken := time.Now()
	for b.rdb.Get(context.Background(), lockKey).Val() == first {
		time.Sleep(10 * time.Millisecond)
	}
	held := time.Since(taken)
	require.Greater(t, held, 2*b.cfg.LockTTL,
		"the lock lived %v while its delivery retried the dead-letter copy: it expired under it (LOCK_TTL %v)", held, b.cfg.LockTTL)
}

// TestProcessor_Resolution holds contract v1.2's "Resolution": a key
// answered outcome_unknown settles itself. The workers ask the provider by
// key from ResolveAfter on, and publish the final outcome; nothing of it
// lives only in one process's memory.
func TestProcessor_Resolution(t *testing.T) {
	t.Parallel()

	// The charge took effect, its response was lost, and the provider could
	// not be asked at the last try: outcome_unknown. The worker that said so
	// stops; another one, later, finds the charge and publishes it.
	t.Run("ToTheEffectTheProviderHolds", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries, b.cfg.ResolveAfter = 1, 200*time.Millisecond
		p := &scripted{sim: b.sim, script: []callFault{chargedThenLost}, repeatLast: true}
		p.askFailures.Store(1 << 20) // the provider cannot be asked while the first worker lives
		mux := processor.NewMux()
		charge.Register(mux, p)
		refund.Register(mux, b.sim)
		first := b.startWorker(t, mux, nil)

		key := newKey()
		b.charge(t, key, 1200)
		unknown := b.answers.waitAnswers(t, key, 1)[0]
		require.Equal(t, messages.CodeOutcomeUnknown, unknown.Code, "%+v", unknown)
		require.Equal(t, messages.Fingerprint(messages.ChargeRequest{AccountID: "acct_42", Amount: 1200, Currency: "EUR"}),
			unknown.Fingerprint, "the refusal names its message")
		// A refund of it waits for it (never charge_not_found while it may exist).
		refundKey := newKey()
		b.publish(t, messages.KindPaymentRefund, refundKey, messages.RefundRequest{ChargeKey: key, Amount: 200})
		stopNow(t, first)
		require.Zero(t, b.answers.count(refundKey), "the refund waits")

		p.askFailures.Store(0)
		b.startWorker(t, mux, nil)
		settled := b.answers.waitAnswers(t, key, 2)[1]
		require.Equal(t, messages.StatusSucceeded, settled.Status, "%+v", settled)
		requireSameOutcome(t, settled, b.stored(t, key))
		require.Equal(t, 1, b.charges(t))
		refunded := b.answers.waitAnswers(t, refundKey, 1)[0]
		require.Equal(t, messages.StatusSucceeded, refunded.Status, "%+v", refunded)
		requireScheduleEmpty(t, b)
	})

	// The call timed out before it reached the provider; at the last try the
	// provider could not be asked. Later it can: nothing was charged, the key
	// is voided, and dead_lettered is published; a re-drive stays dead.
	t.Run("ToNothingVoided", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxTries, b.cfg.ResolveAfter = 1, 200*time.Millisecond
		b.cfg.DedupeWindow = 100 * time.Millisecond
		p := &scripted{sim: b.sim, script: []callFault{lostBeforeIt}, repeatLast: true}
		p.askFailures.Store(1)
		mux := processor.NewMux()
		charge.Register(mux, p)
		b.startWorker(t, mux, nil)

		key := newKey()
		b.charge(t, key, 1300)
		require.Equal(t, messages.CodeOutcomeUnknown, b.answers.waitAnswers(t, key, 1)[0].Code)
		settled := b.answers.waitAnswers(t, key, 2)[1]
		require.Equal(t, messages.CodeDeadLettered, settled.Code, "%+v", settled)
		require.NotEmpty(t, settled.Fingerprint)
		require.True(t, b.rdb.HExists(context.Background(), layout.Sim(b.cfg.KeyPrefix, false).Voided, key).Val())
		requireScheduleEmpty(t, b)

		waitPast(t, 150*time.Millisecond)
		b.charge(t, key, 1300) // a re-drive
		again := b.answers.waitAnswers(t, key, 3)[2]
		require.Equal(t, messages.CodeDeadLettered, again.Code, "a voided key never takes effect: %+v", again)
		require.Zero(t, b.charges(t))
	})
}

// The tenant a command was sent for (Idempay-Tenant, contract v1.2)
// reaches its operation and provider - the calls of the last try and of
// the resolver included, which read it from the key's record - so that a
// provider keeping keys per account (Stripe Connect) asks the right one.
func TestProcessor_Tenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cfg.MaxTries, b.cfg.ResolveAfter = 1, 200*time.Millisecond
	var mu sync.Mutex
	seen := map[string][]string{} // call -> tenants
	note := func(ctx context.Context, call string) {
		tenant, _ := processor.TenantFrom(ctx)
		mu.Lock()
		seen[call] = append(seen[call], tenant)
		mu.Unlock()
	}
	p := &scripted{sim: b.sim, script: []callFault{chargedThenLost}, repeatLast: true, note: note}
	p.askFailures.Store(1) // the last try cannot ask: the resolver does, later
	mux := processor.NewMux()
	charge.Register(mux, p)
	b.startWorker(t, mux, nil)

	key := newKey()
	b.publish(t, messages.KindPaymentCharge, key, messages.ChargeRequest{AccountID: "acct_42", Amount: 5, Currency: "EUR"},
		messages.HeaderTenant, "acme")
	require.Equal(t, messages.CodeOutcomeUnknown, b.answers.waitAnswers(t, key, 1)[0].Code)
	require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 2)[1].Status, "resolved")
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, seen["charge"])
	require.NotEmpty(t, seen["void"], "the last try and the resolver voided")
	for call, tenants := range seen {
		for _, tenant := range tenants {
			require.Equal(t, "acme", tenant, "every %s call is made for the command's tenant", call)
		}
	}
}

func requireScheduleEmpty(t *testing.T, b *testBundle) {
	t.Helper()
	eventuallyf(t, 10*time.Second, func() bool {
		return b.rdb.ZCard(context.Background(), b.cfg.KeyPrefix+dedupe.ResolveKeyDefault).Val() == 0
	}, "the resolution schedule empties")
}

// callFault is what one provider call does in a scripted provider.
type callFault int

const (
	succeed         callFault = iota // the call charges and answers
	transient                        // refused before anything happened
	chargedThenLost                  // charges, then the response is lost
	lostBeforeIt                     // times out before reaching the provider: no charge, but who knows
)

// scripted is a charge provider that follows a script, call by call, over
// the simulated provider's ledger; past its end it repeats the last step
// (repeatLast) or succeeds.
type scripted struct {
	sim interface {
		charge.Provider
		charge.Lookup
		charge.Voider
	}
	script     []callFault
	repeatLast bool
	// askFailures is how many lookups and voids fail before they work.
	askFailures atomic.Int32
	// note, if set, is told of every call with its context.
	note func(ctx context.Context, call string)

	mu    sync.Mutex
	calls map[string]int
}

var errAskFailed = errors.New("scripted: the provider's lookup is down")

func (s *scripted) askFails() bool { return s.askFailures.Add(-1) >= 0 }

var (
	_ charge.Provider = (*scripted)(nil)
	_ charge.Lookup   = (*scripted)(nil)
	_ charge.Voider   = (*scripted)(nil)
)

func (s *scripted) next(key string) callFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	i := s.calls[key]
	s.calls[key]++
	switch {
	case i < len(s.script):
		return s.script[i]
	case s.repeatLast && len(s.script) > 0:
		return s.script[len(s.script)-1]
	}
	return succeed
}

func (s *scripted) noteCall(ctx context.Context, call string) {
	if s.note != nil {
		s.note(ctx, call)
	}
}

func (s *scripted) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	s.noteCall(ctx, "charge")
	switch s.next(key) {
	case transient:
		return messages.ChargeData{}, processor.TransientError(errors.New("scripted: unavailable"))
	case chargedThenLost:
		if _, err := s.sim.Charge(ctx, key, req); err != nil {
			return messages.ChargeData{}, err
		}
		return messages.ChargeData{}, processor.AmbiguousError(errors.New("scripted: charged, response lost"))
	case lostBeforeIt:
		return messages.ChargeData{}, processor.AmbiguousError(errors.New("scripted: timed out"))
	case succeed:
	}
	return s.sim.Charge(ctx, key, req)
}

func (s *scripted) LookupCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	s.noteCall(ctx, "lookup")
	if s.askFails() {
		return messages.ChargeData{}, false, errAskFailed
	}
	return s.sim.LookupCharge(ctx, key, req)
}

func (s *scripted) VoidCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	s.noteCall(ctx, "void")
	if s.askFails() {
		return messages.ChargeData{}, false, errAskFailed
	}
	return s.sim.VoidCharge(ctx, key, req)
}

// chargeOnly hides every capability of a provider but Charge.
type chargeOnly struct{ p charge.Provider }

func (c chargeOnly) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	return c.p.Charge(ctx, key, req)
}
