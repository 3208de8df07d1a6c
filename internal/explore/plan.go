package explore

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// The deployment's timing in every seed: short, so that a lock expires, a
// delivery is redelivered and a re-send passes the dedupe window within
// seconds.
const (
	dedupeWindow = time.Second
	ackWait      = time.Second
	lockTTL      = time.Second
	nakDelay     = 100 * time.Millisecond
	maxNakDelay  = 500 * time.Millisecond
	lockedDelay  = 50 * time.Millisecond
	// spread is how long the first sends of a seed's keys are spread over.
	spread = 2 * time.Second
	// maxFreeze is the longest a frozen call stays in flight.
	maxFreeze = 6 * time.Second
)

// Settings are a seed's deployment and its mix of faults: the "swarm" the
// seed draws before any key, so that seeds explore different regimes (an
// outage of transient errors, lost responses, crashes) rather than one
// average.
type Settings struct {
	// Workers is how many processors share the consumer.
	Workers int
	// MaxTries is the tries of a key (processor.Config.MaxTries).
	MaxTries int
	// Retries is the in-delivery retries of each error class.
	Retries uint64

	// PTransient, PLost, PTimeout, PSlow and PFrozen are the chances of a
	// scripted call's behaviours: a transient error; an effect whose
	// response is lost (ambiguous); a timeout before the request reached
	// the provider (ambiguous, no effect); a call slower than the lock's
	// TTL; a call frozen in flight that lands later. The rest take effect
	// and answer.
	PTransient, PLost, PTimeout, PSlow, PFrozen float64
	// POutage is the chance that a key's script is long enough to use all
	// its tries (an outage), rather than recovering after a few calls.
	POutage float64
	// PDecline is the share of charges to an account the provider
	// declines; PRefund the share of keys that refund an earlier charge.
	PDecline, PRefund float64
	// PLookupFail is the chance that a key's lookups and voids fail at
	// first.
	PLookupFail float64
	// PCrash is the chance that a key's deliveries crash or pause at a
	// failpoint.
	PCrash float64
	// PResend, PReuse and PRedrive are the chances of a client re-send of
	// the same body, of another body under the key, and of a re-drive after
	// a dead letter or an unknown outcome.
	PResend, PReuse, PRedrive float64
	// Restart, if set, restarts one worker at RestartAt.
	Restart   bool
	RestartAt time.Duration
}

// drawSettings draws a seed's settings.
func drawSettings(rng *rand.Rand) Settings {
	s := Settings{
		Workers:  2 + rng.IntN(2),
		MaxTries: 2 + rng.IntN(2),
		Retries:  1 + rng.Uint64N(3),
	}
	s.PTransient = 0.3 + 0.65*rng.Float64()
	rest := 1 - s.PTransient
	s.PLost = rest * rng.Float64() * 0.6
	s.PTimeout = rest * rng.Float64() * 0.2
	s.PSlow = rest * rng.Float64() * 0.1
	s.PFrozen = rest * rng.Float64() * 0.15
	s.POutage = 0.2 + 0.6*rng.Float64()
	s.PDecline = 0.15 * rng.Float64()
	s.PRefund = 0.1 + 0.25*rng.Float64()
	s.PLookupFail = 0.4 * rng.Float64()
	s.PCrash = 0.3 * rng.Float64()
	s.PResend = 0.4 * rng.Float64()
	s.PReuse = 0.1 * rng.Float64()
	s.PRedrive = 0.5 * rng.Float64()
	s.Restart = rng.Float64() < 0.3
	s.RestartAt = time.Duration(rng.Int64N(int64(3 * time.Second)))
	return s
}

// StepKind is what the provider does on one call.
type StepKind int

// The behaviours of a provider call.
const (
	// StepOK takes effect (or declines, for a declined account) and answers.
	StepOK StepKind = iota
	// StepTransient refuses before anything happened.
	StepTransient
	// StepLost takes effect, then its response is lost: ambiguous.
	StepLost
	// StepTimeout times out before the request reached the provider:
	// ambiguous, and nothing happened.
	StepTimeout
	// StepSlow takes longer than the lock's TTL, then takes effect and
	// answers (ambiguous if the caller gave up meanwhile).
	StepSlow
	// StepFrozen: the caller times out (ambiguous) while the request stays
	// in flight and lands at the provider later, whatever the caller's
	// context says - after the key's last try, often.
	StepFrozen
	// StepLie takes effect and answers with a transient error ("certainly
	// nothing happened"): a provider, or an adapter, that lies. Never
	// drawn: the negative control of the checker (TestRunSeed_CatchesALie).
	StepLie
)

