package explore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// provider is the payment provider of a seed: each call of a key does
// what the key's script says, and whatever takes effect takes it in
// pkg/sim's ledger (sim:charges, sim:refunds, sim:voided, ...), which
// keeps the provider's promises (one charge per key, refunds within the
// charge, nothing for a voided key). It logs every call - when it started
// and ended, what it did, and whether it made the key's charge or refund -
// so that the checker can tell which call made an effect and when.
type provider struct {
	sim    *sim.Provider
	rdb    redis.UniversalClient
	ledger layout.SimLedger
	plans  map[string]*KeyPlan
	faults *faults

	mu   sync.Mutex
	keys map[string]*keyCalls
	log  []*ledger.Call

	frozen sync.WaitGroup // frozen calls still to land
}

var (
	_ charge.Provider = (*provider)(nil)
	_ charge.Lookup   = (*provider)(nil)
	_ charge.Voider   = (*provider)(nil)
	_ refund.Provider = (*provider)(nil)
	_ refund.Lookup   = (*provider)(nil)
	_ refund.Voider   = (*provider)(nil)
)

// keyCalls is one key's calls so far. mu serializes what reaches sim for
// the key, so that whether a call made the effect is read exactly (the
// effect absent before the call, present after); it is never held while a
// call waits or sleeps.
type keyCalls struct {
	mu      sync.Mutex
	n       map[ledger.Op]int
	lookups int
}

func newProvider(rdb redis.UniversalClient, prefix string, plans map[string]*KeyPlan, f *faults) (*provider, error) {
	s, err := sim.New(rdb, &sim.Config{KeyPrefix: prefix})
	if err != nil {
		return nil, err
	}
	return &provider{sim: s, rdb: rdb, ledger: s.Ledger(), plans: plans, faults: f, keys: map[string]*keyCalls{}}, nil
}

// next numbers a call of key and returns its scripted step.
func (p *provider) next(key string, op ledger.Op) (*keyCalls, int, Step) {
	p.mu.Lock()
	defer p.mu.Unlock()
	kc := p.keys[key]
	if kc == nil {
		kc = &keyCalls{n: map[ledger.Op]int{}}
		p.keys[key] = kc
	}
	kc.n[op]++
	n := kc.n[op]
	var step Step
	if plan := p.plans[key]; plan != nil && n <= len(plan.Calls) {
		step = plan.Calls[n-1]
	}
	return kc, n, step
}

// record appends a call to the log and returns it, for a frozen call to
// complete when it lands.
func (p *provider) record(c ledger.Call) *ledger.Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, &c)
	return &c
}

// landed marks a logged call as having made the key's effect.
func (p *provider) landed(c *ledger.Call, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Effect, c.EffectAt = true, at
}

// calls returns a copy of the log.
func (p *provider) calls() []ledger.Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ledger.Call, len(p.log))
	for i, c := range p.log {
		out[i] = *c
	}
	return out
}

// effect runs one call that reaches the provider (sim), holding the key's
// lock, and reports whether it made the key's effect: the effect is in
// hash after the call and was not before.
func (p *provider) effect(ctx context.Context, kc *keyCalls, hash, key string, call reachFunc) (v any, made bool, at time.Time, err error) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	bg := context.WithoutCancel(ctx)
	before, herr := p.rdb.HExists(bg, hash, key).Result()
	if herr != nil {
		return nil, false, time.Time{}, processor.TransientError(fmt.Errorf("explore: provider ledger: %w", herr))
	}
	v, err = call(ctx)
	at = time.Now()
	if before {
		return v, false, at, err
	}
	// A call whose context ended may still have run its script: ask.
	after, herr := p.rdb.HExists(bg, hash, key).Result()
	if herr != nil {
		return v, false, at, errors.Join(err, herr)
	}
	return v, after, at, err
}

// reachFunc is a call that reaches the provider (sim).
type reachFunc func(ctx context.Context) (any, error)

