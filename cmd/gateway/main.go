// Command gateway serves idempay's HTTP API: web and mobile clients send
// payment and cart commands with an Idempotency-Key header, and the gateway
// puts them on the same NATS JetStream pipeline as pkg/client, waits for the
// outcome (HTTP_WAIT) and answers with the contract's statuses. It also
// serves a checkout page on /, /openapi.json, /healthz, /readyz and
// /metrics (the last two on METRICS_ADDR alone when it is set). Every
// /v1/ request is authenticated (API keys, JWTs) and belongs to a tenant,
// whose keys are scoped to it and whose requests are limited. It keeps no
// state of its own: run as many as you like behind a load balancer.
//
//	gateway --new-api-key acme                         # a secret for tenant acme, and its line for the key file
//	GATEWAY_API_KEYS_FILE=api-keys gateway             # listens on 127.0.0.1:8080, NATS at nats://127.0.0.1:4222
//	GATEWAY_AUTH=none gateway                          # no credentials, tenant public: one's own machine only
//	gateway --help                                     # every flag and its environment variable
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(cli.Exit("gateway", err, os.Stderr, func(error) (int, bool) { return 1, false }))
}

const description = "Serves idempay's HTTP API: POST /v1/payments, /v1/refunds and /v1/carts/{cart_id}/items with an " +
	"Idempotency-Key header, GET /v1/results/{key}, a checkout page on /, /openapi.json, /healthz, /readyz and /metrics. " +
	"Every /v1/ request needs Authorization: Bearer <API key or JWT> (GATEWAY_AUTH).\n\n" +
	"Signals: SIGHUP reloads GATEWAY_API_KEYS_FILE (a broken file keeps the keys loaded before); " +
	"SIGTERM or SIGINT stops (no new connections, requests under way finish).\n\n" +
	"Exit status: 0 after a clean stop, 1 when it cannot start or keep running, 64 usage error " +
	"(an authentication method without its settings included)."