func (k StepKind) String() string {
	switch k {
	case StepTransient:
		return "transient"
	case StepLost:
		return "lost_response"
	case StepTimeout:
		return "timeout_before"
	case StepSlow:
		return "slow"
	case StepFrozen:
		return "frozen"
	case StepLie:
		return "lie"
	default:
		return "ok"
	}
}

// Step is one scripted call.
type Step struct {
	Kind StepKind
	// Delay is how long a slow call takes, or after how long a frozen one
	// lands; Wait how long the caller of a frozen or timed-out call waits.
	Delay, Wait time.Duration
}

// Fault is a crash or a pause of a key's delivery at a failpoint.
type Fault struct {
	At processor.Failpoint
	// Nth is the occurrence of the failpoint on the key it fires at (from 1).
	Nth int
	// Pause, when positive, blocks the delivery this long; zero abandons
	// it as a dead process would (the lock kept, the message un-acked).
	Pause time.Duration
}

// Resend is a client's re-send of a key.
type Resend struct {
	// After is the time from the key's first send.
	After time.Duration
	// Reuse sends another body under the key.
	Reuse bool
}

// KeyPlan is everything a seed does with one key.
type KeyPlan struct {
	Index int
	Key   string
	// Command is a messages.ChargeRequest or a messages.RefundRequest.
	Command messages.Command
	// SendAt is when the first send goes, from the seed's start.
	SendAt time.Duration
	// Calls scripts the provider's calls of the key, in order; calls past
	// the script take effect and answer (the provider recovered).
	Calls []Step
	// LookupFailures is how many lookups and voids of the key fail first.
	LookupFailures int
	// Faults are the key's failpoint crashes and pauses.
	Faults []Fault
	// Resends are the client's re-sends.
	Resends []Resend
	// Redrive re-sends the key once the dedupe window has passed when its
	// first send was answered dead_lettered or outcome_unknown, or not at
	// all.
	Redrive bool
	// Gateway sends every send of the key through the HTTP gateway, as a
	// web client would, instead of through pkg/client.
	Gateway bool
	// Tenant and ClientKey are set for a key the gateway serves as a
	// tenant's (Plan.GatewayTenants): the tenant whose API key the client
	// sends, and its Idempotency-Key. Key is then the scoped key,
	// client.ScopedKey(Tenant, ClientKey): what the workers, the provider
	// and the checker see.
	Tenant, ClientKey string
}

// NetFault is a fault of the network between a seed's workers and one
// server, or between its clients and NATS, injected by a proxy of the
// seed's own (testenv.Proxy) in front of the server: what went through it
// when it starts may have been done with its reply lost.
type NetFault struct {
	// At is when it starts, from the seed's start; For how long it lasts.
	At, For time.Duration
	// Kind is testenv.FaultReset (every connection reset as data moves),
	// testenv.FaultHang (nothing moves; the connections are closed at the
	// end) or testenv.FaultLatency (Delay added to every exchange).
	Kind  string
	Delay time.Duration
}

// Plan is a seed's whole schedule.
type Plan struct {
	Seed     uint64
	Settings Settings
	// Drawn is the keys asked for (--keys); Keys holds them, then a cart
	// seed's cart adds.
	Drawn int
	Keys  []*KeyPlan
	// RedisFaults and NATSFaults are the seed's faults between its workers
	// and Redis, and between its workers and NATS; ClientFaults between its
	// clients and NATS (a command published, or an answer sent, when one
	// starts may be lost on the way, and the client reconnects). Each list
	// is in order, and apart from the others; none in most seeds.
	RedisFaults, NATSFaults, ClientFaults []NetFault
	// GatewayWait is the HTTP gateway's Wait (HTTP_WAIT) when keys go
	// through it (KeyPlan.Gateway): short ones answer 202 and leave the
	// client reading its Location.
	GatewayWait time.Duration
	// GatewayTenants: the gateway authenticates API keys, and its keys are
	// tenants' (contract v1.2: scoped). Keys 2j and 2j+1 send the same
	// Idempotency-Key, "order-j", as two tenants: two operations.
	GatewayTenants bool
}

