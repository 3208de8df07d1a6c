package gateway

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// tenants is a test's API-key file: tenant -> secret, and the file.
type tenants struct {
	secrets map[string]string
	path    string
	keys    *APIKeys
}

// apiKeyFile writes an API-key file with a fresh secret per tenant; each
// line is the tenant followed by extra options (e.g. "rate=1 burst=2").
func apiKeyFile(t *testing.T, lines map[string]string) *tenants {
	t.Helper()
	ts := &tenants{secrets: map[string]string{}, path: filepath.Join(t.TempDir(), "api-keys")}
	var b strings.Builder
	b.WriteString("# tenants of " + t.Name() + "\n")
	for tenant, opts := range lines {
		secret := "sk_" + tenant + "_" + newKey()
		ts.secrets[tenant] = secret
		b.WriteString(HashAPIKey(tenant, secret) + " " + opts + " # " + tenant + "\n")
	}
	require.NoError(t, os.WriteFile(ts.path, []byte(b.String()), 0o600))
	var err error
	ts.keys, err = LoadAPIKeys(ts.path)
	require.NoError(t, err)
	return ts
}

// as sends a request with tenant's API key; headers are name, value pairs.
func (ts *tenants) as(t *testing.T, tenant, method, url string, body []byte, headers ...string) *response {
	t.Helper()
	return do(t, method, url, body, append([]string{"Authorization", "Bearer " + ts.secrets[tenant]}, headers...)...)
}

func (ts *tenants) post(t *testing.T, tenant, url, key string, body any) *response {
	t.Helper()
	return ts.as(t, tenant, http.MethodPost, url, mustJSON(body), "Content-Type", "application/json", HeaderIdempotencyKey, key)
}

