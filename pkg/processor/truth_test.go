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
		b.cfg.MaxDeliver = 1
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
		b.cfg.MaxDeliver = 1
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
		b.cfg.MaxDeliver = 2
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
		b.cfg.MaxDeliver = 1
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

	// Suspected, confirmed: on a Redis Cluster (here: SeparateEffects, the
	// same path) a worker paused between Begin and applying a cart.add's
	// effect could add after its key was answered dead_lettered.
	t.Run("PausedEffectCannotApplyAfterDeadLettered", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.cfg.MaxDeliver = 1
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

// callFault is what one provider call does in a scripted provider.
type callFault int

const (
	succeed         callFault = iota // the call charges and answers
	transient                        // refused before anything happened
	chargedThenLost                  // charges, then the response is lost
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

	mu    sync.Mutex
	calls map[string]int
}

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

func (s *scripted) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	switch s.next(key) {
	case transient:
		return messages.ChargeData{}, processor.TransientError(errors.New("scripted: unavailable"))
	case chargedThenLost:
		if _, err := s.sim.Charge(ctx, key, req); err != nil {
			return messages.ChargeData{}, err
		}
		return messages.ChargeData{}, processor.AmbiguousError(errors.New("scripted: charged, response lost"))
	}
	return s.sim.Charge(ctx, key, req)
}

func (s *scripted) LookupCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	return s.sim.LookupCharge(ctx, key, req)
}

func (s *scripted) VoidCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	return s.sim.VoidCharge(ctx, key, req)
}

// chargeOnly hides every capability of a provider but Charge.
type chargeOnly struct{ p charge.Provider }

func (c chargeOnly) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	return c.p.Charge(ctx, key, req)
}