// flags is the gateway's command line. The names of CONTRACT.md come first.
type flags struct {
	cli.Common

	HTTPAddr string `name:"http-addr" env:"HTTP_ADDR" default:"127.0.0.1:8080" help:"Address the HTTP API listens on (host:port; port 0 picks a free one)."`
	cli.NATSFlags
	Wait time.Duration `name:"http-wait" env:"HTTP_WAIT" default:"10s" help:"How long a POST waits for the command's answer before 202 Accepted with Location: /v1/results/{key} (the command still runs)."`

	CORSOrigins     []string      `name:"cors-origins" env:"CORS_ORIGINS" sep:"," placeholder:"ORIGIN" help:"Web origins (scheme://host[:port]) whose pages may call the API from a browser, comma-separated; * allows any. The checkout page on / is same-origin and needs none."`
	PublishTimeout  time.Duration `name:"publish-timeout" env:"PUBLISH_TIMEOUT" default:"5s" help:"How long one publish attempt waits for JetStream's ack before it is repeated with the same key."`
	MetricsAddr     string        `name:"metrics-addr" env:"METRICS_ADDR" default:"" help:"Operator address for /metrics, /healthz and /readyz, e.g. 127.0.0.1:9465: when set, /metrics and /readyz are served there only, never on --http-addr (which keeps /healthz). Empty (the default): all three on --http-addr, as the contract lists them."`
	Healthcheck     bool          `name:"healthcheck" help:"Do not run: check the /readyz of the gateway serving on --metrics-addr (METRICS_ADDR), or on --http-addr without one (an all-interfaces address is reached on loopback), and exit 0 if it is ready, 1 if not. For container health checks: the image has no curl."`
	Pprof           bool          `name:"pprof" env:"PPROF" help:"Also serve Go's profiler, /debug/pprof/, on --metrics-addr (never on --http-addr). Off by default: whoever reaches that address could take profiles and read the program's internals."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"SHUTDOWN_TIMEOUT" default:"20s" help:"On SIGTERM/SIGINT, how long requests under way may take to finish (a POST waits up to --http-wait)."`
	LogLevel        string        `name:"log-level" env:"LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error."`
	LogFormat       string        `name:"log-format" env:"LOG_FORMAT" default:"text" enum:"text,json" help:"Log format: text or json."`

	Auth               string  `name:"auth" env:"GATEWAY_AUTH" default:"apikeys" group:"Callers and tenants" help:"How /v1/ requests authenticate: apikeys, jwt, or both comma-separated (tried in that order); or none (no credentials, every request as tenant public, keys unscoped UUIDs: for one's own machine only, logged as a warning). The gateway refuses to start when a method listed lacks its settings."`
	APIKeysFile        string  `name:"api-keys-file" env:"GATEWAY_API_KEYS_FILE" group:"Callers and tenants" help:"For apikeys: the file of tenants, one per line: <tenant_id> <sha256 hex of the secret> [rate=<per second>] [burst=<n>] [concurrency=<n>] [role=<name>]; # comments. role=operator is for the operators' console, which reads the same format; the gateway gives a role no power. Callers send Authorization: Bearer <secret>. SIGHUP reloads it. --new-api-key makes a line."`
	JWKSURL            string  `name:"jwks-url" env:"GATEWAY_JWKS_URL" group:"Callers and tenants" help:"For jwt: the identity provider's JWK Set URL (RS256 and ES256 keys), fetched at start, hourly, and again for a token whose kid it lacks (at most every 10s)."`
	JWTIssuer          string  `name:"jwt-issuer" env:"GATEWAY_JWT_ISSUER" group:"Callers and tenants" help:"For jwt: the iss every token must have."`
	JWTAudience        string  `name:"jwt-audience" env:"GATEWAY_JWT_AUDIENCE" group:"Callers and tenants" help:"For jwt: an aud every token must have."`
	TenantClaim        string  `name:"tenant-claim" env:"GATEWAY_TENANT_CLAIM" default:"tenant_id" group:"Callers and tenants" help:"For jwt: the claim holding the tenant id; a valid token without it gets 403."`
	DefaultRate        float64 `name:"default-rate" env:"GATEWAY_DEFAULT_RATE" default:"100" group:"Callers and tenants" help:"Requests per second a tenant may send to one gateway, for JWT tenants and API-key tenants without rate= of their own; past it (and the burst), 429 rate_limited."`
	DefaultBurst       int     `name:"default-burst" env:"GATEWAY_DEFAULT_BURST" default:"200" group:"Callers and tenants" help:"Requests a tenant may send at once after a quiet spell, for tenants without burst= of their own."`
	DefaultConcurrency int     `name:"default-concurrency" env:"GATEWAY_DEFAULT_CONCURRENCY" default:"100" group:"Callers and tenants" help:"Requests of a tenant under way at once at one gateway (a POST is, while it waits for its answer), for tenants without concurrency= of their own; past it, 429 rate_limited."`
	NewAPIKey          string  `name:"new-api-key" placeholder:"TENANT" group:"Callers and tenants" help:"Do not run: print a new random secret for TENANT (give it to the tenant) and the line of --api-keys-file that admits it (add it, then SIGHUP the gateways), and exit."`

	StateBucket   string `name:"state-bucket" env:"GATEWAY_STATE_BUCKET" default:"idempay_gateway" help:"JetStream key-value bucket where the gateways record commands answered 202 and refusals, so that any replica answers for them after a restart too; created on first use."`
	StateReplicas int    `name:"state-replicas" env:"GATEWAY_STATE_REPLICAS" default:"1" help:"Replicas of --state-bucket in a NATS cluster (1-5)."`

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
	switch {
	case f.NewAPIKey != "" && !client.ValidTenant(f.NewAPIKey):
		return fmt.Errorf("--new-api-key %q: a tenant id is 1-64 characters of [A-Za-z0-9_.-]", f.NewAPIKey)
	case f.DefaultRate <= 0 || f.DefaultRate > 1e9:
		return fmt.Errorf("--default-rate (GATEWAY_DEFAULT_RATE) must be above 0, got %v", f.DefaultRate)
	case f.DefaultBurst < 1:
		return fmt.Errorf("--default-burst (GATEWAY_DEFAULT_BURST) must be at least 1, got %d", f.DefaultBurst)
	case f.DefaultConcurrency < 1:
		return fmt.Errorf("--default-concurrency (GATEWAY_DEFAULT_CONCURRENCY) must be at least 1, got %d", f.DefaultConcurrency)
	case f.StateReplicas < 1 || f.StateReplicas > 5:
		return fmt.Errorf("--state-replicas (GATEWAY_STATE_REPLICAS) must be 1 to 5, got %d", f.StateReplicas)
	}
	if f.Healthcheck || f.NewAPIKey != "" {
		return nil // neither serves: the methods' settings do not matter
	}
	methods, err := f.methods()
	if err != nil {
		return err
	}
	for _, m := range methods {
		switch {
		case m == gateway.MethodAPIKeys && f.APIKeysFile == "":
			return errors.New("GATEWAY_AUTH=apikeys needs GATEWAY_API_KEYS_FILE (--api-keys-file): the file of tenants and their keys' hashes (--new-api-key makes a line); or choose GATEWAY_AUTH=none explicitly to try the gateway without credentials")
		case m == gateway.MethodJWT && f.JWKSURL == "":
			return errors.New("GATEWAY_AUTH=jwt needs GATEWAY_JWKS_URL (--jwks-url)")
		case m == gateway.MethodJWT && f.JWTIssuer == "":
			return errors.New("GATEWAY_AUTH=jwt needs GATEWAY_JWT_ISSUER (--jwt-issuer)")
		case m == gateway.MethodJWT && f.JWTAudience == "":
			return errors.New("GATEWAY_AUTH=jwt needs GATEWAY_JWT_AUDIENCE (--jwt-audience)")
		}
	}
	return nil
}

