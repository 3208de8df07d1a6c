package ops

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Instrument wraps p so that every call is counted and timed on reg:
//
//	idempay_provider_calls_total{kind,result}   result: ok, declined, refused, transient, ambiguous, rate_limited
//	idempay_provider_duration_seconds{kind}     kind: charge, refund, lookup_charge, lookup_refund
//
// The wrapper looks effects up when p can (charge.Lookup, refund.Lookup),
// and says it cannot otherwise, as p itself would.
func Instrument(p Provider, reg prometheus.Registerer) (Provider, error) {
	ip := &instrumented{p: p,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_provider_calls_total",
			Help: "Calls to the payment provider, by kind and result.",
		}, []string{"kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "idempay_provider_duration_seconds",
			Help:    "Time one payment provider call took, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{ip.calls, ip.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return ip, nil
}

type instrumented struct {
	p        Provider
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var errNoLookup = errors.New("the provider cannot look up an effect by key")

func (ip *instrumented) record(kind string, start time.Time, err error) {
	ip.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		if _, ok := errors.AsType[*charge.DeclinedError](err); ok {
			result = "declined"
		} else if _, ok := errors.AsType[*refund.ExceedsError](err); ok {
			result = "refused"
		} else {
			c, _ := processor.ClassOf(err)
			result = c.String()
		}
	}
	ip.calls.WithLabelValues(kind, result).Inc()
}

func (ip *instrumented) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	start := time.Now()
	c, err := ip.p.Charge(ctx, key, req)
	ip.record("charge", start, err)
	return c, err
}

func (ip *instrumented) Refund(ctx context.Context, key string, req refund.Request) (messages.RefundData, error) {
	start := time.Now()
	r, err := ip.p.Refund(ctx, key, req)
	ip.record("refund", start, err)
	return r, err
}

func (ip *instrumented) LookupCharge(ctx context.Context, key string) (messages.ChargeData, bool, error) {
	l, ok := ip.p.(charge.Lookup)
	if !ok {
		return messages.ChargeData{}, false, errNoLookup
	}
	start := time.Now()
	c, found, err := l.LookupCharge(ctx, key)
	ip.record("lookup_charge", start, err)
	return c, found, err
}

func (ip *instrumented) LookupRefund(ctx context.Context, key string) (messages.RefundData, bool, error) {
	l, ok := ip.p.(refund.Lookup)
	if !ok {
		return messages.RefundData{}, false, errNoLookup
	}
	start := time.Now()
	r, found, err := l.LookupRefund(ctx, key)
	ip.record("lookup_refund", start, err)
	return r, found, err
}
