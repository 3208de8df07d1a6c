package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// TracingEnabled reports whether the standard OpenTelemetry variables in
// env (os.Getenv when nil) ask for traces: OTEL_TRACES_EXPORTER set to
// something other than "none", or an OTLP endpoint set, and
// OTEL_SDK_DISABLED not "true". Tracing is off by default.
func TracingEnabled(getenv func(string) string) bool {
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if e := getenv("OTEL_TRACES_EXPORTER"); e != "" {
		return e != "none"
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// SetupTracing installs, when TracingEnabled, a global tracer provider
// exporting through the exporter the OTEL_* variables choose
// (OTEL_TRACES_EXPORTER: otlp, the default once enabled, or console;
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
// OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, ...),
// and the W3C trace context propagator. service names the process when
// OTEL_SERVICE_NAME does not. The returned shutdown flushes the spans not
// yet exported; it is a no-op when tracing is off.
//
// The console exporter writes to stderr, never stdout, which is a
// program's output (the producer's table, the benchmark's).
func SetupTracing(ctx context.Context, service, version string) (shutdown func(context.Context) error, enabled bool, err error) {
	return SetupTracingTo(ctx, service, version, os.Stderr)
}

// SetupTracingTo is SetupTracing with the console exporter's writer.
func SetupTracingTo(ctx context.Context, service, version string, console io.Writer) (shutdown func(context.Context) error, enabled bool, err error) {
	noop := func(context.Context) error { return nil }
	if !TracingEnabled(nil) {
		return noop, false, nil
	}
	var exp sdktrace.SpanExporter
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")), "console") {
		exp, err = stdouttrace.New(stdouttrace.WithWriter(console))
	} else {
		exp, err = autoexport.NewSpanExporter(ctx)
	}
	if err != nil {
		return noop, false, fmt.Errorf("OTEL_TRACES_EXPORTER: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err == nil {
		var env *resource.Resource
		env, err = resource.New(ctx, resource.WithFromEnv()) // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		if err == nil {
			res, err = resource.Merge(res, env)
		}
	}
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return noop, false, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, true, nil
}
