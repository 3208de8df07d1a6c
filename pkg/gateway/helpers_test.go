package gateway

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// testBundle is one test's deployment: real workers (in-process
// processors) on a namespace of the shared NATS and Redis, and a gateway
// on a loopback HTTP server.
type testBundle struct {
	env *loadtest.Env
	gw  *Gateway
	srv *httptest.Server
}

func setup(t *testing.T, opts *loadtest.Options, cfg *Config) *testBundle {
	t.Helper()
	env := loadtest.Setup(t, opts)
	b := &testBundle{env: env}
	b.gw, b.srv = b.newGateway(t, cfg)
	return b
}

// newGateway starts one more gateway of the deployment, on its own NATS
// connection: gateways share nothing but NATS.
func (b *testBundle) newGateway(t *testing.T, cfg *Config) (*Gateway, *httptest.Server) {
	t.Helper()
	nc, err := testenv.ConnectNATS(b.env.NATSURL, b.env.NS+"-gateway")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Topology = b.env.Config.Topology
	c.Logger = loadtest.Logger()
	if c.Auth == nil {
		c.Auth = NoAuth() // the contract's v1.1 behaviour, as tenant public
	}
	if c.DefaultLimits == (Limits{}) {
		c.DefaultLimits = unlimited // tests that count limits set their own
	}
	// A bucket of the test's own namespace.
	c.StateBucket = cmp.Or(c.StateBucket, b.env.NS+"_gateway")
	gw, err := New(nc, &c)
	require.NoError(t, err)
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return gw, srv
}

// unlimited are limits no test reaches by accident.
var unlimited = Limits{Rate: 1e6, Burst: 1_000_000, Concurrency: 1_000_000}

// response is what a request got back.
type response struct {
	status int
	header http.Header
	body   []byte
	err    error // postAsync's only
}

// postAsync is post for another goroutine: it fails nothing itself.
func postAsync(url, key string, body []byte) *response {
	return requestAsync(http.MethodPost, url, body, "Content-Type", "application/json", HeaderIdempotencyKey, key)
}

// requestAsync is do for another goroutine: it fails nothing itself.
func requestAsync(method, url string, body []byte, headers ...string) *response {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return &response{err: err}
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &response{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &response{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func (r *response) problem(t *testing.T) problem {
	t.Helper()
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"), "status %d, body %s", r.status, r.body)
	var p problem
	require.NoError(t, json.Unmarshal(r.body, &p), "%s", r.body)
	require.Equal(t, r.status, p.Status)
	require.Equal(t, "/problems/"+p.Code, p.Type)
	require.NotEmpty(t, p.Title)
	require.NotEmpty(t, p.Detail)
	return p
}

func (r *response) answer(t *testing.T) messages.Result {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), "status %d, body %s", r.status, r.body)
	res, err := messages.DecodeResult(r.body)
	require.NoError(t, err, "%s", r.body)
	return res
}

func (r *response) replayed() bool { return r.header.Get(HeaderIdempotentReplayed) == "true" }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// do sends one request; headers are name, value pairs.
func do(t *testing.T, method, url string, body []byte, headers ...string) *response {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, url, bytes.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// post sends a JSON body with an Idempotency-Key.
func (b *testBundle) post(t *testing.T, path, key string, body any) *response {
	t.Helper()
	return postTo(t, b.srv, path, key, body)
}

func postTo(t *testing.T, srv *httptest.Server, path, key string, body any) *response {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(t, err)
	}
	return do(t, http.MethodPost, srv.URL+path, raw, "Content-Type", "application/json", HeaderIdempotencyKey, key)
}

func newKey() string { return uuid.Must(uuid.NewV7()).String() }

func chargeBody(account string, amount int64) map[string]any {
	return map[string]any{"account_id": account, "amount": amount, "currency": "EUR", "description": "order 1001"}
}

// charges returns the simulated provider's charges: key -> charge JSON.
func (b *testBundle) charges(t *testing.T) map[string]string {
	t.Helper()
	_, charges := b.env.SimLedger(t)
	return charges
}

// untilStored polls until the command stream has stored n messages ever:
// a re-send got past the dedupe window and reached a worker.
func (b *testBundle) untilStored(t *testing.T, n uint64, send func() *response) *response {
	t.Helper()
	var r *response
	loadtest.WaitFor(t, 15*time.Second, func() bool {
		r = send()
		return b.env.CommandsStored(t) >= n
	}, "no re-send got past the dedupe window")
	return r
}

// loadtestNoWorkers is a deployment with the streams and no worker.
var loadtestNoWorkers = loadtest.Options{Workers: -1}

func noRetries() *processor.Policy {
	bo := processor.Backoff{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxElapsedTime: time.Second}
	return &processor.Policy{Transient: bo, Ambiguous: bo, RateLimited: bo}
}

func bigBody(n int) []byte {
	// A valid charge padded with white space to n bytes.
	head := `{"account_id":"acct_42","amount":1,"currency":"EUR"`
	return []byte(head + strings.Repeat(" ", n-len(head)-1) + "}")
}
