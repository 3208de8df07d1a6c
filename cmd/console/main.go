// Command console serves the operators' web console: what idempay is
// doing (commands a second by kind and outcome, p50 and p99, in flight
// and pending), the dead letters with filters and bulk replay and purge,
// the keys told outcome_unknown and their resolution, and a key inspector
// with the key's timeline and the eviction of its record, written to an
// audit log. It is for the people who run idempay, on the operators'
// network: it needs the workers' NATS and Redis (the gateway, which faces
// the internet, has no route to Redis by design), and it admits only
// callers with the operator role on the gateway's authentication.
//
//	CONSOLE_API_KEYS_FILE=operators console        # http://127.0.0.1:8090
//	console --new-api-key ops                      # a secret and its line (role=operator)
//	console --help                                 # every flag and its environment variable
//
// docs/console.md says more.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/console"
	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
)

func main() {
	err := cli.UntilSignal(func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr) })
	os.Exit(cli.Exit("console", err, os.Stderr, func(error) (int, bool) { return 1, false }))
}

const description = "Serves the operators' web console: the overview, the dead letters (filters, bulk replay and purge), " +
	"the unknown outcomes, the key inspector (timeline, eviction) and the audit log, behind a login with the operator role " +
	"(CONSOLE_AUTH). It needs the workers' NATS and Redis; keep it on the operators' network.\n\n" +
	"Signals: SIGHUP reloads CONSOLE_API_KEYS_FILE; SIGTERM or SIGINT stops.\n\n" +
	"Exit status: 0 after a clean stop, 1 when it cannot start or keep running, 64 usage error."

// flags is the console's command line.
type flags struct {
	cli.Common

	HTTPAddr string `name:"http-addr" env:"CONSOLE_ADDR" default:"127.0.0.1:8090" help:"Address the console listens on (host:port; port 0 picks a free one). Keep it on the operators' network; put TLS in front (and set --secure-cookie)."`
	cli.NATSFlags
	cli.RedisFlags
	KeyPrefix string `name:"redis-key-prefix" env:"REDIS_KEY_PREFIX" default:"" help:"The workers' Redis key prefix (their REDIS_KEY_PREFIX)."`

	WorkerMetrics  []string      `name:"worker-metrics" env:"CONSOLE_WORKER_METRICS" sep:"," placeholder:"URL" help:"The workers' /metrics URLs (their METRICS_ADDR), comma-separated, e.g. http://worker-1:9464/metrics: the overview's commands a second, p50, p99 and in flight are read from them. Empty: the overview shows the queue and dead letters only."`
	ScrapeInterval time.Duration `name:"scrape-interval" env:"CONSOLE_SCRAPE_INTERVAL" default:"5s" help:"How often the workers' /metrics are read: the overview's rates are over this interval."`
	ScanLimit      int           `name:"scan-limit" env:"DLQ_SCAN_LIMIT" default:"10000" help:"How many of the newest dead letters a page reads; older ones are left out (the page says so)."`

	Auth         string        `name:"auth" env:"CONSOLE_AUTH" default:"apikeys" group:"Operators" help:"How operators log in: apikeys, jwt, or both comma-separated. Either way only callers with --role get in."`
	APIKeysFile  string        `name:"api-keys-file" env:"CONSOLE_API_KEYS_FILE" group:"Operators" help:"For apikeys: a file in the gateway's API-key format; its lines with role=operator (--role) admit their secret's holder. Keep operators' keys out of the gateway's file: there they would be a tenant's too. SIGHUP reloads it. --new-api-key makes a line."`
	JWKSURL      string        `name:"jwks-url" env:"CONSOLE_JWKS_URL" group:"Operators" help:"For jwt: the identity provider's JWK Set URL (RS256 and ES256 keys)."`
	JWTIssuer    string        `name:"jwt-issuer" env:"CONSOLE_JWT_ISSUER" group:"Operators" help:"For jwt: the iss every token must have."`
	JWTAudience  string        `name:"jwt-audience" env:"CONSOLE_JWT_AUDIENCE" group:"Operators" help:"For jwt: an aud every token must have."`
	TenantClaim  string        `name:"tenant-claim" env:"CONSOLE_TENANT_CLAIM" default:"tenant_id" group:"Operators" help:"For jwt: the claim naming the operator's tenant (as the gateway's), shown in the audit log with the token's sub."`
	RoleClaim    string        `name:"role-claim" env:"CONSOLE_ROLE_CLAIM" default:"roles" group:"Operators" help:"For jwt: the claim holding the caller's roles, a string or an array of strings."`
	Role         string        `name:"role" env:"CONSOLE_ROLE" default:"operator" group:"Operators" help:"The role a caller needs to log in."`
	SessionTTL   time.Duration `name:"session-ttl" env:"CONSOLE_SESSION_TTL" default:"1h" group:"Operators" help:"How long a login lasts (a token's login ends with the token, if sooner). Sessions are signed with a key made at start: a restart logs everyone out."`
	SecureCookie bool          `name:"secure-cookie" env:"CONSOLE_SECURE_COOKIE" group:"Operators" help:"Mark the session cookie Secure: set it when operators reach the console over HTTPS."`
	NewAPIKey    string        `name:"new-api-key" placeholder:"TENANT" group:"Operators" help:"Do not run: print a new random secret for TENANT and the line of --api-keys-file (with role=operator) that admits it, and exit."`

	LogLevel  string `name:"log-level" env:"LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error."`
	LogFormat string `name:"log-format" env:"LOG_FORMAT" default:"text" enum:"text,json" help:"Log format: text or json."`

	cli.TopologyFlags
}

