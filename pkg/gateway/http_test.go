package gateway

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOpenAPI: openapi.json is OpenAPI 3.1, describes exactly the routes
// the gateway registers, lists every problem code, and documents every
// status a POST can answer.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, &loadtestNoWorkers, nil)
	served := do(t, http.MethodGet, b.srv.URL+"/openapi.json", nil)
	require.Equal(t, http.StatusOK, served.status)
	require.Equal(t, string(OpenAPI()), string(served.body), "served as is")

	var doc struct {
		OpenAPI    string                                                   `json:"openapi"`
		Paths      map[string]map[string]struct{ Responses map[string]any } `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Enum []string `json:"enum"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(served.body, &doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)

	documented := make([]string, 0, len(b.gw.routes))
	registered := make([]string, 0, len(b.gw.routes))
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	for _, r := range b.gw.routes {
		registered = append(registered, r.method+" "+r.path)
	}
	slices.Sort(documented)
	slices.Sort(registered)
	require.Equal(t, registered, documented, "openapi.json's operations are the registered routes")

	codes := make([]string, 0, len(problemTypes))
	for _, p := range problemTypes {
		codes = append(codes, p.Code)
	}
	require.ElementsMatch(t, codes, doc.Components.Schemas["Code"].Enum, "the Code schema lists every problem code")

	for _, path := range []string{"/v1/payments", "/v1/refunds", "/v1/carts/{cart_id}/items"} {
		var statuses []string
		for s := range doc.Paths[path]["post"].Responses {
			statuses = append(statuses, s)
		}
		require.ElementsMatch(t, []string{"201", "202", "400", "401", "402", "403", "409", "413", "415", "422", "429", "501", "503", "504"}, statuses, path)
	}
	// Every problem's status is documented on some operation.
	for _, p := range problemTypes {
		if p.Code == CodeMethodNotAllowed || p.Code == CodeNotFound || p.Code == CodeOriginNotAllowed {
			continue // answered for any path, not by an operation
		}
		require.Contains(t, string(served.body), `"`+itoa(p.Status)+`"`, p.Code)
	}
}

func itoa(n int) string { return strings.TrimSpace(string(mustJSON(n))) }

// TestGateway_Operations: /healthz, /readyz (ready only once the command
// stream exists), /metrics with the request counter and the duration
// histogram, the checkout page and the problem type pages.
func TestGateway_Operations(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, nil)
	require.Equal(t, http.StatusOK, do(t, http.MethodGet, b.srv.URL+"/healthz", nil).status)
	require.Equal(t, http.StatusOK, do(t, http.MethodGet, b.srv.URL+"/readyz", nil).status)

	require.Equal(t, http.StatusCreated, b.post(t, "/v1/payments", newKey(), chargeBody("acct_42", 1)).status)
	require.Equal(t, http.StatusBadRequest, b.post(t, "/v1/payments", "nope", chargeBody("acct_42", 1)).status)
	m := do(t, http.MethodGet, b.srv.URL+"/metrics", nil)
	require.Equal(t, http.StatusOK, m.status)
	for _, want := range []string{
		`idempay_gateway_requests_total{code="201",method="post",route="/v1/payments"} 1`,
		`idempay_gateway_requests_total{code="400",method="post",route="/v1/payments"} 1`,
		`idempay_gateway_requests_total{code="200",method="get",route="/readyz"} 1`,
		`idempay_gateway_request_duration_seconds_bucket{method="post",route="/v1/payments",le="10"} 2`,
		`go_goroutines`,
	} {
		require.Contains(t, string(m.body), want)
	}

	page := do(t, http.MethodGet, b.srv.URL+"/", nil)
	require.Equal(t, http.StatusOK, page.status)
	require.Contains(t, string(page.body), `<script src="/checkout.js">`)
	require.Contains(t, page.header.Get("Content-Security-Policy"), "script-src 'self'")
	js := do(t, http.MethodGet, b.srv.URL+"/checkout.js", nil)
	require.Equal(t, http.StatusOK, js.status)
	require.Contains(t, string(js.body), "crypto.randomUUID()")
	doc := do(t, http.MethodGet, b.srv.URL+"/problems/request_in_flight", nil)
	require.Equal(t, http.StatusOK, doc.status)
	require.Contains(t, string(doc.body), "still in flight")
	require.Equal(t, http.StatusNotFound, do(t, http.MethodGet, b.srv.URL+"/problems/nope", nil).status)

	// Without the workers' streams the gateway is alive but not ready.
	noStreams := setup(t, &loadtestNoWorkers, nil)
	require.NoError(t, noStreams.env.JS.DeleteStream(testCtx(t), noStreams.env.Config.Topology.CommandStream))
	r := do(t, http.MethodGet, noStreams.srv.URL+"/readyz", nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Contains(t, string(r.body), "not ready")
}

