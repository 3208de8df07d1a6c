package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/messages"
)

// The gateway's overhead is measured as the end-to-end peak through the
// HTTP gateway over the end-to-end peak through pkg/client, with the same
// worker, servers and load (internal/load's mix, ClientInFlight in
// flight), one right after the other on fresh namespaces. The gateway runs
// as a process of its own, built from ./cmd/gateway, its CPU measured like
// the worker's; the HTTP load comes from this process, as pkg/client's
// does.

// The cost of authentication is measured the same way: the gateway with
// GATEWAY_AUTH=none, then with API keys (every request sends a tenant's
// secret, which the gateway hashes and compares with every line of its
// key file, and its key is scoped to the tenant), one right after the
// other in the same round. Both runs set limits no load reaches.

// benchTenant is the API-key tenant of the gateway runs with
// authentication.
const benchTenant = "bench"

// e2eGateway is e2e with the commands sent as HTTP requests to a gateway
// process; with auth, as tenant benchTenant with an API key.
func (b *bencher) e2eGateway(ctx context.Context, name string, auth bool) (*Result, error) {
	if b.gatewayBin == "" {
		bin, err := testenv.BuildCommand(ctx, b.s.dir, "gateway")
		if err != nil {
			return nil, err
		}
		b.gatewayBin = bin
	}
	ns := b.nextNamespace()
	defer b.s.reset(ctx, ns)
	r := &Result{Name: name, Kind: "e2e", Command: "mix", InFlight: e2eInFlight, Workers: 1}
	watch, err := watchAnswers(b.s.nc, ns.resultRoot(), b.cfg.Count)
	if err != nil {
		return nil, err
	}
	defer watch.stop()
	m := b.s.begin(ctx)
	procs, err := b.startWorkers(ctx, ns, workerSettings{Concurrency: e2eInFlight}, 1, m)
	if err != nil {
		return nil, err
	}
	port, err := testenv.FreePort() //nolint:contextcheck // binding a loopback port does not wait
	if err != nil {
		killAll(procs)
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := ns.gatewayEnv(b.s, addr)
	var bearer string
	if auth {
		file, secret, err := b.apiKeys()
		if err != nil {
			killAll(procs)
			return nil, err
		}
		env, bearer = append(env, "GATEWAY_AUTH=apikeys", "GATEWAY_API_KEYS_FILE="+file), secret
	} else {
		env = append(env, "GATEWAY_AUTH=none")
	}
	gw, err := startProcess(ctx, b.s.dir, b.gatewayBin, env, "gateway listening")
	if err != nil {
		killAll(procs)
		return nil, err
	}
	m.addGateway(gw)
	sender := newHTTPSender("http://"+addr, b.cfg.ClientInFlight)
	sender.bearer = bearer
	defer sender.close()
	sum, err := load.Run(ctx, sender, &load.Config{Count: b.cfg.Count, Concurrency: b.cfg.ClientInFlight})
	if err == nil {
		err = watch.wait(ctx, stallTimeout)
	}
	if err != nil {
		_ = gw.Kill()
		killAll(procs)
		return nil, fmt.Errorf("%s: %w; gateway output:\n%s\nworker output:\n%s", name, err, gw.LogTail(), procs[0].LogTail())
	}
	n, span := watch.span()
	r.Commands, r.Seconds, r.PerSecond = n, span.Seconds(), rate(n, span)
	r.Latency = &Latency{P50: ms(sum.Latency.P50), P95: ms(sum.Latency.P95), P99: ms(sum.Latency.P99)}
	m.end(ctx, r, procs, false)
	if !sum.OK() {
		r.Notes = append(r.Notes, fmt.Sprintf("NOT OK: errors %v, %d disagreeing keys, %d not sent", sum.Errors, len(sum.Disagreeing), sum.NotSent))
	}
	if sender.retries.Load() > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d requests sent again after 202/409/5xx", sender.retries.Load()))
	}
	stopErr := gw.Stop(ctx)
	if err := stopAll(ctx, procs); err != nil {
		return r, err
	}
	return r, stopErr
}

// gatewayEnv points a gateway at the servers and this namespace, as
// cmd/gateway reads its environment.
func (n *namespace) gatewayEnv(s *servers, addr string) []string {
	env := append([]string{"NATS_URL=" + s.natsURL, "HTTP_ADDR=" + addr}, n.topologyEnv()...)
	return append(env,
		// A shared machine may queue a command longer than the default.
		"HTTP_WAIT=30s",
		// "gateway listening" is logged at info; so is each request's
		// audit line, which a deployment writes too.
		"LOG_LEVEL=info",
		// Limits no load of the benchmark reaches: measured is the
		// gateway's work, not its refusals.
		"GATEWAY_DEFAULT_RATE=1000000", "GATEWAY_DEFAULT_BURST=1000000", "GATEWAY_DEFAULT_CONCURRENCY=1000000",
		"GATEWAY_STATE_BUCKET="+n.id+"_gateway",
	)
}