// Validate is kong's hook: every error names its flag and variable.
func (f *flags) Validate() error {
	if _, _, err := net.SplitHostPort(f.HTTPAddr); err != nil {
		return fmt.Errorf("--http-addr (CONSOLE_ADDR) %q: want host:port, e.g. 127.0.0.1:8090", f.HTTPAddr)
	}
	switch {
	case f.ScrapeInterval < 100*time.Millisecond:
		return fmt.Errorf("--scrape-interval (CONSOLE_SCRAPE_INTERVAL) must be at least 100ms, got %v", f.ScrapeInterval)
	case f.ScanLimit < 1:
		return fmt.Errorf("--scan-limit (DLQ_SCAN_LIMIT) must be at least 1, got %d", f.ScanLimit)
	case f.SessionTTL < time.Minute:
		return fmt.Errorf("--session-ttl (CONSOLE_SESSION_TTL) must be at least 1m, got %v", f.SessionTTL)
	case f.NewAPIKey != "" && !client.ValidTenant(f.NewAPIKey):
		return fmt.Errorf("--new-api-key %q: a tenant id is 1-64 characters of [A-Za-z0-9_.-]", f.NewAPIKey)
	}
	for _, u := range f.WorkerMetrics {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("--worker-metrics (CONSOLE_WORKER_METRICS) %q: want an http(s) URL, e.g. http://worker-1:9464/metrics", u)
		}
	}
	if f.NewAPIKey != "" {
		return nil
	}
	methods, err := f.methods()
	if err != nil {
		return err
	}
	for _, m := range methods {
		switch {
		case m == gateway.MethodAPIKeys && f.APIKeysFile == "":
			return errors.New("CONSOLE_AUTH=apikeys needs CONSOLE_API_KEYS_FILE (--api-keys-file): the file of operators' keys' hashes with role=operator (--new-api-key makes a line)")
		case m == gateway.MethodJWT && (f.JWKSURL == "" || f.JWTIssuer == "" || f.JWTAudience == ""):
			return errors.New("CONSOLE_AUTH=jwt needs CONSOLE_JWKS_URL (--jwks-url), CONSOLE_JWT_ISSUER (--jwt-issuer) and CONSOLE_JWT_AUDIENCE (--jwt-audience)")
		}
	}
	return nil
}

// methods returns CONSOLE_AUTH's methods, in order. There is no none: the
// console evicts records and purges dead letters.
func (f *flags) methods() ([]string, error) {
	var methods []string
	for m := range strings.SplitSeq(f.Auth, ",") {
		m = strings.TrimSpace(m)
		if (m != gateway.MethodAPIKeys && m != gateway.MethodJWT) || slices.Contains(methods, m) {
			return nil, fmt.Errorf("--auth (CONSOLE_AUTH) %q: want apikeys, jwt, or both comma-separated (the console has no none)", f.Auth)
		}
		methods = append(methods, m)
	}
	return methods, nil
}

