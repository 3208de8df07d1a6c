package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	// HeaderRequestID is on every response: the id the gateway's log line
	// for the request carries too.
	HeaderRequestID = "Request-Id"
)

// Gateway is the HTTP gateway. It is safe for concurrent use and holds no
// state that decides an answer but its tenants' rate limiters: any number
// of them can serve one deployment (what is remembered across replicas
// lives in NATS, see stateStore).
type Gateway struct {
	cfg      *Config
	nc       *nats.Conn
	js       jetstream.JetStream
	client   *client.Client
	log      *slog.Logger
	metrics  *metrics
	limits   limiters
	ready    readiness
	state    *stateStore
	scans    chan struct{} // dead-letter scans under way (deadLetterScans at most)
	routes   []route
	handler  http.Handler
	registry *prometheus.Registry
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
	g := &Gateway{cfg: cfg, nc: nc, js: js, client: c, log: cfg.Logger, metrics: m, registry: reg,
		scans: make(chan struct{}, deadLetterScans),
		state: &stateStore{js: js, bucket: cfg.StateBucket, ttl: cfg.StateTTL, replicas: cfg.StateReplicas}}
	g.ready = readiness{probe: g.probe, log: func(err error) {
		if err != nil {
			g.log.Warn("gateway: not ready; /v1/ requests get 503 until it is", attrError, err)
		} else {
			g.log.Info("gateway: ready")
		}
	}}
	g.routes = []route{
		{http.MethodPost, "/v1/payments", "POST /v1/payments", g.v1(g.command(decodeCharge))},
		{http.MethodPost, "/v1/refunds", "POST /v1/refunds", g.v1(g.command(decodeRefund))},
		{http.MethodPost, "/v1/carts/{cart_id}/items", "POST /v1/carts/{cart_id}/items", g.v1(g.command(decodeCartItem))},
		{http.MethodGet, routeResults, "GET " + routeResults, g.v1(g.result)},
		{http.MethodGet, "/problems/{code}", "GET /problems/{code}", serveProblemDoc},
		{http.MethodGet, "/openapi.json", "GET /openapi.json", serveStatic("openapi.json", "application/json")},
		{http.MethodGet, "/", "GET /{$}", serveStatic("static/index.html", "text/html; charset=utf-8")},
		{http.MethodGet, "/checkout.js", "GET /checkout.js", serveStatic("static/checkout.js", "text/javascript; charset=utf-8")},
		{http.MethodGet, "/healthz", "GET /healthz", serveHealthz},
	}
	if !cfg.SeparateOperations {
		g.routes = append(g.routes,
			route{http.MethodGet, "/readyz", "GET /readyz", g.serveReadyz},
			route{http.MethodGet, "/metrics", "GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP})
	}
	mux := http.NewServeMux()
	for _, r := range g.routes {
		mux.HandleFunc(r.pattern, r.handler)
	}
	// Every other method on a known path, and every unknown path, gets a
	// problem body too: a method-less pattern matches only when no method
	// pattern does.
	allowed := map[string]string{}
	for _, r := range g.routes {
		path := patternPath(r.pattern)
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
		writeProblem(w, problemOf(CodeNotFound), "", "no resource at "+truncate(r.URL.Path, 200), 0)
	})
	g.handler = g.front(g.cors(securityHeaders(g.resultsFirst(mux))))
	return g, nil
}

// routeResults is the path of GET /v1/results/{key}.
const routeResults = "/v1/results/{key}"

// resultsFirst routes GET /v1/results/<key> itself, before the ServeMux:
// a tenant's key may be any visible ASCII, "." and ".." included, which
// the ServeMux would clean out of the path and redirect. The key is the
// one path segment after /v1/results/, percent-decoded.
func (g *Gateway) resultsFirst(mux *http.ServeMux) http.Handler {
	const prefix = "/v1/results/"
	results := g.v1(g.result)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix); ok && rest != "" && !strings.Contains(rest, "/") {
				if key, err := url.PathUnescape(rest); err == nil {
					r.Pattern = "GET " + routeResults
					r.SetPathValue("key", key)
					results(w, r)
					return
				}
			}
		}
		mux.ServeHTTP(w, r)
	})
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
//	GET  /v1/results/{key}          the key's stored outcome (200), 202 pending, or 404
//	GET  /healthz, /openapi.json, / (checkout page), /checkout.js, /problems/{code}
//	GET  /readyz, /metrics          unless Config.SeparateOperations
//
// Every /v1/ request is authenticated first (Config.Auth: 401
// unauthenticated with WWW-Authenticate: Bearer realm="idempay", 403
// forbidden), then counted against its tenant's limits (429 rate_limited
// with Retry-After), then refused with 503 while the gateway is not ready.
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
// Every error body is RFC 9457 application/problem+json with the code, and
// every response carries Request-Id.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Ready returns nil when the gateway can take commands now: NATS is
// connected and the command stream exists (the workers create it). The
// /v1/ requests use its last verdict, at most a second old.
func (g *Gateway) Ready(ctx context.Context) error {
	err := g.connected()
	if err == nil {
		err = g.probe(ctx)
	}
	g.ready.set(err)
	return err
}

func (g *Gateway) connected() error {
	if !g.nc.IsConnected() {
		return notConnected(g.nc.Status())
	}
	return nil
}

// probe asks JetStream for the command stream.
func (g *Gateway) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := g.js.Stream(ctx, g.cfg.Topology.CommandStream); err != nil {
		return fmt.Errorf("stream %s: %w", g.cfg.Topology.CommandStream, err)
	}
	return nil
}

// Registry returns the registry of the gateway's metrics, for a program
// that serves /metrics on an operator address (Config.SeparateOperations).
func (g *Gateway) Registry() *prometheus.Registry { return g.registry }

// serveHealthz answers that the process lives; it says nothing else, so
// it may face the internet (a load balancer's probe).
func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// serveReadyz is /readyz on the public address: ready or not, without the
// reason, which names internal streams; the log has it (and /readyz on an
// operator address, telemetry.Serve, shows it).
func (g *Gateway) serveReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := g.Ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready (the gateway's log says why)\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
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
