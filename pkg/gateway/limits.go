package gateway

import (
	"cmp"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of Limits (GATEWAY_DEFAULT_RATE, _BURST, _CONCURRENCY).
const (
	RateDefault        = 100.0
	BurstDefault       = 200
	ConcurrencyDefault = 100
)

// Limits bound one tenant's requests at one gateway: Rate per second with
// bursts of Burst (a token bucket, golang.org/x/time/rate), and
// Concurrency requests under way at once (a POST is under way while it
// waits for its answer). Past either, the gateway answers 429
// rate_limited with Retry-After. Every tenant has limiters of its own, so
// one tenant at its limits never slows another.
type Limits struct {
	// Rate is the requests per second a tenant may send on average.
	Rate float64
	// Burst is how many requests a tenant may send at once after a quiet
	// spell.
	Burst int
	// Concurrency is how many of a tenant's requests may be under way at
	// once.
	Concurrency int
}

// withDefaults fills l's zero fields from d.
func (l Limits) withDefaults(d Limits) Limits {
	l.Rate = cmp.Or(l.Rate, d.Rate)
	l.Burst = cmp.Or(l.Burst, d.Burst)
	l.Concurrency = cmp.Or(l.Concurrency, d.Concurrency)
	return l
}

func (l Limits) validate(field string) error {
	switch {
	case l.Rate < 0 || l.Burst < 0 || l.Concurrency < 0:
		return fmt.Errorf("gateway: Config.%s: limits must not be negative", field)
	case l.Rate > 1e9:
		return fmt.Errorf("gateway: Config.%s.Rate: at most 1e9", field)
	}
	return nil
}

// limiters holds every tenant's limiters.
type limiters struct {
	mu      sync.Mutex
	tenants map[string]*tenantLimits
}

type tenantLimits struct {
	limits   Limits
	rate     *rate.Limiter
	inFlight int
	lastUsed time.Time
}

// maxIdleTenants bounds the limiters kept: past it, those of tenants idle
// for idleTenantAge are dropped (a tenant's next request starts afresh,
// with a full burst). JWT tenants are not listed anywhere, so their number
// is bounded only by the identity provider.
const (
	maxIdleTenants = 10_000
	idleTenantAge  = 10 * time.Minute
)

// Reasons of a 429 (idempay_gateway_rate_limited_total).
const (
	limitRate        = "rate"
	limitConcurrency = "concurrency"
)

// acquire counts a request of tenant against l. It returns release, to be
// called when the request is answered, or the reason it is refused and
// when to come back.
func (ls *limiters) acquire(tenant string, l Limits, now time.Time) (release func(), refused string, retryAfter time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.tenants == nil {
		ls.tenants = map[string]*tenantLimits{}
	}
	t := ls.tenants[tenant]
	if t == nil {
		if len(ls.tenants) >= maxIdleTenants {
			ls.sweep(now)
		}
		t = &tenantLimits{limits: l, rate: rate.NewLimiter(rate.Limit(l.Rate), l.Burst)}
		ls.tenants[tenant] = t
	} else if t.limits != l { // the API-key file was reloaded
		t.rate.SetLimitAt(now, rate.Limit(l.Rate))
		t.rate.SetBurstAt(now, l.Burst)
		t.limits = l
	}
	t.lastUsed = now
	if t.inFlight >= l.Concurrency {
		return nil, limitConcurrency, time.Second
	}
	if !t.rate.AllowN(now, 1) {
		r := t.rate.ReserveN(now, 1)
		wait := time.Second
		if r.OK() {
			wait = max(r.DelayFrom(now), time.Second)
			r.CancelAt(now)
		}
		return nil, limitRate, wait
	}
	t.inFlight++
	return func() {
		ls.mu.Lock()
		t.inFlight--
		ls.mu.Unlock()
	}, "", 0
}

// sweep drops the limiters of tenants idle since idleTenantAge.
func (ls *limiters) sweep(now time.Time) {
	for id, t := range ls.tenants {
		if t.inFlight == 0 && now.Sub(t.lastUsed) > idleTenantAge {
			delete(ls.tenants, id)
		}
	}
}
