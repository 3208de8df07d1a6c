package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/client"
)

// Headers of the HTTP API.
const (
	// HeaderIdempotencyKey carries the command's key on every POST.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotentReplayed is "true" on a response that repeats a
	// key's outcome for a repeated request.
	HeaderIdempotentReplayed = "Idempotent-Replayed"
)

// Gateway is the HTTP gateway. It is safe for concurrent use and holds no
// state that decides an answer: any number of them can serve one
// deployment.
type Gateway struct {
	cfg     *Config
	nc      *nats.Conn
	js      jetstream.JetStream
	client  *client.Client
	log     *slog.Logger
	metrics *metrics
	routes  []route
	handler http.Handler
}

// route is one registered endpoint. The table is also what TestOpenAPI
// compares with openapi.json.
type route struct {
	method, path string // path as in openapi.json: /v1/carts/{cart_id}/items
	pattern      string // the ServeMux pattern
	handler      http.HandlerFunc
}

// New returns a Gateway that sends commands on nc. It does no I/O: the
// streams are the workers' to create; Ready reports whether they exist.
func New(nc *nats.Conn, cfg *Config) (*Gateway, error) {
	if nc == nil {
		return nil, errors.New("gateway: nil *nats.Conn; connect with nats.Connect first")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("gateway: jetstream: %w", err)
	}
	c, err := client.New(nc, &client.Config{
		Topology:       cfg.Topology,
		PublishTimeout: cfg.PublishTimeout,
		ResultTimeout:  cfg.Wait,
		// A duplicate of another request's message must not wait for that
		// message's outcome: the gateway answers it at once (409, or the
		// replay), from what NATS says about the earlier message.
		DuplicateWait: -1,
		// The publish retries fit in the request's Wait.
		Retry:  client.RetryConfig{MaxElapsedTime: cfg.Wait},
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	reg := cfg.Registry
	if reg == nil {
		reg = telemetry.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, nc: nc, js: js, client: c, log: cfg.Logger, metrics: m}
	g.routes = []route{
		{http.MethodPost, "/v1/payments", "POST /v1/payments", g.command(decodeCharge)},
		{http.MethodPost, "/v1/refunds", "POST /v1/refunds", g.command(decodeRefund)},
		{http.MethodPost, "/v1/carts/{cart_id}/items", "POST /v1/carts/{cart_id}/items", g.command(decodeCartItem)},
		{http.MethodGet, "/v1/results/{key}", "GET /v1/results/{key}", g.result},
		{http.MethodGet, "/problems/{code}", "GET /problems/{code}", serveProblemDoc},
		{http.MethodGet, "/openapi.json", "GET /openapi.json", serveStatic("openapi.json", "application/json")},
		{http.MethodGet, "/", "GET /{$}", serveStatic("static/index.html", "text/html; charset=utf-8")},
		{http.MethodGet, "/checkout.js", "GET /checkout.js", serveStatic("static/checkout.js", "text/javascript; charset=utf-8")},
	}
	mux := http.NewServeMux()
	for _, r := range g.routes {
		mux.HandleFunc(r.pattern, r.handler)
	}
	telemetry.Register(mux, reg, g.Ready, g.log)
	g.routes = append(g.routes,
		route{method: http.MethodGet, path: "/healthz"}, route{method: http.MethodGet, path: "/readyz"},
		route{method: http.MethodGet, path: "/metrics"})
	// Every other method on a known path, and every unknown path, gets a
	// problem body too: a method-less pattern matches only when no method
	// pattern does.
	allowed := map[string]string{}
	for _, r := range g.routes {
		p := r.pattern
		if p == "" {
			p = r.method + " " + r.path
		}
		path := patternPath(p)
		if allowed[path] != "" {
			allowed[path] += ", "
		}
		allowed[path] += r.method
		if r.method == http.MethodGet {
			allowed[path] += ", HEAD"
		}
	}
	for path, methods := range allowed {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", methods)
			writeProblem(w, problemOf(CodeMethodNotAllowed), "", "allowed: "+methods, 0)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, problemOf(CodeNotFound), "", "no resource at "+r.URL.Path, 0)
	})
	g.handler = g.metrics.wrap(g.cors(securityHeaders(mux)))
	return g, nil
}

// patternPath returns the path of a ServeMux pattern ("GET /path").
func patternPath(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return path
	}
	return pattern
}

// Handler returns the gateway's HTTP handler:
//
//	POST /v1/payments               payment.charge
//	POST /v1/refunds                payment.refund
//	POST /v1/carts/{cart_id}/items  cart.add, body {"sku": "...", "quantity": 2}
//	GET  /v1/results/{key}          the key's stored outcome (200), or 404
//	GET  /healthz, /readyz, /metrics, /openapi.json, / (checkout page)
//
// A POST's status: 201 succeeded (the answer JSON, Location set); 402 failed
// with card_declined; 422 any other failed outcome, and the key reused with
// another body (idempotency_key_reused); 400 a missing or malformed key or
// an invalid body; 409 the key's first request still in flight; 413 a body
// over 64 KiB; 415 a body that is not application/json; 202 no answer within
// Config.Wait (Location: /v1/results/{key}); 503 dead_lettered (certainly
// not done; send again with the same key after Retry-After), and NATS not
// reachable; 504 outcome_unknown (it may have been done: send again with the
// same key, never a new one), and a publish NATS did not confirm; 501 a
// command the workers do not run. A repeated request for a key with an
// outcome gets the same status and body, with Idempotent-Replayed: true.
// Every error body is RFC 9457 application/problem+json with the code.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Ready returns nil when the gateway can take commands now: NATS is
// connected and the command stream exists (the workers create it).
func (g *Gateway) Ready(ctx context.Context) error {
	if !g.nc.IsConnected() {
		return fmt.Errorf("NATS not connected (%s)", g.nc.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := g.js.Stream(ctx, g.cfg.Topology.CommandStream); err != nil {
		return fmt.Errorf("stream %s: %w", g.cfg.Topology.CommandStream, err)
	}
	return nil
}

// securityHeaders sets what every response should carry: no MIME
// sniffing, no framing of the checkout page, and a CSP that allows the
// page only its own script.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		next.ServeHTTP(w, r)
	})
}
