package explore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/messages"
)

// The gateway route: the keys a plan sends through the HTTP gateway
// (KeyPlan.Gateway) go as a web client's requests to two gateway replicas
// of the seed's own, taking turns, on the clients' NATS connection (so the
// clients' network faults cut the gateways' link too). The client keeps asking, as the
// contract tells it to, until it has an answer or gatewayPatience is
// spent: it sends the same request again after 409 request_in_flight,
// 429, 503 service_unavailable and 504 publish_unconfirmed, and reads the
// Location of a 202 until it is no longer pending.
const (
	// gatewayPatience bounds one send's requests.
	gatewayPatience = 30 * time.Second
	// gatewayPoll is the longest pause between two requests of a send.
	gatewayPoll = 250 * time.Millisecond
)

// frontDoor is a seed's gateway: gatewayReplicas of them on one state
// bucket, served in this process. Requests take turns (next), so a send's
// repeats and its Location's reads reach another replica than its POST,
// as behind a load balancer: what one replica promised, the other keeps.
type frontDoor struct {
	srvs []*httptest.Server
	next atomic.Uint64
	hc   *http.Client

	mu   sync.Mutex
	seen map[string]int // responses by "METHOD status code"
}

// startGateway starts the seed's gateway on nc with every tenant limit
// out of the way (the explorer judges answers, not limits) and its own
// state bucket, removed with the seed.
func (r *seedRun) startGateway(nc *nats.Conn) error {
	auth, err := r.gatewayAuth()
	if err != nil {
		return err
	}
	r.gw = &frontDoor{hc: &http.Client{Timeout: r.plan.GatewayWait + 10*time.Second}, seen: map[string]int{}}
	for range gatewayReplicas {
		g, err := gateway.New(nc, &gateway.Config{
			Auth:           auth,
			DefaultLimits:  gateway.Limits{Rate: 1e6, Burst: 1_000_000, Concurrency: 100_000},
			StateBucket:    r.gatewayBucket(),
			StateTTL:       time.Hour,
			Topology:       r.top,
			Wait:           r.plan.GatewayWait,
			PublishTimeout: 3 * time.Second,
			Logger:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			return err
		}
		r.gw.srvs = append(r.gw.srvs, httptest.NewServer(g.Handler()))
	}
	return nil
}

// gatewayReplicas is how many gateways serve a seed.
const gatewayReplicas = 2

// url is the base URL of the replica that takes the next request.
func (f *frontDoor) url() string { return f.srvs[(f.next.Add(1)-1)%uint64(len(f.srvs))].URL }

// gatewayAuth is the seed's gateway's authentication: none, or with
// Plan.GatewayTenants an API-key file of the seed's own with a secret per
// tenant.
func (r *seedRun) gatewayAuth() (gateway.Authenticator, error) {
	if !r.plan.GatewayTenants {
		return gateway.NoAuth(), nil
	}
	f, err := os.CreateTemp("", "explore-apikeys-*")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r.apiKeysFile = f.Name()
	r.secrets = map[string]string{}
	for _, tenant := range gatewayTenants {
		r.secrets[tenant] = fmt.Sprintf("sk_explore_%d_%s", r.plan.Seed, tenant)
		sum := sha256.Sum256([]byte(r.secrets[tenant]))
		if _, err := fmt.Fprintf(f, "%s %s\n", tenant, hex.EncodeToString(sum[:])); err != nil {
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return gateway.LoadAPIKeys(f.Name())
}

// gatewayBucket is the seed's gateway state bucket.
func (r *seedRun) gatewayBucket() string {
	return "gw_" + strings.Map(func(c rune) rune {
		if c == '-' || c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
			return c
		}
		return '_'
	}, r.ns)
}

// closeGateway stops the seed's gateway and removes its state bucket.
func (r *seedRun) closeGateway(ctx context.Context) {
	if r.gw == nil {
		return
	}
	for _, srv := range r.gw.srvs {
		srv.Close()
	}
	_ = r.d.JS.DeleteKeyValue(ctx, r.gatewayBucket())
	if r.apiKeysFile != "" {
		_ = os.Remove(r.apiKeysFile)
	}
}

// httpAnswer is one response of the gateway, read.
type httpAnswer struct {
	status     int
	code       string // the problem's code, "" for none
	body       []byte
	location   string
	retryAfter time.Duration
	outcome    json.RawMessage // the answer JSON of a 201, a 200 or a failed problem
}

// sendHTTP sends one command through the seed's gateway and records what
// the client was told, as send does for the client library.
func (r *seedRun) sendHTTP(ctx context.Context, key string, cmd messages.Command, role ledger.Role) ledger.Send {
	k := r.plans[key]
	who := caller{key: key}
	body := cmd
	if k.Tenant != "" {
		// A tenant's request: its own key, and a refund names its own key
		// of the charge (the charge's client key when the charge is this
		// tenant's; otherwise the key as the workers know it, which the
		// gateway scopes into another operation's key). The checker sees
		// the command as the workers do.
		who = caller{key: k.ClientKey, secret: r.secrets[k.Tenant]}
		if rf, ok := cmd.(messages.RefundRequest); ok {
			if c := r.plans[rf.ChargeKey]; c != nil && c.Tenant == k.Tenant {
				rf.ChargeKey = c.ClientKey
			}
			body = rf
		}
		cmd, _ = client.ScopeCommand(k.Tenant, body) // every key here is a valid client key
	}
	s := ledger.Send{Key: key, Command: cmd, Role: role, At: time.Now(), Gateway: true}
	deadline := s.At.Add(gatewayPatience)
	var (
		location string    // a 202's Location, read until no longer pending
		lastPost time.Time // when the send's last POST returned
		mayStore bool      // a request may have stored a message
	)
	for {
		var a httpAnswer
		var err error
		if location == "" {
			a, err = r.gw.post(ctx, who, body)
			lastPost = time.Now() // its publishes, repeated on a bad link, may land until it returns
		} else {
			a, err = r.gw.get(ctx, who, location)
		}
		if err != nil {
			s.Err = "gateway: " + err.Error()
			mayStore = mayStore || location == "" // the request may have reached it
			break
		}
		told, done := r.readAnswer(&s, a, location != "")
		if done {
			if told != nil && told.Key == who.key {
				told.Key = key // the gateway shows the caller's own key, never the scoped one
			}
			s.Told = told
			break
		}
		switch {
		case a.status == http.StatusAccepted && location == "":
			location, mayStore = a.location, true
		case a.status >= 500:
			mayStore = true
		}
		if time.Now().After(deadline) {
			s.Err = fmt.Sprintf("gateway: no answer in %s (last: %d %s)", gatewayPatience, a.status, a.code)
			break
		}
		sleep(ctx, min(max(a.retryAfter, 50*time.Millisecond), gatewayPoll))
		if ctx.Err() != nil {
			s.Err = "gateway: " + ctx.Err().Error()
			break
		}
	}
	s.Done = time.Now()
	answered := s.Told != nil || s.KeyReused
	s.Accepted = answered || mayStore
	switch {
	case answered:
		// Every publish of the send was made by the time its last POST
		// returned (the gateway repeats an unconfirmed publish inside the
		// request: seed 718's landed 3 s after the POST began, past a
		// dead letter, and re-drove the key), and before its answer was
		// decided - unless the answer was about another, older message,
		// which the checker judges as the lie it is.
		s.LastPublish = lastPost
		if s.Told != nil && !s.Told.ProcessedAt.IsZero() && s.Told.ProcessedAt.Before(lastPost) {
			s.LastPublish = s.Told.ProcessedAt
		}
	case mayStore:
		s.LastPublish = s.Done
	}
	r.mu.Lock()
	r.sends = append(r.sends, s)
	r.mu.Unlock()
	return s
}

// readAnswer maps one response to what the client was told; done is
// false when the client asks again.
func (r *seedRun) readAnswer(s *ledger.Send, a httpAnswer, polling bool) (*messages.Result, bool) {
	if len(a.outcome) > 0 {
		res, err := messages.DecodeResult(a.outcome)
		if err != nil {
			s.Err = fmt.Sprintf("gateway: %d with an answer that is not one: %v", a.status, err)
			return nil, true
		}
		if fp := messages.Fingerprint(s.Command); polling && res.Fingerprint != "" && res.Fingerprint != fp {
			// GET /v1/results/{key} reads the key's outcome, whichever
			// body made it; as the contract asks of a client that reads a
			// stored outcome, another body's means this one was refused.
			s.KeyReused = true
			s.Err = "gateway: the key's outcome read at its Location is another body's (idempotency_key_reused)"
			return nil, true
		}
		return &res, true
	}
	switch a.code {
	case messages.CodeDeadLettered, messages.CodeOutcomeUnknown:
		// The gateway answers a request only with its own message's
		// notice (or a duplicate's of the same body): its fingerprint.
		res := &messages.Result{Key: s.Key, Kind: s.Command.Kind(), Status: messages.StatusRejected, Code: a.code,
			Fingerprint: messages.Fingerprint(s.Command), ProcessedAt: r.noticeDecided(s.Key, a.code)}
		return res, true
	case messages.CodeKeyReused:
		s.KeyReused = true
		s.Err = "gateway: " + string(a.body)
		return nil, true
	}
	switch {
	case a.status == http.StatusNotFound && polling:
		s.Broken = "answered 202 Accepted, then its Location answered 404 (contract v1.2: never 404 for an accepted command)"
		return nil, true
	case a.status == http.StatusAccepted, a.status == http.StatusConflict && a.code == gateway.CodeRequestInFlight,
		a.status == http.StatusTooManyRequests, a.status >= 500:
		return nil, false
	default:
		s.Err = fmt.Sprintf("gateway: unexpected %d: %s", a.status, a.body)
		return nil, true
	}
}

// noticeDecided returns when the notice code of key the gateway relayed
// was decided: the latest one heard on the key's subjects (the gateway's
// problem body does not say); zero when none was heard.
func (r *seedRun) noticeDecided(key, code string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t time.Time
	for _, h := range r.heard {
		if h.Result.Key == key && h.Result.Code == code && h.Result.ProcessedAt.After(t) {
			t = h.Result.ProcessedAt
		}
	}
	return t
}

// gatewayPath is the endpoint of cmd.
func gatewayPath(cmd messages.Command) string {
	switch c := cmd.(type) {
	case messages.RefundRequest:
		return "/v1/refunds"
	case messages.CartAddRequest:
		return "/v1/carts/" + url.PathEscape(c.CartID) + "/items"
	}
	return "/v1/payments"
}

// gatewayBody is cmd's request body: a cart add's names its cart in the
// path, not the body.
func gatewayBody(cmd messages.Command) ([]byte, error) {
	if c, ok := cmd.(messages.CartAddRequest); ok {
		return json.Marshal(struct {
			SKU      string `json:"sku"`
			Quantity int64  `json:"quantity"`
		}{c.SKU, c.Quantity})
	}
	return json.Marshal(cmd)
}

// caller is who sends a request: its Idempotency-Key, and its tenant's
// secret ("" without authentication).
type caller struct{ key, secret string }

func (f *frontDoor) post(ctx context.Context, c caller, cmd messages.Command) (httpAnswer, error) {
	body, err := gatewayBody(cmd)
	if err != nil {
		return httpAnswer{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url()+gatewayPath(cmd), bytes.NewReader(body))
	if err != nil {
		return httpAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(gateway.HeaderIdempotencyKey, c.key)
	return f.do(req, c)
}

func (f *frontDoor) get(ctx context.Context, c caller, location string) (httpAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url()+location, nil)
	if err != nil {
		return httpAnswer{}, err
	}
	return f.do(req, c)
}

func (f *frontDoor) do(req *http.Request, c caller) (httpAnswer, error) {
	if c.secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.secret)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return httpAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return httpAnswer{}, err
	}
	a := httpAnswer{status: resp.StatusCode, body: body, location: resp.Header.Get("Location")}
	defer func() {
		f.mu.Lock()
		f.seen[strings.TrimSpace(fmt.Sprintf("%s %d %s", req.Method, a.status, a.code))]++
		f.mu.Unlock()
	}()
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		a.retryAfter = time.Duration(secs) * time.Second
	}
	switch {
	case resp.StatusCode == http.StatusCreated, resp.StatusCode == http.StatusOK:
		a.outcome = body
	case strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json"):
		var p struct {
			Code    string          `json:"code"`
			Outcome json.RawMessage `json:"outcome"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return a, fmt.Errorf("%d with a problem body that is not JSON: %w", resp.StatusCode, err)
		}
		a.code, a.outcome = p.Code, p.Outcome
	case resp.StatusCode != http.StatusAccepted:
		return a, errors.New(strconv.Itoa(resp.StatusCode) + " without a problem body: " + string(body))
	}
	return a, nil
}

// responses counts the gateway's responses, by method, status and code.
func (f *frontDoor) responses() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.seen)
}