// apiKeys writes, once, the API-key file of the runs with authentication:
// benchTenant and a secret, among 99 other tenants' lines (the gateway
// compares a secret with every line).
func (b *bencher) apiKeys() (file, secret string, err error) {
	if b.apiKeyFile != "" {
		return b.apiKeyFile, b.apiKeySecret, nil
	}
	secret = "sk_bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var lines strings.Builder
	for i := range 99 {
		lines.WriteString(gateway.HashAPIKey(fmt.Sprintf("tenant%02d", i), fmt.Sprintf("sk_other_%d_%s", i, secret)) + "\n")
	}
	lines.WriteString(gateway.HashAPIKey(benchTenant, secret) + "\n")
	file = filepath.Join(b.s.dir, "api-keys")
	if err := os.WriteFile(file, []byte(lines.String()), 0o600); err != nil {
		return "", "", err
	}
	b.apiKeyFile, b.apiKeySecret = file, secret
	return file, secret, nil
}

// httpSender sends internal/load's commands to the gateway as a web client
// would, and turns each response back into a client.Reply for the load's
// bookkeeping. 202, 409, 503 and 504 are sent again with the same key
// after a short wait, as the checkout page does.
type httpSender struct {
	base    string
	bearer  string // Authorization: Bearer, when not empty
	hc      *http.Client
	retries atomic.Int64
}

var _ load.Sender = (*httpSender)(nil)