// methods returns GATEWAY_AUTH's methods, in order.
func (f *flags) methods() ([]string, error) {
	var methods []string
	for m := range strings.SplitSeq(f.Auth, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == gateway.MethodNone && len(strings.Split(f.Auth, ",")) == 1:
		case m == gateway.MethodAPIKeys || m == gateway.MethodJWT:
			if slices.Contains(methods, m) {
				return nil, fmt.Errorf("--auth (GATEWAY_AUTH) %q: %s twice", f.Auth, m)
			}
		default:
			return nil, fmt.Errorf("--auth (GATEWAY_AUTH) %q: want apikeys, jwt, or both comma-separated; or none alone", f.Auth)
		}
		methods = append(methods, m)
	}
	return methods, nil
}

func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var f flags
	if _, err := cli.Parse("gateway", description, &f, args, env, stdout, stderr); err != nil {
		return err
	}
	switch {
	case f.Healthcheck:
		return cli.Healthcheck(ctx, cmp.Or(f.MetricsAddr, f.HTTPAddr), stdout)
	case f.NewAPIKey != "":
		return newAPIKey(f.NewAPIKey, stdout)
	}
	return serve(ctx, &f, stderr)
}

// newAPIKey prints a new secret for tenant and its line of the key file.
func newAPIKey(tenant string, stdout io.Writer) error {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	s := "sk_" + base64.RawURLEncoding.EncodeToString(secret)
	_, err := fmt.Fprintf(stdout, "secret (give it to %s; it is not stored anywhere): %s\nline of GATEWAY_API_KEYS_FILE (add it, then SIGHUP the gateways):\n%s\n",
		tenant, s, gateway.HashAPIKey(tenant, s))
	return err
}

// authenticator builds GATEWAY_AUTH's methods; keys is the API-key file
// when it is one of them (SIGHUP reloads it).
func (f *flags) authenticator(ctx context.Context, log *slog.Logger) (auth gateway.Authenticator, keys *gateway.APIKeys, err error) {
	methods, err := f.methods()
	if err != nil {
		return nil, nil, err
	}
	var chain []gateway.Authenticator
	for _, m := range methods {
		switch m {
		case gateway.MethodNone:
			log.Warn("GATEWAY_AUTH=none: every request is served without credentials as tenant public, and anyone who reaches this address reads and replays every key's outcome; for one's own machine only")
			return gateway.NoAuth(), nil, nil
		case gateway.MethodAPIKeys:
			if keys, err = gateway.LoadAPIKeys(f.APIKeysFile); err != nil {
				return nil, nil, fmt.Errorf("--api-keys-file (GATEWAY_API_KEYS_FILE): %w", err)
			}
			if len(keys.Tenants()) == 0 {
				log.Warn("the API-key file admits no tenant: every request gets 401 until it does (add lines, then SIGHUP)", "file", f.APIKeysFile)
			}
			chain = append(chain, keys)
		case gateway.MethodJWT:
			j, err := gateway.NewJWT(ctx, &gateway.JWTConfig{JWKSURL: f.JWKSURL, Issuer: f.JWTIssuer, Audience: f.JWTAudience,
				TenantClaim: f.TenantClaim, Logger: log})
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, j)
		}
	}
	return gateway.Chain(chain...), keys, nil
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

	auth, keys, err := f.authenticator(ctx, log)
	if err != nil {
		return err
	}
	gateway.ReloadOnSIGHUP(ctx, keys, log)
	reg := telemetry.NewRegistry()
	reg.MustRegister(telemetry.BuildInfo(cli.Version))
	gw, err := gateway.New(nc, &gateway.Config{
		Topology:           f.Topology(),
		Wait:               f.Wait,
		PublishTimeout:     f.PublishTimeout,
		AllowedOrigins:     f.CORSOrigins,
		Auth:               auth,
		DefaultLimits:      gateway.Limits{Rate: f.DefaultRate, Burst: f.DefaultBurst, Concurrency: f.DefaultConcurrency},
		SeparateOperations: f.MetricsAddr != "",
		StateBucket:        f.StateBucket,
		StateReplicas:      f.StateReplicas,
		Registry:           reg,
		Logger:             log,
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
		"http_wait", f.Wait, "cors_origins", len(f.CORSOrigins), "auth", f.Auth, "operations_addr", f.MetricsAddr)

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
