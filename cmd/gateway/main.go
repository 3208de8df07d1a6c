// Command gateway serves idempay's HTTP API: web and mobile clients send
// payment and cart commands with an Idempotency-Key header, and the gateway
// puts them on the same NATS JetStream pipeline as pkg/client, waits for the
// outcome (HTTP_WAIT) and answers with the contract's statuses. It also
// serves a checkout page on /, /openapi.json, /healthz, /readyz and
// /metrics. It is stateless: run as many as you like behind a load
// balancer.
//
//	gateway                    # listens on 127.0.0.1:8080, NATS at nats://127.0.0.1:4222
//	gateway --cors-origins https://shop.example.com
//	gateway --help             # every flag and its environment variable
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/gateway"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(cli.Exit("gateway", err, os.Stderr, func(error) (int, bool) { return 1, false }))
}

const description = "Serves idempay's HTTP API: POST /v1/payments, /v1/refunds and /v1/carts/{cart_id}/items with an " +
	"Idempotency-Key header, GET /v1/results/{key}, a checkout page on /, /openapi.json, /healthz, /readyz and /metrics.\n\n" +
	"Exit status: 0 after a clean stop (SIGTERM or SIGINT: no new connections, requests under way finish), " +
	"1 when it cannot start or keep running, 64 usage error."

// flags is the gateway's command line. The names of CONTRACT.md come first.
type flags struct {
	cli.Common

	HTTPAddr string `name:"http-addr" env:"HTTP_ADDR" default:"127.0.0.1:8080" help:"Address the HTTP API listens on (host:port; port 0 picks a free one)."`
	cli.NATSFlags
	Wait time.Duration `name:"http-wait" env:"HTTP_WAIT" default:"10s" help:"How long a POST waits for the command's answer before 202 Accepted with Location: /v1/results/{key} (the command still runs)."`

	CORSOrigins     []string      `name:"cors-origins" env:"CORS_ORIGINS" sep:"," placeholder:"ORIGIN" help:"Web origins (scheme://host[:port]) whose pages may call the API from a browser, comma-separated; * allows any. The checkout page on / is same-origin and needs none."`
	PublishTimeout  time.Duration `name:"publish-timeout" env:"PUBLISH_TIMEOUT" default:"5s" help:"How long one publish attempt waits for JetStream's ack before it is repeated with the same key."`
	MetricsAddr     string        `name:"metrics-addr" env:"METRICS_ADDR" default:"" help:"Also serve /metrics, /healthz and /readyz on this operator address, e.g. 127.0.0.1:9465; empty: not served (they are on --http-addr anyway)."`
	Healthcheck     bool          `name:"healthcheck" help:"Do not run: check the /readyz of the gateway serving on --metrics-addr (METRICS_ADDR), or on --http-addr without one (an all-interfaces address is reached on loopback), and exit 0 if it is ready, 1 if not. For container health checks: the image has no curl."`
	Pprof           bool          `name:"pprof" env:"PPROF" help:"Also serve Go's profiler, /debug/pprof/, on --metrics-addr (never on --http-addr). Off by default: whoever reaches that address could take profiles and read the program's internals."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"SHUTDOWN_TIMEOUT" default:"20s" help:"On SIGTERM/SIGINT, how long requests under way may take to finish (a POST waits up to --http-wait)."`
	LogLevel        string        `name:"log-level" env:"LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error."`
	LogFormat       string        `name:"log-format" env:"LOG_FORMAT" default:"text" enum:"text,json" help:"Log format: text or json."`

	cli.TopologyFlags
}