// TestGateway_Tenants: two tenants that send one Idempotency-Key with
// different bodies get two operations, two charges under their two
// scoped keys; each answer shows the caller's own key; each tenant reads,
// replays and is refused only its own; a third tenant knows nothing of
// the key.
//
//nolint:tparallel // the subtests run in turn: they build on the charges made before them
func TestGateway_Tenants(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": "", "globex": "", "initech": ""})
	b := setup(t, nil, &Config{Auth: ts.keys})
	const key = "order-1001"
	amounts := map[string]int64{"acme": 1000, "globex": 2000}
	first := map[string]*response{}
	for tenant, amount := range amounts {
		r := ts.post(t, tenant, b.srv.URL+"/v1/payments", key, chargeBody("acct_"+tenant, amount))
		require.Equal(t, http.StatusCreated, r.status, "%s: %s", tenant, r.body)
		res := r.answer(t)
		require.Equal(t, key, res.Key, "the answer shows the caller's own key")
		require.Equal(t, amount, amountOf(t, res))
		require.Equal(t, "/v1/results/"+key, r.header.Get("Location"))
		require.NotContains(t, string(r.body), client.ScopedKey(tenant, key), "never the scoped key")
		first[tenant] = r
	}
	calls, charges := b.env.SimLedger(t)
	require.Len(t, charges, 2, "two tenants, one key, two charges")
	for tenant, amount := range amounts {
		scoped := client.ScopedKey(tenant, key)
		require.Contains(t, charges[scoped], `"amount":`+strconv.FormatInt(amount, 10), "%s's charge under its scoped key", tenant)
		require.Equal(t, int64(1), calls[scoped])
	}

	t.Run("Replay", func(t *testing.T) {
		for tenant, amount := range amounts {
			r := ts.post(t, tenant, b.srv.URL+"/v1/payments", key, chargeBody("acct_"+tenant, amount))
			require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
			require.True(t, r.replayed())
			require.Equal(t, string(first[tenant].body), string(r.body))
		}
	})
	t.Run("ReadOwnOnly", func(t *testing.T) {
		for tenant := range amounts {
			var got *response
			loadtest.WaitFor(t, 10*time.Second, func() bool {
				got = ts.as(t, tenant, http.MethodGet, b.srv.URL+"/v1/results/"+key, nil)
				return got.status == http.StatusOK
			}, "the stored outcome")
			require.Equal(t, string(first[tenant].body), string(got.body), "%s reads its own outcome", tenant)
		}
		other := ts.as(t, "initech", http.MethodGet, b.srv.URL+"/v1/results/"+key, nil)
		require.Equal(t, http.StatusNotFound, other.status, "another tenant's key is 404, like an unknown one")
		require.Equal(t, CodeOutcomeNotFound, other.problem(t).Code)
		// Nor can a tenant name another's operation by its scoped key.
		scoped := client.ScopedKey("acme", key)
		r := ts.as(t, "globex", http.MethodGet, b.srv.URL+"/v1/results/"+scoped, nil)
		require.Equal(t, http.StatusNotFound, r.status)
	})
	t.Run("NoReplayOrReuseAcross", func(t *testing.T) {
		// initech sends acme's very request: a new operation of its own,
		// not acme's replay, and no 422 either.
		r := ts.post(t, "initech", b.srv.URL+"/v1/payments", key, chargeBody("acct_acme", 1000))
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		require.False(t, r.replayed())
		require.NotEqual(t, first["acme"].answer(t).Data, r.answer(t).Data, "another charge id")
		// Reuse within a tenant is still refused.
		r = ts.post(t, "acme", b.srv.URL+"/v1/payments", key, chargeBody("acct_acme", 5))
		require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
		require.Equal(t, messages.CodeKeyReused, r.problem(t).Code)
		require.Equal(t, key, r.problem(t).Key)
	})
	t.Run("Keys", func(t *testing.T) {
		for _, k := range []string{strings.Repeat("k", 255), "a/b?c#d%20e", "..", `"quoted"`, "~!@$^&*()[]{}<>|\\;:,"} {
			r := ts.post(t, "acme", b.srv.URL+"/v1/carts/cart_keys/items", k, map[string]any{"sku": "S", "quantity": 1})
			require.Equal(t, http.StatusCreated, r.status, "%q: %s", k, r.body)
			own := strings.TrimSuffix(strings.TrimPrefix(k, `"`), `"`)
			require.Equal(t, own, r.answer(t).Key)
			loc := r.header.Get("Location")
			require.Equal(t, "/v1/results/"+url.PathEscape(own), loc)
			loadtest.WaitFor(t, 10*time.Second, func() bool {
				return ts.as(t, "acme", http.MethodGet, b.srv.URL+loc, nil).status == http.StatusOK
			}, "GET %s", loc)
		}
		for _, bad := range []string{strings.Repeat("k", 256), "with space", "caf\u00e9"} {
			r := ts.post(t, "acme", b.srv.URL+"/v1/payments", bad, chargeBody("acct_acme", 1))
			require.Equal(t, http.StatusBadRequest, r.status, "%q", bad)
			require.Equal(t, messages.CodeInvalidKey, r.problem(t).Code)
		}
		// A path key that is no key at all (empty) is no route.
		require.Equal(t, http.StatusNotFound, ts.as(t, "acme", http.MethodGet, b.srv.URL+"/v1/results/", nil).status)
	})
}

// TestGateway_TenantHeaders: the command a tenant's request puts on NATS
// has the scoped key as Nats-Msg-Id and the headers Idempay-Tenant and
// Idempay-Client-Key.
func TestGateway_TenantHeaders(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": ""})
	b := setup(t, &loadtestNoWorkers, &Config{Auth: ts.keys, Wait: 200 * time.Millisecond})
	r := ts.post(t, "acme", b.srv.URL+"/v1/payments", "order-7", chargeBody("acct_acme", 7))
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	ctx := testCtx(t)
	s, err := b.env.JS.Stream(ctx, b.env.Config.Topology.CommandStream)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, b.env.Config.Topology.Subjects.CommandFor(messages.KindPaymentCharge))
	require.NoError(t, err)
	require.Equal(t, client.ScopedKey("acme", "order-7"), m.Header.Get(jetstream.MsgIDHeader))
	require.Equal(t, "acme", m.Header.Get(client.HeaderTenant))
	require.Equal(t, "order-7", m.Header.Get(client.HeaderClientKey))
}