// gatewayTenants are the tenants of a seed with GatewayTenants.
var gatewayTenants = [2]string{"acme", "globex"}

// pNetFaults is the share of seeds with faults between the workers and
// one server (drawn for each server apart).
const pNetFaults = 0.4

// The streams of the generators of the network faults: their own, so that
// the seeds' keys and settings are what they were before the explorer
// played these faults.
const (
	redisFaultStream    = 0x7e7fa
	natsFaultStream     = 0x7e7fb
	clientFaultStream   = 0x7e7fc
	gatewayStream       = 0x7e7fd
	gatewayTenantStream = 0x7e7fe
	cartStream          = 0x7e7ff
	// cartKeyStreams is the first of the cart keys' generators, one per
	// key, far from the keys' own (1 to n).
	cartKeyStreams = 0xca57 << 32
)

// pGatewaySeeds is the share of seeds that send keys through the HTTP
// gateway, and pGatewayKey the share of their keys that go that way.
const (
	pGatewaySeeds = 0.4
	pGatewayKey   = 0.5
)

// drawGateway draws which keys go through the gateway, from a generator
// of its own (the seeds' keys, settings and faults are unchanged).
func (p *Plan) drawGateway() {
	rng := rand.New(rand.NewPCG(p.Seed, gatewayStream))
	if rng.Float64() >= pGatewaySeeds {
		return
	}
	p.GatewayWait = []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 4 * time.Second}[rng.IntN(3)]
	for _, k := range p.Keys {
		k.Gateway = rng.Float64() < pGatewayKey
	}
	// Drawn apart, so that the seeds that sent keys through the gateway
	// before tenants were played (17 and 138 found lies) keep their keys.
	p.GatewayTenants = rand.New(rand.NewPCG(p.Seed, gatewayTenantStream)).Float64() < 0.5
	if !p.GatewayTenants {
		return
	}
	scoped := map[string]string{} // the drawn key -> the scoped key
	for _, k := range p.Keys {
		if k.Gateway {
			k.Tenant, k.ClientKey = gatewayTenants[k.Index%2], fmt.Sprintf("order-%d", k.Index/2)
			scoped[k.Key] = client.ScopedKey(k.Tenant, k.ClientKey)
			k.Key = scoped[k.Key]
		}
	}
	for _, k := range p.Keys {
		if r, ok := k.Command.(messages.RefundRequest); ok && scoped[r.ChargeKey] != "" {
			r.ChargeKey = scoped[r.ChargeKey]
			k.Command = r
		}
	}
}

// viaGateway reports whether a key of p goes through the gateway.
func (p *Plan) viaGateway() bool {
	for _, k := range p.Keys {
		if k.Gateway {
			return true
		}
	}
	return false
}

// drawNetFaults draws a seed's network faults in front of one server.
func drawNetFaults(seed, stream uint64) []NetFault {
	rng := rand.New(rand.NewPCG(seed, stream))
	if rng.Float64() >= pNetFaults {
		return nil
	}
	var out []NetFault
	at := time.Duration(rng.Int64N(int64(spread / 2)))
	for range 1 + rng.IntN(4) {
		f := NetFault{At: at}
		switch x := rng.Float64(); {
		case x < 0.4:
			f.Kind, f.For = testenv.FaultReset, 20*time.Millisecond+time.Duration(rng.Int64N(int64(300*time.Millisecond)))
		case x < 0.75:
			f.Kind, f.For = testenv.FaultHang, 100*time.Millisecond+time.Duration(rng.Int64N(int64(lockTTL)))
		default:
			f.Kind, f.For = testenv.FaultLatency, 500*time.Millisecond+time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
			f.Delay = 20*time.Millisecond + time.Duration(rng.Int64N(int64(200*time.Millisecond)))
		}
		out = append(out, f)
		at += f.For + 200*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)))
	}
	return out
}

// NewPlan draws the schedule of seed with n keys. Key i's plan depends
// only on the seed, i and the settings, so a run with more keys keeps the
// first ones' plans.
func NewPlan(seed uint64, n int) *Plan {
	p := newPlanWithoutGateway(seed, n)
	p.drawCarts(n)
	p.drawGateway()
	return p
}