// TestGateway_CORS: an allowed origin's preflight and requests get the
// CORS headers a retrying web client needs; another origin's preflight is
// refused; requests without Origin are untouched.
func TestGateway_CORS(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, &Config{AllowedOrigins: []string{"https://shop.example.com"}})
	pre := do(t, http.MethodOptions, b.srv.URL+"/v1/payments", nil,
		"Origin", "https://shop.example.com", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "content-type, idempotency-key")
	require.Equal(t, http.StatusNoContent, pre.status)
	require.Equal(t, "https://shop.example.com", pre.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, pre.header.Get("Access-Control-Allow-Headers"), "Idempotency-Key")
	require.Contains(t, pre.header.Get("Access-Control-Allow-Methods"), "POST")

	denied := do(t, http.MethodOptions, b.srv.URL+"/v1/payments", nil, "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	require.Equal(t, http.StatusForbidden, denied.status)
	require.Equal(t, CodeOriginNotAllowed, denied.problem(t).Code)
	require.Empty(t, denied.header.Get("Access-Control-Allow-Origin"))

	key := newKey()
	r := do(t, http.MethodPost, b.srv.URL+"/v1/payments", mustJSON(chargeBody("acct_42", 1)),
		"Origin", "https://shop.example.com", "Content-Type", "application/json", HeaderIdempotencyKey, key)
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, "https://shop.example.com", r.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, r.header.Get("Access-Control-Expose-Headers"), HeaderIdempotentReplayed)
	require.Contains(t, r.header.Values("Vary"), "Origin")

	plain := do(t, http.MethodGet, b.srv.URL+"/healthz", nil)
	require.Empty(t, plain.header.Get("Access-Control-Allow-Origin"))

	_, err := New(b.env.NC, &Config{Auth: NoAuth(), AllowedOrigins: []string{"https://shop.example.com/"}})
	require.ErrorContains(t, err, "not an origin")
}

// TestContractDoc: docs/contract.md (the wire contract) or docs/gateway.md
// (the gateway's own page) names every code the gateway answers, and the
// gateway's page names every one of its statuses' codes and variables.
func TestContractDoc(t *testing.T) {
	t.Parallel()
	contract, err := os.ReadFile("../../docs/contract.md")
	require.NoError(t, err)
	gw, err := os.ReadFile("../../docs/gateway.md")
	require.NoError(t, err)
	for _, p := range problemTypes {
		if p.Code == CodeNotFound || p.Code == CodeMethodNotAllowed || p.Code == CodeOriginNotAllowed {
			continue // plain HTTP, documented in openapi.json
		}
		name := "`" + p.Code + "`"
		require.True(t, strings.Contains(string(contract), name) || strings.Contains(string(gw), name),
			"neither docs/contract.md nor docs/gateway.md names %q", p.Code)
	}
	for _, want := range []string{"`unauthenticated`", "`forbidden`", "`rate_limited`", "GATEWAY_AUTH", "GATEWAY_API_KEYS_FILE",
		"GATEWAY_JWKS_URL", "GATEWAY_JWT_ISSUER", "GATEWAY_JWT_AUDIENCE", "GATEWAY_TENANT_CLAIM", "GATEWAY_DEFAULT_RATE",
		"GATEWAY_DEFAULT_BURST", "GATEWAY_DEFAULT_CONCURRENCY", "Request-Id", "WWW-Authenticate", "METRICS_ADDR"} {
		require.Contains(t, string(gw), want, "docs/gateway.md")
	}
}