// TestGateway_Unauthenticated: every /v1/ request without valid
// credentials is 401 with the challenge, before anything is read or sent;
// the operations endpoints, the OpenAPI file and the checkout page need
// none.
func TestGateway_Unauthenticated(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": ""})
	b := setup(t, nil, &Config{Auth: ts.keys})
	valid := mustJSON(chargeBody("acct_42", 1))
	for name, auth := range map[string][]string{
		"Missing":     nil,
		"Empty":       {"Authorization", ""},
		"Basic":       {"Authorization", "Basic YWNtZTpzZWNyZXQ="},
		"NoSecret":    {"Authorization", "Bearer "},
		"Unknown":     {"Authorization", "Bearer sk_nobody"},
		"NearlyRight": {"Authorization", "Bearer " + ts.secrets["acme"] + "x"},
		"TwoHeaders":  {"Authorization", "Bearer " + ts.secrets["acme"], "Authorization", "Bearer " + ts.secrets["acme"]},
		"NotAJWT":     {"Authorization", "Bearer a.b.c"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, req := range []struct {
				method, path string
				body         []byte
			}{{http.MethodPost, "/v1/payments", valid}, {http.MethodGet, "/v1/results/order-1", nil}, {http.MethodPost, "/v1/carts/c/items", []byte("not even json")}} {
				headers := append([]string{"Content-Type", "application/json", HeaderIdempotencyKey, newKey()}, auth...)
				r := do(t, req.method, b.srv.URL+req.path, req.body, headers...)
				require.Equal(t, http.StatusUnauthorized, r.status, "%s %s: %s", req.method, req.path, r.body)
				require.Equal(t, `Bearer realm="idempay"`, r.header.Get("WWW-Authenticate"))
				require.Equal(t, CodeUnauthenticated, r.problem(t).Code)
				require.NotEmpty(t, r.header.Get(HeaderRequestID))
				require.NotContains(t, string(r.body), ts.secrets["acme"])
			}
		})
	}
	require.Zero(t, b.env.CommandsStored(t), "nothing reached NATS")
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/checkout.js", "/problems/unauthenticated"} {
		r := do(t, http.MethodGet, b.srv.URL+path, nil)
		require.Equal(t, http.StatusOK, r.status, "%s needs no credentials", path)
	}
}

// TestGateway_ResultsPath: GET /v1/results/xyz names no header, with or
// without authentication.
func TestGateway_ResultsPath(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": ""})
	b := setup(t, &loadtestNoWorkers, &Config{Auth: ts.keys})
	r := ts.as(t, "acme", http.MethodGet, b.srv.URL+"/v1/results/xyz", nil)
	require.Equal(t, http.StatusNotFound, r.status, "%s", r.body)
	require.NotContains(t, strings.ToLower(string(r.body)), "idempotency-key")

	_, none := b.newGateway(t, nil)
	r = do(t, http.MethodGet, none.URL+"/v1/results/xyz", nil)
	require.Equal(t, http.StatusBadRequest, r.status, "%s", r.body)
	require.Equal(t, messages.CodeInvalidKey, r.problem(t).Code)
	require.NotContains(t, strings.ToLower(string(r.body)), "idempotency-key")
	require.Contains(t, r.problem(t).Detail, "the key")
}

