// Package tracing owns how an operation's trace crosses NATS: the W3C
// traceparent header a client puts on a command and a worker puts on the
// command's answers, the messaging attributes (OpenTelemetry semantic
// conventions) of the spans on both sides, and the trace and span ids on
// log lines. It is light enough for the client side to link; choosing an
// exporter is internal/telemetry's (SetupTracing), in the binaries.
//
// One operation is one trace:
//
//	send cmd.payment.charge        (client, producer span)
//	└─ process cmd.payment.charge  (worker, consumer span; one per delivery)
//	   └─ provider charge          (the provider call, client span)
//	   the answer on result.<key> and Reply-To carries the process span
package tracing

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of idempay's spans.
const Scope = "github.com/idempay/idempay"

// HeaderTraceparent is the W3C trace context header, as NATS carries it.
const HeaderTraceparent = "traceparent"

// The wire format is W3C trace context whatever the process's global
// propagator is: it is part of the contract with the other side.
var propagator propagation.TextMapPropagator = propagation.TraceContext{}

// header adapts a NATS header, whose keys are case-sensitive, to a
// propagation carrier (propagation.HeaderCarrier would canonicalize
// "traceparent" to "Traceparent").
type header nats.Header

func (h header) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
func (h header) Set(key, value string) { h[key] = []string{value} }
func (h header) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the span context of ctx into h (nothing when ctx carries
// none). h must not be nil.
func Inject(ctx context.Context, h nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, header(h))
	}
}

// Extract returns ctx with the remote span context h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil || h.Get(HeaderTraceparent) == "" {
		return ctx
	}
	return propagator.Extract(ctx, header(h))
}

// Attributes of a messaging span: the system, the subject, the message id
// (the idempotency key) and, on the worker, the consumer.
func Attributes(operation attribute.KeyValue, subject, key, consumer string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		operation,
		semconv.MessagingDestinationName(subject),
		semconv.MessagingMessageID(key),
	}
	if consumer != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(consumer))
	}
	return attrs
}

// Send and Process are the messaging operation types of the two sides.
var (
	Send    = semconv.MessagingOperationTypeSend
	Process = semconv.MessagingOperationTypeProcess
)

// Outcome attributes, set on a span once its command has an answer.
const (
	AttrStatus   = attribute.Key("idempay.status")
	AttrCode     = attribute.Key("idempay.code")
	AttrReplayed = attribute.Key("idempay.replayed")
	AttrDelivery = attribute.Key("idempay.delivery")
	AttrKind     = attribute.Key("idempay.kind")
	// AttrRedelivered: the delivery handed its message back, and why
	// (lock_busy, retry, store, stopping).
	AttrRedelivered = attribute.Key("idempay.redelivered")
	// AttrProviderResult: a provider call's result (ok, declined, refused,
	// or its error's class).
	AttrProviderResult = attribute.Key("idempay.provider.result")
)

// LogHandler returns h with the trace_id and span_id of the record's
// context added to every record logged with one.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(logHandler); ok {
		return h
	}
	return logHandler{h}
}

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(attrs)}
}

func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.Handler.WithGroup(name)} }
