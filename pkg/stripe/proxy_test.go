package stripe_test

import (
	"bytes"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// faultProxy is an HTTP reverse proxy in front of stripe-mock that records
// every request it sees and, for the requests a fault matches, does what a
// network or Stripe's own state would: lose the response of a request that
// reached stripe-mock (hang, reset), replace it (500, a 402 decline, an
// idempotency_error), or answer before it (429, 409). stripe-mock keeps no
// state and ignores idempotency keys; every answer that needs state is
// injected here, with the error bodies Stripe documents. Nothing here
// decides anything: a test scripts each fault.
type faultProxy struct {
	tb  testing.TB
	srv *httptest.Server
	rp  *httputil.ReverseProxy

	mu     sync.Mutex
	faults []*fault
	seen   []seenRequest
}

// seenRequest is one request the proxy saw.
type seenRequest struct {
	At     time.Time
	Method string
	Path   string
	Header http.Header
	// Form is the request's parameters: the body of a POST, the query of
	// a GET.
	Form url.Values
	// Fault is the name of the fault applied, "" for none.
	Fault string
	// Upstream is stripe-mock's status for a forwarded request, 0 when it
	// was not forwarded.
	Upstream int
}

// Key is the request's Idempotency-Key.
func (s seenRequest) Key() string { return s.Header.Get("Idempotency-Key") }

type faultKind int

const (
	// answerInstead answers without forwarding: Stripe's rate limiter and
	// its concurrency check run before the API.
	answerInstead faultKind = iota
	// answerAfter forwards to stripe-mock, then answers with the fault's
	// status and body instead of stripe-mock's: the endpoint ran.
	answerAfter
	// hangAfter forwards, then never answers: the client times out after
	// its request reached stripe-mock.
	hangAfter
	// resetAfter forwards, then resets the connection.
	resetAfter
)

// fault is one scripted fault.
type fault struct {
	name   string
	method string
	path   string // exact path
	kind   faultKind
	status int
	header map[string]string
	body   string
	// times is how many matching requests it applies to; -1 for all.
	times int
}

func newFaultProxy(tb testing.TB, upstream string) *faultProxy {
	tb.Helper()
	u, err := url.Parse(upstream)
	require.NoError(tb, err)
	p := &faultProxy{tb: tb, rp: httputil.NewSingleHostReverseProxy(u)}
	p.srv = httptest.NewServer(p)
	tb.Cleanup(p.srv.Close)
	return p
}

// URL is the proxy's base: the provider's APIBase.
func (p *faultProxy) URL() string { return p.srv.URL }

// add scripts f.
func (p *faultProxy) add(f fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f.times == 0 {
		f.times = 1
	}
	p.faults = append(p.faults, &f)
}

// take returns the first fault matching r, counting it.
func (p *faultProxy) take(r *http.Request) *fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.faults {
		if f.times != 0 && f.method == r.Method && f.path == r.URL.Path {
			if f.times > 0 {
				f.times--
			}
			return f
		}
	}
	return nil
}

// requests returns what the proxy saw, optionally only method and path.
func (p *faultProxy) requests(method, path string) []seenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []seenRequest
	for _, s := range p.seen {
		if (method == "" || s.Method == method) && (path == "" || s.Path == path) {
			out = append(out, s)
		}
	}
	return out
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form := r.URL.Query()
	if r.Method == http.MethodPost {
		if form, err = url.ParseQuery(string(body)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	s := seenRequest{At: time.Now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Form: form}
	f := p.take(r)
	if f != nil {
		s.Fault = f.name
	}
	if f == nil || f.kind != answerInstead {
		rec := httptest.NewRecorder()
		p.rp.ServeHTTP(rec, r.Clone(r.Context()))
		s.Upstream = rec.Code
		if f == nil {
			p.record(s)
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
	}
	p.record(s)
	switch f.kind {
	case answerInstead, answerAfter:
		for k, v := range f.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, strings.ReplaceAll(f.body, "{key}", r.Header.Get("Idempotency-Key"))) //nolint:gosec // G705: a test proxy answers the test's own client with a scripted JSON body
	case hangAfter:
		select { // until the client gives up
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	case resetAfter:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			p.tb.Errorf("fault proxy: hijack: %v", err)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = conn.Close()
	}
}

func (p *faultProxy) record(s seenRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, s)
}

// Error bodies as Stripe documents them (Errors, Error codes).
const (
	bodyDeclined = `{"error": {"charge": "ch_3MmlLrLkdIwHu7ix0snN0B15", "code": "card_declined", "decline_code": "insufficient_funds",
  "doc_url": "https://stripe.com/docs/error-codes/card-declined", "message": "Your card has insufficient funds.",
  "payment_intent": {"id": "pi_3MmlLrLkdIwHu7ix0uke3Ezy", "object": "payment_intent", "status": "requires_payment_method"},
  "type": "card_error"}}`
	bodyInvalid = `{"error": {"code": "resource_missing", "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
  "message": "No such PaymentMethod: 'pm_gone'", "param": "payment_method", "type": "invalid_request_error"}}`
	bodyRateLimit = `{"error": {"code": "rate_limit", "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
  "message": "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.", "type": "invalid_request_error"}}`
	bodyLockTimeout = `{"error": {"code": "lock_timeout", "doc_url": "https://stripe.com/docs/error-codes/lock-timeout",
  "message": "This object cannot be accessed right now because another API request or Stripe process is currently accessing it.", "type": "invalid_request_error"}}`
	bodyKeyInUse = `{"error": {"code": "idempotency_key_in_use", "doc_url": "https://stripe.com/docs/error-codes/idempotency-key-in-use",
  "message": "There is currently another in-progress request using this Stripe API key (or a Stripe Account, if the Stripe-Account header was used) and idempotency key ({key}).", "type": "invalid_request_error"}}`
	bodyMismatch = `{"error": {"message": "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.", "type": "idempotency_error"}}`
	bodyAuth     = `{"error": {"message": "Invalid API Key provided: sk_test_***", "type": "invalid_request_error"}}`
	bodyAPIError = `{"error": {"message": "An unknown error occurred", "type": "api_error"}}`
	bodyRefunded = `{"error": {"code": "charge_already_refunded", "doc_url": "https://stripe.com/docs/error-codes/charge-already-refunded",
  "message": "Charge ch_1 has already been refunded.", "type": "invalid_request_error"}}`
)