// TestGateway_Pending: after a 202, its Location answers 202 pending with
// Retry-After and {"key", "status": "pending"} until the outcome exists,
// from another gateway too (nothing of it lives in one process), then 200
// with the outcome; never 404.
func TestGateway_Pending(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": ""})
	b := setup(t, &loadtestNoWorkers, &Config{Auth: ts.keys, Wait: 300 * time.Millisecond})
	_, other := b.newGateway(t, &Config{Auth: ts.keys})
	r := ts.post(t, "acme", b.srv.URL+"/v1/payments", "order-pending", chargeBody("acct_acme", 300))
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	loc := r.header.Get("Location")
	require.Equal(t, "/v1/results/order-pending", loc)

	for _, srv := range []string{b.srv.URL, other.URL} {
		p := ts.as(t, "acme", http.MethodGet, srv+loc, nil)
		require.Equal(t, http.StatusAccepted, p.status, "%s", p.body)
		require.Equal(t, "1", p.header.Get("Retry-After"))
		require.Equal(t, "application/json", p.header.Get("Content-Type"))
		require.JSONEq(t, `{"key":"order-pending","status":"pending"}`, string(p.body))
	}
	// Another tenant: nothing.
	require.Equal(t, http.StatusNotFound, ts.as(t, "acme", http.MethodGet, other.URL+"/v1/results/order-other", nil).status)

	_, err := b.env.StartWorker(nil)
	require.NoError(t, err)
	var got *response
	loadtest.WaitFor(t, 15*time.Second, func() bool {
		got = ts.as(t, "acme", http.MethodGet, other.URL+loc, nil)
		require.Contains(t, []int{http.StatusAccepted, http.StatusOK}, got.status, "never 404: %s", got.body)
		return got.status == http.StatusOK
	}, "the outcome")
	res := got.answer(t)
	require.Equal(t, "order-pending", res.Key)
	require.Equal(t, messages.StatusSucceeded, res.Status)
}

// TestGateway_NotReady: while the command stream does not exist the
// gateway refuses work with 503, and publishes nothing, even into a
// stream that would take the command subjects; the detail names no
// internal stream.
func TestGateway_NotReady(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtestNoWorkers, nil)
	ctx := testCtx(t)
	top := b.env.Config.Topology
	require.NoError(t, b.env.JS.DeleteStream(ctx, top.CommandStream))
	rogue, err := b.env.JS.CreateStream(ctx, jetstream.StreamConfig{Name: b.env.NS + "_ROGUE", Subjects: []string{top.Subjects.Command + ".>"}})
	require.NoError(t, err)
	var r *response
	loadtest.WaitFor(t, 5*time.Second, func() bool {
		r = b.post(t, "/v1/payments", newKey(), chargeBody("acct_42", 1))
		return r.status == http.StatusServiceUnavailable
	}, "503 once the gateway sees the stream gone")
	p := r.problem(t)
	require.Equal(t, CodeServiceUnavailable, p.Code)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.NotContains(t, string(r.body), top.CommandStream)
	require.NotContains(t, string(r.body), "nats:")
	info, err := rogue.Info(ctx)
	require.NoError(t, err)
	// Before the gateway noticed (its verdict lives a second), a request
	// may have gone to the rogue stream; after, none does.
	before := info.State.Msgs
	for range 5 {
		require.Equal(t, http.StatusServiceUnavailable, b.post(t, "/v1/payments", newKey(), chargeBody("acct_42", 1)).status)
	}
	info, err = rogue.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, before, info.State.Msgs, "nothing published while not ready")
	require.Equal(t, http.StatusServiceUnavailable, do(t, http.MethodGet, b.srv.URL+"/readyz", nil).status)
}