func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	var f flags
	if _, err := cli.Parse("console", description, &f, args, env, stdout, stderr); err != nil {
		return err
	}
	if f.NewAPIKey != "" {
		return newAPIKey(f.NewAPIKey, f.Role, stdout)
	}
	return serve(ctx, &f, stderr)
}

// newAPIKey prints a new secret for tenant and its line of the key file.
func newAPIKey(tenant, role string, stdout io.Writer) error {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	s := "sk_op_" + base64.RawURLEncoding.EncodeToString(secret)
	_, err := fmt.Fprintf(stdout, "secret (give it to the operator; it is not stored anywhere): %s\nline of CONSOLE_API_KEYS_FILE (add it, then SIGHUP the console):\n%s role=%s\n",
		s, gateway.HashAPIKey(tenant, s), role)
	return err
}

// authenticator builds CONSOLE_AUTH's methods; keys is the API-key file
// when it is one of them (SIGHUP reloads it).
func (f *flags) authenticator(ctx context.Context, log *slog.Logger) (gateway.Authenticator, *gateway.APIKeys, error) {
	methods, err := f.methods()
	if err != nil {
		return nil, nil, err
	}
	var chain []gateway.Authenticator
	var keys *gateway.APIKeys
	for _, m := range methods {
		switch m {
		case gateway.MethodAPIKeys:
			if keys, err = gateway.LoadAPIKeys(f.APIKeysFile); err != nil {
				return nil, nil, fmt.Errorf("--api-keys-file (CONSOLE_API_KEYS_FILE): %w", err)
			}
			chain = append(chain, keys)
		case gateway.MethodJWT:
			j, err := gateway.NewJWT(ctx, &gateway.JWTConfig{JWKSURL: f.JWKSURL, Issuer: f.JWTIssuer, Audience: f.JWTAudience,
				TenantClaim: f.TenantClaim, RoleClaim: f.RoleClaim, Logger: log})
			if err != nil {
				return nil, nil, errors.New(strings.ReplaceAll(err.Error(), "GATEWAY_", "CONSOLE_"))
			}
			chain = append(chain, j)
		}
	}
	return gateway.Chain(chain...), keys, nil
}

func serve(ctx context.Context, f *flags, stderr io.Writer) error {
	log := cli.NewLogger(stderr, f.LogFormat, f.LogLevel)
	nc, err := f.NATSFlags.Connect("idempay-console", cli.Reconnecting(log)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	rdb, redisAt, err := f.RedisFlags.Connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	auth, keys, err := f.authenticator(ctx, log)
	if err != nil {
		return err
	}
	gateway.ReloadOnSIGHUP(ctx, keys, log)
	a, err := admin.New(nc, rdb, &admin.Config{Topology: f.Topology(), KeyPrefix: f.KeyPrefix, ScanLimit: f.ScanLimit, Logger: log})
	if err != nil {
		return err
	}
	scraper := console.NewScraper(f.WorkerMetrics, f.ScrapeInterval)
	go scraper.Run(ctx)
	reg := telemetry.NewRegistry()
	reg.MustRegister(telemetry.BuildInfo(cli.Version))
	srv, err := console.New(&console.Config{
		Admin: a, Auth: auth, Role: f.Role, SessionTTL: f.SessionTTL, SecureCookie: f.SecureCookie, Scraper: scraper,
		Registry: reg, Logger: log,
		Ready: func(ctx context.Context) error {
			if !nc.IsConnected() {
				return errors.New("NATS is not connected")
			}
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", f.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr (CONSOLE_ADDR): %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	log.Info("console listening", "addr", ln.Addr().String(), "version", cli.Version, "nats", nc.ConnectedUrlRedacted(),
		"redis", redisAt, "auth", f.Auth, "role", f.Role, "worker_metrics", len(f.WorkerMetrics))
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(stopCtx)
	log.Info("console stopped")
	return nil
}