// do plays one scripted call of op for key: reach is the call that
// reaches the provider; it returns what the engine gets.
func (p *provider) do(ctx context.Context, key string, op ledger.Op, hash string, reach reachFunc) (any, error) {
	kc, n, step := p.next(key, op)
	if step.Kind != StepOK {
		p.faults.add("provider " + string(op) + ": " + step.Kind.String())
	}
	c := ledger.Call{Key: key, Op: op, N: n, Behaviour: step.Kind.String(), Start: time.Now()}
	var (
		v   any
		err error
	)
	switch step.Kind {
	case StepTransient:
		err = processor.TransientError(errors.New("explore: the provider is unavailable (scripted: nothing happened)"))
	case StepTimeout:
		sleep(ctx, step.Wait)
		err = processor.AmbiguousError(errors.New("explore: timed out (scripted: before the request reached the provider)"))
	case StepLost:
		_, c.Effect, c.EffectAt, err = p.effect(ctx, kc, hash, key, reach)
		// Not wrapped: the lost answer's class (a decline, say) must not
		// reach the engine.
		err = processor.AmbiguousError(fmt.Errorf("explore: the response was lost (scripted; the call returned %v)", err)) //nolint:errorlint // see above
	case StepLie:
		_, c.Effect, c.EffectAt, err = p.effect(ctx, kc, hash, key, reach)
		err = processor.TransientError(fmt.Errorf("explore: unavailable (scripted lie: the call returned %v)", err)) //nolint:errorlint // not wrapped, as for StepLost
	case StepSlow:
		time.Sleep(step.Delay) // past the lock's TTL, whatever the caller does meanwhile
		v, c.Effect, c.EffectAt, err = p.effect(context.WithoutCancel(ctx), kc, hash, key, reach)
		if err == nil && ctx.Err() != nil {
			err = processor.AmbiguousError(fmt.Errorf("explore: answered after the caller gave up: %w", context.Cause(ctx)))
		}
	case StepFrozen:
		logged := p.record(c) // completed below, and when it lands
		inFlight := context.WithoutCancel(ctx)
		p.frozen.Go(func() {
			time.Sleep(time.Until(c.Start.Add(step.Delay)))
			_, made, at, _ := p.effect(inFlight, kc, hash, key, reach)
			if made {
				p.landed(logged, at)
			}
		})
		sleep(ctx, step.Wait)
		err = processor.AmbiguousError(errors.New("explore: timed out (scripted: the request is still in flight and lands later)"))
		p.mu.Lock()
		logged.End, logged.Err = time.Now(), err.Error()
		p.mu.Unlock()
		return nil, err
	default:
		v, c.Effect, c.EffectAt, err = p.effect(ctx, kc, hash, key, reach)
	}
	c.End = time.Now()
	if err != nil {
		c.Err = err.Error()
	}
	p.record(c)
	return v, err
}

// Charge implements charge.Provider.
func (p *provider) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	v, err := p.do(ctx, key, ledger.OpCharge, p.ledger.Charges, func(ctx context.Context) (any, error) {
		return p.sim.Charge(ctx, key, req)
	})
	c, _ := v.(messages.ChargeData)
	return c, err
}

// Refund implements refund.Provider.
func (p *provider) Refund(ctx context.Context, key string, req refund.Request) (messages.RefundData, error) {
	v, err := p.do(ctx, key, ledger.OpRefund, p.ledger.Refunds, func(ctx context.Context) (any, error) {
		return p.sim.Refund(ctx, key, req)
	})
	r, _ := v.(messages.RefundData)
	return r, err
}

// ask plays a lookup or a void of key: the first LookupFailures of them
// fail (an unclassified error: the engine cannot tell), the rest ask sim
// holding the key's lock, so that a void and a frozen call landing are
// ordered.
func (p *provider) ask(ctx context.Context, key string, op ledger.Op, call func(ctx context.Context) (bool, error)) (bool, error) {
	p.mu.Lock()
	kc := p.keys[key]
	if kc == nil {
		kc = &keyCalls{n: map[ledger.Op]int{}}
		p.keys[key] = kc
	}
	kc.lookups++
	fail := p.plans[key] != nil && kc.lookups <= p.plans[key].LookupFailures
	kc.n[op]++
	c := ledger.Call{Key: key, Op: op, N: kc.n[op], Behaviour: "ok", Start: time.Now()}
	p.mu.Unlock()
	var (
		found bool
		err   error
	)
	if fail {
		c.Behaviour = "fails"
		p.faults.add("provider " + string(op) + ": fails")
		err = errors.New("explore: the provider's lookup is unavailable (scripted)")
	} else {
		kc.mu.Lock()
		found, err = call(ctx)
		kc.mu.Unlock()
	}
	c.End = time.Now()
	switch {
	case err != nil:
		c.Err = err.Error()
	case found:
		c.Err = "(found)"
	default:
		c.Err = "(not found)"
	}
	p.record(c)
	return found, err
}

// LookupCharge implements charge.Lookup.
func (p *provider) LookupCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	var out messages.ChargeData
	found, err := p.ask(ctx, key, ledger.OpLookupCharge, func(ctx context.Context) (bool, error) {
		c, found, err := p.sim.LookupCharge(ctx, key, req)
		out = c
		return found, err
	})
	return out, found, err
}

// VoidCharge implements charge.Voider.
func (p *provider) VoidCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	var out messages.ChargeData
	found, err := p.ask(ctx, key, ledger.OpVoidCharge, func(ctx context.Context) (bool, error) {
		c, found, err := p.sim.VoidCharge(ctx, key, req)
		out = c
		return found, err
	})
	return out, found, err
}

// LookupRefund implements refund.Lookup.
func (p *provider) LookupRefund(ctx context.Context, key string, req refund.Request) (messages.RefundData, bool, error) {
	var out messages.RefundData
	found, err := p.ask(ctx, key, ledger.OpLookupRefund, func(ctx context.Context) (bool, error) {
		r, found, err := p.sim.LookupRefund(ctx, key, req)
		out = r
		return found, err
	})
	return out, found, err
}

// VoidRefund implements refund.Voider.
func (p *provider) VoidRefund(ctx context.Context, key string, req refund.Request) (messages.RefundData, bool, error) {
	var out messages.RefundData
	found, err := p.ask(ctx, key, ledger.OpVoidRefund, func(ctx context.Context) (bool, error) {
		r, found, err := p.sim.VoidRefund(ctx, key, req)
		out = r
		return found, err
	})
	return out, found, err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