// TestGateway_RateLimits: a tenant past its rate gets 429 rate_limited
// with Retry-After in whole seconds, and one past its concurrent requests
// too; another tenant, at the same time, is never limited.
func TestGateway_RateLimits(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"noisy": "rate=1 burst=3 concurrency=50", "slow": "concurrency=1", "quiet": ""})
	b := setup(t, &loadtest.Options{Sim: sim.Config{Latency: 2 * time.Second}}, &Config{Auth: ts.keys, DefaultLimits: Limits{Rate: 1000, Burst: 1000, Concurrency: 1000}})

	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string][]*response{}
	for _, tenant := range []string{"noisy", "quiet"} {
		for range 30 {
			wg.Go(func() {
				r := requestAsync(http.MethodGet, b.srv.URL+"/v1/results/order-x", nil, "Authorization", "Bearer "+ts.secrets[tenant])
				mu.Lock()
				got[tenant] = append(got[tenant], r)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	statuses := map[string]map[int]int{"noisy": {}, "quiet": {}}
	for tenant, rs := range got {
		for _, r := range rs {
			require.NoError(t, r.err)
			statuses[tenant][r.status]++
			if r.status == http.StatusTooManyRequests {
				require.Equal(t, CodeRateLimited, r.problem(t).Code)
				secs, err := strconv.Atoi(r.header.Get("Retry-After"))
				require.NoError(t, err, "Retry-After in whole seconds")
				require.GreaterOrEqual(t, secs, 1)
			}
		}
	}
	require.Equal(t, 3, statuses["noisy"][http.StatusNotFound], "the burst of 3 passes: %v", statuses)
	require.Equal(t, 27, statuses["noisy"][http.StatusTooManyRequests], "%v", statuses)
	require.Equal(t, map[int]int{http.StatusNotFound: 30}, statuses["quiet"], "the other tenant is unaffected")

	// Concurrency: while slow's one request waits for its answer (2s of
	// provider latency), its next is refused at once; quiet's are not.
	done := make(chan *response, 1)
	go func() {
		done <- requestAsync(http.MethodPost, b.srv.URL+"/v1/payments", mustJSON(chargeBody("acct_slow", 1)),
			"Authorization", "Bearer "+ts.secrets["slow"], "Content-Type", "application/json", HeaderIdempotencyKey, "slow-1")
	}()
	loadtest.WaitFor(t, 5*time.Second, func() bool { return b.env.CommandsStored(t) == 1 }, "slow's first request under way")
	r := ts.as(t, "slow", http.MethodGet, b.srv.URL+"/v1/results/slow-1", nil)
	require.Equal(t, http.StatusTooManyRequests, r.status, "%s", r.body)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.problem(t).Detail, "under way")
	quiet := ts.post(t, "quiet", b.srv.URL+"/v1/payments", "quiet-1", chargeBody("acct_quiet", 1))
	require.Equal(t, http.StatusCreated, quiet.status, "%s", quiet.body)
	require.Equal(t, http.StatusCreated, (<-done).status)
	require.Equal(t, http.StatusOK, ts.as(t, "slow", http.MethodGet, b.srv.URL+"/v1/results/slow-1", nil).status, "the slot is free again")

	m := string(do(t, http.MethodGet, b.srv.URL+"/metrics", nil).body)
	require.Contains(t, m, `idempay_gateway_rate_limited_total{limit="rate",tenant="noisy"} 27`)
	require.Contains(t, m, `idempay_gateway_rate_limited_total{limit="concurrency",tenant="slow"} 1`)
	require.Contains(t, m, `idempay_gateway_tenant_requests_total{code="404",tenant="quiet"} 30`)
	require.Contains(t, m, `idempay_gateway_tenant_requests_total{code="429",tenant="noisy"} 27`)
}

// TestGateway_AuditLog: one log line per request, with its Request-Id
// (also on the response), tenant, key and status; never the secret.
func TestGateway_AuditLog(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": ""})
	var logs syncBuffer
	b := setup(t, nil, &Config{Auth: ts.keys})
	b.gw.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ok := ts.post(t, "acme", b.srv.URL+"/v1/payments", "order-audit", chargeBody("acct_acme", 5))
	require.Equal(t, http.StatusCreated, ok.status)
	bad := do(t, http.MethodPost, b.srv.URL+"/v1/payments", nil, "Authorization", "Bearer wrong-secret")
	require.Equal(t, http.StatusUnauthorized, bad.status)
	ids := map[string]bool{ok.header.Get(HeaderRequestID): true, bad.header.Get(HeaderRequestID): true}
	require.Len(t, ids, 2, "a Request-Id per response")

	lines := map[string]map[string]any{}
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		if m["msg"] == "request" {
			id, _ := m[attrRequestID].(string)
			require.NotContains(t, lines, id, "one line per request")
			lines[id] = m
		}
	}
	require.Len(t, lines, 2)
	first := lines[ok.header.Get(HeaderRequestID)]
	require.Equal(t, "acme", first[attrTenant])
	require.Equal(t, "order-audit", first[attrKey])
	require.InDelta(t, 201, first[attrStatus], 0)
	require.Equal(t, MethodAPIKeys, first[attrAuth])
	second := lines[bad.header.Get(HeaderRequestID)]
	require.InDelta(t, 401, second[attrStatus], 0)
	require.NotContains(t, logs.String(), ts.secrets["acme"])
	require.NotContains(t, logs.String(), "wrong-secret")
}

// TestGateway_SeparateOperations: with an operator address (the program's
// METRICS_ADDR) /readyz and /metrics are not on the API's handler;
// /healthz, which says nothing, still is.
func TestGateway_SeparateOperations(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtestNoWorkers, &Config{SeparateOperations: true})
	require.Equal(t, http.StatusOK, do(t, http.MethodGet, b.srv.URL+"/healthz", nil).status)
	for _, path := range []string{"/readyz", "/metrics"} {
		require.Equal(t, http.StatusNotFound, do(t, http.MethodGet, b.srv.URL+path, nil).status, path)
	}
	require.NoError(t, b.gw.Ready(testCtx(t)))
	require.NotNil(t, b.gw.Registry())
}