// pCartSeeds is the share of seeds that also add to carts: one cart.add
// key per cartShare keys, appended after the n keys (so those keep their
// plans, and so do their gateway draws).
const (
	pCartSeeds = 0.4
	cartShare  = 5
)

// cartSKUs are the SKUs the explorer's carts hold.
var cartSKUs = [3]string{"SKU-RED-M", "SKU-BLUE-L", "SKU-MUG"}

// drawCarts appends a cart seed's cart.add keys: four carts, three SKUs,
// so that keys add to the same lines; each key's faults, re-sends
// (another quantity for a re-use) and re-drive drawn as any key's, from
// generators of their own. A cart add calls no provider: its effect is
// the cart line in Redis, applied in the commit.
func (p *Plan) drawCarts(n int) {
	if rand.New(rand.NewPCG(p.Seed, cartStream)).Float64() >= pCartSeeds {
		return
	}
	for j := range max(1, n/cartShare) {
		rng := rand.New(rand.NewPCG(p.Seed, cartKeyStreams+uint64(j)))
		k := p.drawKey(rng, n+j, nil)
		k.Command = messages.CartAddRequest{CartID: fmt.Sprintf("cart-%d", rng.IntN(4)), SKU: cartSKUs[rng.IntN(len(cartSKUs))], Quantity: 1 + rng.Int64N(5)}
		k.Calls, k.LookupFailures = nil, 0
		p.Keys = append(p.Keys, k)
	}
}

// newPlanWithoutGateway is NewPlan as it was before the explorer drove the
// gateway (every key through pkg/client): the plan under which the
// findings before it were made, for their regression tests.
func newPlanWithoutGateway(seed uint64, n int) *Plan {
	p := &Plan{Seed: seed, Drawn: n, Settings: drawSettings(rand.New(rand.NewPCG(seed, 0x5eed))),
		RedisFaults: drawNetFaults(seed, redisFaultStream), NATSFaults: drawNetFaults(seed, natsFaultStream),
		ClientFaults: drawNetFaults(seed, clientFaultStream)}
	var charges []*KeyPlan
	for i := range n {
		rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
		k := p.drawKey(rng, i, charges)
		if _, ok := k.Command.(messages.ChargeRequest); ok {
			charges = append(charges, k)
		}
		p.Keys = append(p.Keys, k)
	}
	return p
}

// liar makes every key's first call a lie (it takes effect and says it
// certainly did not) and every other fail transiently, with no other
// fault: an engine that believes the provider dead-letters every key as
// "did not take effect" while the provider charged it. It is the negative
// control that shows the checker catches that answer.
func (p *Plan) liar() {
	p.Keys = p.Keys[:p.Drawn]               // charges only, as before the carts
	perTry := int(p.Settings.Retries+1) * 2 //nolint:gosec // Retries is 1 to 3
	for _, k := range p.Keys {
		k.Command = messages.ChargeRequest{AccountID: "acct_liar", Amount: 100 + int64(k.Index), Currency: "EUR"}
		k.Calls = []Step{{Kind: StepLie}}
		for range perTry * p.Settings.MaxTries {
			k.Calls = append(k.Calls, Step{Kind: StepTransient})
		}
		k.Faults, k.Resends, k.Redrive, k.LookupFailures = nil, nil, false, 0
	}
	p.Settings.Restart = false
	p.RedisFaults, p.NATSFaults, p.ClientFaults = nil, nil, nil
	for _, k := range p.Keys {
		k.Gateway, k.Tenant, k.ClientKey = false, "", ""
	}
}