func newHTTPSender(base string, inFlight int) *httpSender {
	tr := &http.Transport{MaxIdleConns: 2 * inFlight, MaxIdleConnsPerHost: 2 * inFlight, IdleConnTimeout: time.Minute}
	return &httpSender{base: base, hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

func (h *httpSender) close() { h.hc.CloseIdleConnections() }

// Send implements load.Sender.
func (h *httpSender) Send(ctx context.Context, key string, cmd messages.Command) (*client.Reply, error) {
	path, body, err := requestOf(cmd)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		status, header, respBody, err := h.post(ctx, path, key, body)
		if err != nil {
			return nil, err
		}
		reply := &client.Reply{PublishAttempts: attempt, Latency: time.Since(start)}
		switch status {
		case http.StatusCreated:
			if reply.Result, err = messages.DecodeResult(respBody); err != nil {
				return nil, fmt.Errorf("bench: 201 body: %w", err)
			}
		case http.StatusPaymentRequired, http.StatusUnprocessableEntity:
			var p struct {
				Code    string          `json:"code"`
				Detail  string          `json:"detail"`
				Outcome json.RawMessage `json:"outcome"`
			}
			if err := json.Unmarshal(respBody, &p); err != nil {
				return nil, fmt.Errorf("bench: %d body: %w", status, err)
			}
			if len(p.Outcome) == 0 { // idempotency_key_reused: no outcome
				return reply, &messages.RejectError{Code: p.Code, Message: p.Detail}
			}
			if reply.Result, err = messages.DecodeResult(p.Outcome); err != nil {
				return nil, fmt.Errorf("bench: %d outcome: %w", status, err)
			}
		case http.StatusAccepted, http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			h.retries.Add(1)
			wait := 50 * time.Millisecond
			if s, err := strconv.Atoi(header.Get("Retry-After")); err == nil && status != http.StatusConflict && status != http.StatusAccepted {
				wait = time.Duration(s) * time.Second
			}
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		default:
			return nil, fmt.Errorf("bench: HTTP %d: %s", status, bytes.TrimSpace(respBody))
		}
		// The body of a replay says replayed false; the header says it.
		reply.Result.Replayed = header.Get("Idempotent-Replayed") == "true"
		return reply, client.ResultError(&reply.Result)
	}
}

func (h *httpSender) post(ctx context.Context, path, key string, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	if h.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+h.bearer)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// requestOf returns the gateway's path and body for cmd.
func requestOf(cmd messages.Command) (string, []byte, error) {
	switch c := cmd.(type) {
	case messages.ChargeRequest:
		b, err := json.Marshal(c)
		return "/v1/payments", b, err
	case messages.RefundRequest:
		b, err := json.Marshal(c)
		return "/v1/refunds", b, err
	case messages.CartAddRequest:
		b, err := json.Marshal(map[string]any{"sku": c.SKU, "quantity": c.Quantity})
		return "/v1/carts/" + url.PathEscape(c.CartID) + "/items", b, err
	default:
		return "", nil, errors.New("bench: no gateway route for " + cmd.Kind())
	}
}

// GatewayConfig configures a Gateway run.
type GatewayConfig struct {
	// Count is the commands of every scenario. Defaults to 10000.
	Count int
	// Rounds is how often the pair (pkg/client, then the gateway) is
	// measured. Defaults to 3.
	Rounds int
	// ClientInFlight is the load's requests in flight, on both sides.
	// Defaults to 128.
	ClientInFlight int
	// Durable, GoMaxProcs, WorkerBin and Progress are as in Config.
	Durable    bool
	GoMaxProcs int
	WorkerBin  string
	Progress   io.Writer
}

// GatewayCountDefault is GatewayConfig.Count's default: enough for a
// steady rate, little enough for about a minute in all.
const GatewayCountDefault = 10_000

// Gateway measures the gateway's overhead alone (make bench/gateway): for
// each round, the end-to-end peak through pkg/client, then through the
// HTTP gateway without authentication, then with API keys; the ratio of
// the last to the first (the gateway as deployed, GATEWAY_AUTH=apikeys by
// default), and the cost of authentication, the last over the second.
func Gateway(ctx context.Context, gc *GatewayConfig) (*Report, error) {
	cfg := (&Config{Count: gc.Count, Rounds: gc.Rounds, ClientInFlight: gc.ClientInFlight, Durable: gc.Durable, GoMaxProcs: gc.GoMaxProcs,
		WorkerBin: gc.WorkerBin, Progress: gc.Progress})
	if cfg.Count == 0 {
		cfg.Count = GatewayCountDefault
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &bencher{cfg: cfg, started: time.Now(), steps: 3 * cfg.Rounds}
	b.progressf("starting nats-server and redis-server; building the worker and the gateway")
	var err error
	if b.s, err = startServers(cfg.Durable, cfg.GoMaxProcs); err != nil { //nolint:contextcheck // as in Run
		return nil, err
	}
	defer b.s.close() //nolint:contextcheck // the servers outlive ctx: Deployment.Close bounds its own stop
	if b.workerBin, err = b.worker(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Rounds: cfg.Rounds}
	rep.Setup = append(rep.Setup, b.s.describe...)
	rep.Setup = append(rep.Setup,
		fmt.Sprintf("Worker: %s, one process, CONCURRENCY=%d; gateway: ./cmd/gateway, one process, HTTP_WAIT=30s", b.workerBin, e2eInFlight),
		fmt.Sprintf("Load: %d commands per scenario (internal/load's mix, no duplicates), %d in flight, from this process: through pkg/client, then as HTTP requests; %s",
			cfg.Count, cfg.ClientInFlight, machine()))
	ratios, authRatios, err := b.gatewayRounds(ctx, rep)
	if err != nil {
		return nil, err
	}
	s, a := spreadOf(ratios), spreadOf(authRatios)
	rep.GatewayRatio, rep.GatewayAuthRatio, rep.GatewayPairs = &s, &a, len(ratios)
	rep.Seconds = time.Since(b.started).Seconds()
	return rep, nil
}

// gatewayRounds measures cfg.Rounds triples into rep and returns their
// ratios: the gateway with API keys over pkg/client, and over the gateway
// without authentication.
func (b *bencher) gatewayRounds(ctx context.Context, rep *Report) (ratios, authRatios []float64, err error) {
	for round := 1; round <= b.cfg.Rounds; round++ {
		suffix := ""
		if b.cfg.Rounds > 1 {
			suffix = fmt.Sprintf(" (round %d)", round)
		}
		lib, err := b.measure(ctx, "e2e peak via pkg/client"+suffix, func() (*Result, error) {
			return b.e2e(ctx, e2eRun{name: "e2e peak via pkg/client" + suffix})
		})
		if err != nil {
			return nil, nil, err
		}
		open, err := b.measure(ctx, "e2e peak via gateway, no auth"+suffix, func() (*Result, error) {
			return b.e2eGateway(ctx, "e2e peak via gateway, no auth"+suffix, false)
		})
		if err != nil {
			return nil, nil, err
		}
		gw, err := b.measure(ctx, "e2e peak via gateway, API key"+suffix, func() (*Result, error) {
			return b.e2eGateway(ctx, "e2e peak via gateway, API key"+suffix, true)
		})
		if err != nil {
			return nil, nil, err
		}
		open.Notes = append(open.Notes, fmt.Sprintf("%.3f of the rate through pkg/client in the same round", open.PerSecond/lib.PerSecond))
		ratio, auth := gw.PerSecond/lib.PerSecond, gw.PerSecond/open.PerSecond
		gw.Notes = append(gw.Notes, fmt.Sprintf("%.3f of the rate through pkg/client, %.3f of the gateway without auth, in the same round", ratio, auth))
		ratios, authRatios = append(ratios, ratio), append(authRatios, auth)
		rep.Results = append(rep.Results, *lib, *open, *gw)
	}
	return ratios, authRatios, nil
}