// TestAPIKeys_File: the file's format and its errors, which name the line
// and never echo a secret; Reload swaps the keys, and a broken file keeps
// the old ones.
func TestAPIKeys_File(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	write := func(s string) { require.NoError(t, os.WriteFile(path, []byte(s), 0o600)) }
	write("# comment\n\n" + HashAPIKey("acme", "s1") + " rate=5 burst=10 concurrency=2 # trailing\n" +
		HashAPIKey("acme", "s2") + " rate=5 burst=10 concurrency=2\n" + HashAPIKey("globex", "s3") + "\n")
	keys, err := LoadAPIKeys(path)
	require.NoError(t, err)
	require.Equal(t, []string{"acme", "globex"}, keys.Tenants())
	auth := func(secret string) (*Caller, error) {
		r, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+secret)
		return keys.Authenticate(r)
	}
	for secret, tenant := range map[string]string{"s1": "acme", "s2": "acme", "s3": "globex"} {
		c, err := auth(secret)
		require.NoError(t, err)
		require.Equal(t, tenant, c.Tenant)
	}
	c, _ := auth("s1")
	require.Equal(t, Limits{Rate: 5, Burst: 10, Concurrency: 2}, c.Limits)
	require.Empty(t, c.Roles)
	require.False(t, c.HasRole(RoleOperator))
	_, err = auth("s4")
	require.ErrorIs(t, err, ErrUnauthenticated)

	for content, want := range map[string]string{
		"acme\n":                 "line 1: want <tenant_id>",
		"acme s3cr3t-in-clear\n": "line 1: tenant acme: the second field must be the SHA-256 of the secret",
		"bad/tenant " + strings.Repeat("a", 64) + "\n":                       "line 1: tenant \"bad/tenant\"",
		HashAPIKey("acme", "x") + " rate=0\n":                                "rate=0",
		HashAPIKey("acme", "x") + " burst=-1\n":                              "burst=-1",
		HashAPIKey("acme", "x") + " colour=blue\n":                           "unknown option \"colour\"",
		HashAPIKey("acme", "x") + "\n" + HashAPIKey("globex", "x"):           "line 2: this secret's hash is already on a line of tenant \"acme\"",
		HashAPIKey("acme", "x") + "\n" + HashAPIKey("acme", "y") + " rate=3": "line 2: tenant \"acme\" has other limits",
		HashAPIKey("ops", "x") + " role=operator\n" + HashAPIKey("ops", "y"): "line 2: tenant \"ops\" has another role",
		HashAPIKey("ops", "x") + " role=op/erator\n":                         "role=op/erator: want 1-64 characters",
	} {
		write(content)
		err := keys.Reload()
		require.ErrorContains(t, err, want, "%q", content)
		require.ErrorContains(t, err, path)
		require.NotContains(t, err.Error(), "s3cr3t")
	}
	c, err = auth("s1")
	require.NoError(t, err, "a broken file keeps the keys loaded before")
	require.Equal(t, "acme", c.Tenant)

	write(HashAPIKey("initech", "s5") + "\n" + HashAPIKey("ops", "s6") + " role=operator\n" + HashAPIKey("ops", "s7") + " role=operator\n")
	require.NoError(t, keys.Reload())
	for _, secret := range []string{"s6", "s7"} {
		c, err = auth(secret)
		require.NoError(t, err)
		require.Equal(t, "ops", c.Tenant)
		require.Equal(t, []string{RoleOperator}, c.Roles)
		require.True(t, c.HasRole(RoleOperator))
	}
	_, err = auth("s1")
	require.ErrorIs(t, err, ErrUnauthenticated, "retired")
	c, err = auth("s5")
	require.NoError(t, err)
	require.Equal(t, "initech", c.Tenant)

	_, err = LoadAPIKeys(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "missing")
}