// Validate is kong's hook: every error names its flag and variable.
func (f *flags) Validate() error {
	switch {
	case f.Wait < 100*time.Millisecond || f.Wait > 5*time.Minute:
		return fmt.Errorf("--http-wait (HTTP_WAIT) must be between 100ms and 5m, got %v", f.Wait)
	case f.PublishTimeout < 10*time.Millisecond:
		return fmt.Errorf("--publish-timeout (PUBLISH_TIMEOUT) must be at least 10ms, got %v", f.PublishTimeout)
	case f.Pprof && f.MetricsAddr == "":
		return errors.New("--pprof (PPROF) needs --metrics-addr (METRICS_ADDR): the profiler is served there")
	case f.ShutdownTimeout < 0:
		return fmt.Errorf("--shutdown-timeout (SHUTDOWN_TIMEOUT) must not be negative, got %v", f.ShutdownTimeout)
	}
	if _, _, err := net.SplitHostPort(f.HTTPAddr); err != nil {
		return fmt.Errorf("--http-addr (HTTP_ADDR) %q: want host:port, e.g. 127.0.0.1:8080", f.HTTPAddr)
	}
	if f.MetricsAddr != "" {
		if err := cli.ListenAddr(f.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr (METRICS_ADDR) %w", err)
		}
	}
	for _, o := range f.CORSOrigins {
		if err := gateway.ValidOrigin(o); err != nil {
			return fmt.Errorf("--cors-origins (CORS_ORIGINS): %w", err)
		}
	}
	return nil
}

func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var f flags
	if _, err := cli.Parse("gateway", description, &f, args, env, stdout, stderr); err != nil {
		return err
	}
	if f.Healthcheck {
		return cli.Healthcheck(ctx, cmp.Or(f.MetricsAddr, f.HTTPAddr), stdout)
	}
	return serve(ctx, &f, stderr)
}

// HTTP server bounds, besides --http-wait: a slow client cannot hold a
// connection open by trickling its headers or body.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
)

func serve(ctx context.Context, f *flags, stderr io.Writer) error {
	log := cli.NewLogger(stderr, f.LogFormat, f.LogLevel)
	shutdownTracing, tracing, err := telemetry.SetupTracing(ctx, "idempay-gateway", cli.Version)
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.WithoutCancel(ctx)) }()
	nc, err := f.Connect("idempay-gateway", cli.Reconnecting(log)...)
	if err != nil {
		return err
	}
	defer nc.Close()

	reg := telemetry.NewRegistry()
	gw, err := gateway.New(nc, &gateway.Config{
		Topology:       f.Topology(),
		Wait:           f.Wait,
		PublishTimeout: f.PublishTimeout,
		AllowedOrigins: f.CORSOrigins,
		Registry:       reg,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	if f.MetricsAddr != "" {
		ms, err := telemetry.Serve(ctx, f.MetricsAddr, reg, gw.Ready, log, f.Pprof)
		if err != nil {
			return fmt.Errorf("--metrics-addr (METRICS_ADDR): %w", err)
		}
		defer ms.Close(ctx)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", f.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr (HTTP_ADDR): %w", err)
	}
	srv := &http.Server{
		Handler:           traced(gw.Handler(), tracing),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// A POST may wait f.Wait for its answer, then a few seconds for
		// the reads that settle a duplicate.
		WriteTimeout:   f.Wait + 10*time.Second,
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := gw.Ready(ctx); err != nil {
		log.Warn("not ready yet (start a worker: it creates the streams)", "error", err)
	}
	log.Info("gateway listening", "addr", ln.Addr().String(), "version", cli.Version, "nats", nc.ConnectedUrlRedacted(),
		"http_wait", f.Wait, "cors_origins", len(f.CORSOrigins))

	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("stopping: no new connections; waiting for requests under way", "timeout", f.ShutdownTimeout)
	// ctx is done by now; the drain gets its own deadline.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(stopCtx); err != nil {
		log.Warn("requests still under way at the shutdown timeout were cut", "error", err)
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	log.Info("gateway stopped")
	return nil
}

// traced wraps h, when tracing is on, in a server span per request named
// by its route ("POST /v1/payments"), the child of the request's own
// traceparent if it has one; pkg/client's send span is its child.
func traced(h http.Handler, on bool) http.Handler {
	if !on {
		return h
	}
	return otelhttp.NewHandler(h, "gateway", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		if r.Pattern != "" {
			return r.Pattern
		}
		return "HTTP " + r.Method
	}))
}
