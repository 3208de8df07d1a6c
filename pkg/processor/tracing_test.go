package processor_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/internal/tracing"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops"
	"github.com/idempay/idempay/pkg/processor"
)

// TestTracing_OneTracePerOperation: with an in-memory exporter on both
// sides, a charge is one trace from the client's publish through the
// worker's delivery and the provider call to the result, whose
// traceparent names the worker's span; the worker's log lines about the
// command carry the trace and span ids.
func TestTracing_OneTracePerOperation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	provider, err := ops.Instrument(b.sim, nil, tp)
	require.NoError(t, err)
	mux := processor.NewMux()
	ops.Register(mux, provider, b.cfg.KeyPrefix)
	logs := &syncBuffer{}
	b.startWorker(t, mux, func(c *processor.Config) {
		c.TracerProvider = tp
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})

	env, err := testenv.Shared()
	require.NoError(t, err)
	nc, err := testenv.ConnectNATS(env.NATSURL, t.Name()+"-client")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cl, err := client.New(nc, &client.Config{Topology: b.cfg.Topology, TracerProvider: tp})
	require.NoError(t, err)

	key := newKey()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = cl.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_t", Amount: 700, Currency: "EUR"})
	require.NoError(t, err)

	spans := waitSpans(t, exp, 3)
	send := findSpan(t, spans, "send "+b.subjects.CommandFor(messages.KindPaymentCharge))
	process := findSpan(t, spans, "process "+b.subjects.CommandFor(messages.KindPaymentCharge))
	call := findSpan(t, spans, "provider charge")

	traceID := send.SpanContext.TraceID()
	require.Equal(t, trace.SpanKindProducer, send.SpanKind)
	require.Equal(t, trace.SpanKindConsumer, process.SpanKind)
	require.Equal(t, trace.SpanKindClient, call.SpanKind)
	require.Equal(t, traceID, process.SpanContext.TraceID(), "the worker's span is in the client's trace")
	require.Equal(t, send.SpanContext.SpanID(), process.Parent.SpanID(), "the worker's span is the child of the publish")
	require.True(t, process.Parent.IsRemote())
	require.Equal(t, process.SpanContext.SpanID(), call.Parent.SpanID(), "the provider call is the child of the delivery")

	attrs := map[string]string{}
	for _, a := range process.Attributes {
		attrs[string(a.Key)] = a.Value.String()
	}
	require.Equal(t, "nats", attrs["messaging.system"])
	require.Equal(t, b.subjects.CommandFor(messages.KindPaymentCharge), attrs["messaging.destination.name"])
	require.Equal(t, key, attrs["messaging.message.id"])
	require.Equal(t, b.cfg.Topology.Consumer, attrs["messaging.consumer.group.name"])
	require.Equal(t, "process", attrs["messaging.operation.type"])
	require.Equal(t, "succeeded", attrs["idempay.status"])

	// The result in RESULTS carries the worker's span as its parent.
	s, err := b.js.Stream(ctx, b.cfg.Topology.ResultStream)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, b.subjects.ResultFor(key))
	require.NoError(t, err)
	require.NotEmpty(t, m.Header.Get(tracing.HeaderTraceparent), "the result has a traceparent")
	got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
		propagation.MapCarrier{"traceparent": m.Header.Get(tracing.HeaderTraceparent)}))
	require.Equal(t, traceID, got.TraceID(), "the result is in the same trace")
	require.Equal(t, process.SpanContext.SpanID(), got.SpanID())

	// Every worker log line naming the key names the trace too.
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "command done") }, 5*time.Second, 20*time.Millisecond)
	var lines int
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, key) {
			lines++
			require.Contains(t, line, "trace_id="+traceID.String(), line)
			require.Contains(t, line, "span_id="+process.SpanContext.SpanID().String(), line)
		}
	}
	require.Positive(t, lines)
}

// TestTracing_TraceparentCarriedWithoutTracer: a worker that makes no spans
// of its own still carries a command's traceparent to its answer.
func TestTracing_TraceparentCarriedWithoutTracer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startWorker(t, nil, nil) // the global provider: no-op
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	key := newKey()
	b.publish(t, messages.KindPaymentCharge, key, messages.ChargeRequest{AccountID: "acct_t", Amount: 5, Currency: "EUR"},
		tracing.HeaderTraceparent, parent)
	b.answers.waitAnswers(t, key, 1)
	s, err := b.js.Stream(context.Background(), b.cfg.Topology.ResultStream)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(context.Background(), b.subjects.ResultFor(key))
	require.NoError(t, err)
	require.Equal(t, parent, m.Header.Get(tracing.HeaderTraceparent))
}

func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	require.Eventually(t, func() bool { return len(exp.GetSpans()) >= n }, 5*time.Second, 10*time.Millisecond,
		"want %d spans", n)
	return exp.GetSpans()
}

func findSpan(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	var names []string
	for _, s := range spans {
		if s.Name == name {
			return s
		}
		names = append(names, s.Name)
	}
	t.Fatalf("no span %q among %q", name, names)
	return tracetest.SpanStub{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