// TestGateway_KeyReusedRepeat is the suspicion of issue 17: a request
// refused idempotency_key_reused by a worker (the key's first command, of
// another body, still running), repeated inside the dedupe window, is
// dropped by JetStream as a duplicate of the refused message, which has
// left the command stream without an outcome. The gateway answered that
// repeat 504 outcome_unknown ("it may have taken effect") for a body that
// never ran; the answer is 422 idempotency_key_reused again, from the
// refusal the first answer recorded, on any gateway.
func TestGateway_KeyReusedRepeat(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{
		Processor: processor.Config{DedupeWindow: 2 * time.Second},
		Sim:       sim.Config{Latency: 10 * time.Second},
	}, &Config{Wait: 300 * time.Millisecond})
	_, other := b.newGateway(t, nil)
	key := newKey()
	first := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, http.StatusAccepted, first.status, "%s", first.body) // running for 10s

	// Another body with the key: refused while the first is in the
	// command stream (422 from the gateway), then, past the window, by the
	// worker, which finds the key locked with another fingerprint.
	reused := func(srv string) *response {
		return do(t, http.MethodPost, srv+"/v1/payments", mustJSON(chargeBody("acct_42", 999)),
			"Content-Type", "application/json", HeaderIdempotencyKey, key)
	}
	refused := b.untilStored(t, 2, func() *response { return reused(b.srv.URL) })
	require.Equal(t, http.StatusUnprocessableEntity, refused.status, "%s", refused.body)
	require.Equal(t, messages.CodeKeyReused, refused.problem(t).Code)

	for _, srv := range []string{b.srv.URL, other.URL} {
		again := reused(srv)
		require.Equal(t, uint64(2), b.env.CommandsStored(t), "the repeat was a duplicate inside the window")
		require.Equal(t, http.StatusUnprocessableEntity, again.status, "%s", again.body)
		require.Equal(t, messages.CodeKeyReused, again.problem(t).Code)
	}
	require.Empty(t, b.charges(t), "the first is still running; nothing else was charged")
}

// syncBuffer is a goroutine-safe bytes.Buffer for a logger.
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

// TestGateway_TenantRefunds: a tenant's refund names its charge by the
// tenant's own key, scoped like the charge's; another tenant naming the
// same key, or the charge's scoped key, refunds nothing.
func TestGateway_TenantRefunds(t *testing.T) {
	t.Parallel()
	ts := apiKeyFile(t, map[string]string{"acme": "", "globex": ""})
	b := setup(t, nil, &Config{Auth: ts.keys})
	require.Equal(t, http.StatusCreated, ts.post(t, "acme", b.srv.URL+"/v1/payments", "order-9", chargeBody("acct_acme", 1000)).status)

	r := ts.post(t, "acme", b.srv.URL+"/v1/refunds", "refund-9", map[string]any{"charge_key": "order-9", "amount": 400})
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	require.Equal(t, "refund-9", r.answer(t).Key)
	for _, chargeKey := range []string{"order-9", client.ScopedKey("acme", "order-9")} {
		r = ts.post(t, "globex", b.srv.URL+"/v1/refunds", "steal-"+chargeKey, map[string]any{"charge_key": chargeKey, "amount": 400})
		require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
		require.Equal(t, messages.CodeChargeNotFound, r.problem(t).Code)
	}
	r = ts.post(t, "acme", b.srv.URL+"/v1/refunds", "refund-bad", map[string]any{"charge_key": "with space", "amount": 1})
	require.Equal(t, http.StatusBadRequest, r.status, "%s", r.body)
	require.Equal(t, messages.CodeInvalidPayload, r.problem(t).Code)
	require.Contains(t, r.problem(t).Detail, "charge_key")
}