// drawKey draws key i's plan; charges are the charges drawn before it.
func (p *Plan) drawKey(rng *rand.Rand, i int, charges []*KeyPlan) *KeyPlan {
	s := p.Settings
	k := &KeyPlan{Index: i, Key: keyFrom(rng), SendAt: time.Duration(rng.Int64N(int64(spread)))}
	if len(charges) > 0 && rng.Float64() < s.PRefund {
		target := charges[rng.IntN(len(charges))]
		charged := target.Command.(messages.ChargeRequest).Amount //nolint:errcheck,forcetypeassert // charges holds charges only
		amount := 1 + rng.Int64N(charged/2+1)
		if rng.Float64() < 0.2 {
			amount = charged + 1 + rng.Int64N(100) // more than the charge
		}
		k.Command = messages.RefundRequest{ChargeKey: target.Key, Amount: amount, Reason: "explore"}
		// Racing its charge: from just before it to a few seconds after.
		k.SendAt = max(0, target.SendAt-300*time.Millisecond+time.Duration(rng.Int64N(int64(3*time.Second))))
	} else {
		account := fmt.Sprintf("acct_%d", rng.IntN(50))
		if rng.Float64() < s.PDecline {
			account = layout.SimDeclinePrefix + "_" + account
		}
		k.Command = messages.ChargeRequest{AccountID: account, Amount: 100 + rng.Int64N(10_000), Currency: "EUR"}
	}
	k.Calls = drawCalls(rng, s)
	if rng.Float64() < s.PLookupFail {
		k.LookupFailures = 1 + rng.IntN(3)
	}
	if rng.Float64() < s.PCrash {
		for range 1 + rng.IntN(2) {
			f := Fault{At: processor.Failpoints[rng.IntN(len(processor.Failpoints))], Nth: 1 + rng.IntN(2)}
			if rng.Float64() < 0.35 {
				f.Pause = lockTTL/2 + time.Duration(rng.Int64N(int64(2*lockTTL)))
			}
			k.Faults = append(k.Faults, f)
		}
	}
	if rng.Float64() < s.PResend {
		for range 1 + rng.IntN(2) {
			after := 100*time.Millisecond + time.Duration(rng.Int64N(int64(dedupeWindow*7/10))) // inside the window
			if rng.Float64() < 0.5 {
				after = dedupeWindow + 300*time.Millisecond + time.Duration(rng.Int64N(int64(3*time.Second))) // after it
			}
			k.Resends = append(k.Resends, Resend{After: after})
		}
	}
	if len(k.Calls) > 2 && rng.Float64() < 0.5 {
		// A client that gives up waiting and sends the command again just
		// after the dedupe window, while the first copy still uses its
		// tries in an outage: the copy waits behind the first one's lock
		// and must end with it (the chaos suite's provider-outage-mix found
		// it running as a re-drive after dead_lettered).
		k.Resends = append(k.Resends, Resend{After: dedupeWindow + 50*time.Millisecond + time.Duration(rng.Int64N(int64(400*time.Millisecond)))})
	}
	if rng.Float64() < s.PReuse {
		k.Resends = append(k.Resends, Resend{After: time.Duration(rng.Int64N(int64(3 * time.Second))), Reuse: true})
	}
	k.Redrive = rng.Float64() < s.PRedrive
	return k
}

// drawCalls draws a key's provider script: an outage long enough to use
// every try, or a few calls before the provider recovers.
func drawCalls(rng *rand.Rand, s Settings) []Step {
	perTry := int(s.Retries+1) * 2 //nolint:gosec // Retries is 1 to 3; transient and ambiguous retries have a budget each
	n := rng.IntN(3)
	if rng.Float64() < s.POutage {
		n = perTry*s.MaxTries + rng.IntN(perTry)
	}
	steps := make([]Step, n)
	for i := range steps {
		x := rng.Float64()
		switch {
		case x < s.PTransient:
			steps[i] = Step{Kind: StepTransient}
		case x < s.PTransient+s.PLost:
			steps[i] = Step{Kind: StepLost}
		case x < s.PTransient+s.PLost+s.PTimeout:
			steps[i] = Step{Kind: StepTimeout, Wait: time.Duration(rng.Int64N(int64(200 * time.Millisecond)))}
		case x < s.PTransient+s.PLost+s.PTimeout+s.PSlow:
			steps[i] = Step{Kind: StepSlow, Delay: lockTTL + time.Duration(rng.Int64N(int64(lockTTL)))}
		case x < s.PTransient+s.PLost+s.PTimeout+s.PSlow+s.PFrozen:
			steps[i] = Step{Kind: StepFrozen, Wait: 50*time.Millisecond + time.Duration(rng.Int64N(int64(250*time.Millisecond))),
				Delay: time.Second + time.Duration(rng.Int64N(int64(maxFreeze-time.Second)))}
		default:
			steps[i] = Step{Kind: StepOK}
		}
	}
	return steps
}

// keyFrom draws a version 4 UUID: the same keys on every run of a seed.
func keyFrom(rng *rand.Rand) string {
	var b [16]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuid.UUID(b).String()
}
