package ops

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/internal/tracing"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Instrument wraps p so that every call is a span of tp ("provider
// charge", a child of the delivery's span) and, if reg is not nil, is
// counted and timed on reg:
//
//	idempay_provider_calls_total{kind,result}   result: ok, declined, refused, transient, ambiguous, rate_limited
//	idempay_provider_duration_seconds{kind}     kind: charge, refund, lookup_charge, lookup_refund, void_charge, void_refund
//
// tp nil is otel.GetTracerProvider(). The wrapper looks effects up and
// voids keys when p can (charge.Lookup, refund.Lookup, charge.Voider,
// refund.Voider), and says it cannot otherwise, as p itself would.
func Instrument(p Provider, reg prometheus.Registerer, tp trace.TracerProvider) (Provider, error) {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	ip := &instrumented{p: p, tracer: tp.Tracer(tracing.Scope)}
	if reg == nil {
		return ip, nil
	}
	ip.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "idempay_provider_calls_total",
		Help: "Calls to the payment provider, by kind and result.",
	}, []string{"kind", "result"})
	ip.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "idempay_provider_duration_seconds",
		Help:    "Time one payment provider call took, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"kind"})
	for _, c := range []prometheus.Collector{ip.calls, ip.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return ip, nil
}

type instrumented struct {
	p        Provider
	tracer   trace.Tracer
	calls    *prometheus.CounterVec   // nil: no metrics
	duration *prometheus.HistogramVec // nil: no metrics
}

var errNoLookup = errors.New("the provider cannot look up an effect by key")

// Span names, made once.
var spanNames = map[string]string{
	"charge": "provider charge", "refund": "provider refund",
	"lookup_charge": "provider lookup_charge", "lookup_refund": "provider lookup_refund",
	"void_charge": "provider void_charge", "void_refund": "provider void_refund",
}

// observe runs one provider call of kind inside its span and records it.
func observe[T any](ctx context.Context, ip *instrumented, kind string, call func(context.Context) (T, error)) (T, error) {
	ctx, span := ip.tracer.Start(ctx, spanNames[kind], trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	start := time.Now()
	v, err := call(ctx)
	result := resultOf(err)
	if span.IsRecording() {
		span.SetAttributes(attrResult.String(result))
		if err != nil && result != "declined" && result != "refused" {
			span.RecordError(err)
			span.SetStatus(codes.Error, result)
		}
	}
	if ip.calls != nil {
		ip.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
		ip.calls.WithLabelValues(kind, result).Inc()
	}
	return v, err
}

const attrResult = tracing.AttrProviderResult

// resultOf names a provider call's result: ok, a business refusal
// (declined, refused) or the class of its error.
func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	if _, ok := errors.AsType[*charge.DeclinedError](err); ok {
		return "declined"
	}
	if _, ok := errors.AsType[*refund.ExceedsError](err); ok {
		return "refused"
	}
	c, _ := processor.ClassOf(err)
	return c.String()
}

func (ip *instrumented) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	return observe(ctx, ip, "charge", func(ctx context.Context) (messages.ChargeData, error) {
		return ip.p.Charge(ctx, key, req)
	})
}

func (ip *instrumented) Refund(ctx context.Context, key string, req refund.Request) (messages.RefundData, error) {
	return observe(ctx, ip, "refund", func(ctx context.Context) (messages.RefundData, error) {
		return ip.p.Refund(ctx, key, req)
	})
}

// found is a lookup's answer, as one value.
type found[T any] struct {
	v  T
	ok bool
}

// observeLookup is observe for a provider's lookup or void by key, which
// answers with a found flag beside its value.
func observeLookup[T, R any](ctx context.Context, ip *instrumented, kind, key string, req R,
	lookup func(context.Context, string, R) (T, bool, error),
) (T, bool, error) {
	f, err := observe(ctx, ip, kind, func(ctx context.Context) (found[T], error) {
		v, ok, err := lookup(ctx, key, req)
		return found[T]{v, ok}, err
	})
	return f.v, f.ok, err
}

func (ip *instrumented) LookupCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	l, ok := ip.p.(charge.Lookup)
	if !ok {
		return messages.ChargeData{}, false, errNoLookup
	}
	return observeLookup(ctx, ip, "lookup_charge", key, req, l.LookupCharge)
}

func (ip *instrumented) LookupRefund(ctx context.Context, key string, req refund.Request) (messages.RefundData, bool, error) {
	l, ok := ip.p.(refund.Lookup)
	if !ok {
		return messages.RefundData{}, false, errNoLookup
	}
	return observeLookup(ctx, ip, "lookup_refund", key, req, l.LookupRefund)
}

func (ip *instrumented) VoidCharge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, bool, error) {
	v, ok := ip.p.(charge.Voider)
	if !ok {
		return messages.ChargeData{}, false, processor.ErrCannotVoid
	}
	return observeLookup(ctx, ip, "void_charge", key, req, v.VoidCharge)
}

func (ip *instrumented) VoidRefund(ctx context.Context, key string, req refund.Request) (messages.RefundData, bool, error) {
	v, ok := ip.p.(refund.Voider)
	if !ok {
		return messages.RefundData{}, false, processor.ErrCannotVoid
	}
	return observeLookup(ctx, ip, "void_refund", key, req, v.VoidRefund)
}