// TestGateway_RepeatBehindAReuse: a repeat of a charge still running,
// sent just after another body was published with its key (past the
// charge's dedupe window), is dropped by JetStream as a duplicate of that
// other body's message, still in the command stream. That message holds
// the window, not the key: the key is the charge's, and the worker will
// refuse the other body. The gateway answered the repeat 422
// idempotency_key_reused - "use a new key", for a charge that then
// succeeded - found by the fault explorer (seed 59); the key's record now
// decides: 409, and the repeat later gets the charge's outcome.
func TestGateway_RepeatBehindAReuse(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{
		// One command at a time: the other body waits behind the charge.
		Processor: processor.Config{DedupeWindow: time.Second, Concurrency: 1},
		Sim:       sim.Config{Latency: 4 * time.Second},
	}, &Config{Wait: 300 * time.Millisecond})
	key := newKey()
	first := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, http.StatusAccepted, first.status, "%s", first.body) // running for 4s
	time.Sleep(1100 * time.Millisecond)                                   // past its dedupe window

	top := b.env.Config.Topology
	_, err := b.env.JS.PublishMsg(t.Context(), &nats.Msg{Subject: top.Subjects.CommandFor(messages.KindPaymentCharge),
		Data: mustJSON(chargeBody("acct_42", 999)), Header: nats.Header{messages.HeaderMsgID: []string{key}}})
	require.NoError(t, err)
	again := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, uint64(2), b.env.CommandsStored(t), "the repeat was a duplicate of the other body's message")
	require.Equal(t, http.StatusConflict, again.status, "the key is the charge's, still running: %s", again.body)
	require.Equal(t, CodeRequestInFlight, again.problem(t).Code)

	var last *response
	loadtest.WaitFor(t, 15*time.Second, func() bool {
		last = b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
		return last.status != http.StatusConflict && last.status != http.StatusAccepted
	}, "the charge's outcome")
	require.Equal(t, http.StatusCreated, last.status, "%s", last.body)
	require.Len(t, b.charges(t), 1)
}

// TestGateway_RepeatBehindAnotherBodysDeadLetter: a request dropped as the
// duplicate of another body's message that was dead-lettered is not told
// that dead letter ("send it again: it runs afresh" - it would be
// refused, the key being bound to the other body): pkg/client's lookup
// finds the key bound to the other body, 422. It failed (503
// dead_lettered) before the client took that binding for an answer.
func TestGateway_RepeatBehindAnotherBodysDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtest.Options{
		Processor: processor.Config{DedupeWindow: 3 * time.Second, MaxTries: 1, Retry: noRetries()},
		Sim:       sim.Config{FailureRate: 1},
	}, nil)
	key := newKey()
	dead := b.post(t, "/v1/payments", key, chargeBody("acct_42", 999))
	require.Equal(t, http.StatusServiceUnavailable, dead.status, "%s", dead.body)
	require.Equal(t, messages.CodeDeadLettered, dead.problem(t).Code)

	other := b.post(t, "/v1/payments", key, chargeBody("acct_42", 100))
	require.Equal(t, uint64(1), b.env.CommandsStored(t), "a duplicate of the dead-lettered message")
	require.Equal(t, http.StatusUnprocessableEntity, other.status, "%s", other.body)
	require.Equal(t, messages.CodeKeyReused, other.problem(t).Code)
}
