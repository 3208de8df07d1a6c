package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/sim"
)

// gatewayBin is this command, built once: the tests run it as a process,
// as an operator would, and stop it with SIGTERM.
var gatewayBin string

func TestMain(m *testing.M) {
	if _, err := testenv.Shared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "idempay-gateway-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin, err = testenv.BuildCommand(context.Background(), dir, "gateway")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		testenv.Close()
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	testenv.Close()
	os.Exit(code)
}

func TestRun_UsageErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  []string
		flag string
	}{
		{[]string{"--http-wait", "1ms"}, nil, "--http-wait"},
		{nil, []string{"HTTP_WAIT=soon"}, "--http-wait"},
		{[]string{"--http-addr", "8080"}, nil, "--http-addr"},
		{[]string{"--cors-origins", "https://shop.example.com/checkout"}, nil, "--cors-origins"},
		{nil, []string{"CORS_ORIGINS=shop.example.com"}, "--cors-origins"},
		{[]string{"--command-subjects", "cmd.*"}, []string{"GATEWAY_AUTH=none"}, "--command-subjects"},
		{[]string{"--bogus"}, nil, "--bogus"},
		{[]string{"--pprof"}, nil, "--pprof (PPROF) needs --metrics-addr (METRICS_ADDR)"},
		{[]string{"--nats-user", "gw"}, []string{"GATEWAY_AUTH=none"}, "--nats-user (NATS_USER) needs --nats-password"},
		// An authentication method without its settings: refused, naming
		// the variable it needs.
		{nil, nil, "GATEWAY_AUTH=apikeys needs GATEWAY_API_KEYS_FILE"},
		{nil, []string{"GATEWAY_AUTH=jwt"}, "GATEWAY_AUTH=jwt needs GATEWAY_JWKS_URL"},
		{nil, []string{"GATEWAY_AUTH=jwt", "GATEWAY_JWKS_URL=https://id.example/jwks"}, "GATEWAY_AUTH=jwt needs GATEWAY_JWT_ISSUER"},
		{nil, []string{"GATEWAY_AUTH=jwt", "GATEWAY_JWKS_URL=https://id.example/jwks", "GATEWAY_JWT_ISSUER=i"}, "GATEWAY_AUTH=jwt needs GATEWAY_JWT_AUDIENCE"},
		{nil, []string{"GATEWAY_AUTH=jwt,apikeys", "GATEWAY_JWKS_URL=https://id.example/jwks", "GATEWAY_JWT_ISSUER=i", "GATEWAY_JWT_AUDIENCE=a"}, "GATEWAY_API_KEYS_FILE"},
		{nil, []string{"GATEWAY_AUTH=none,apikeys"}, "--auth (GATEWAY_AUTH)"},
		{nil, []string{"GATEWAY_AUTH=oauth"}, "--auth (GATEWAY_AUTH)"},
		{nil, []string{"GATEWAY_AUTH=none", "GATEWAY_DEFAULT_RATE=0"}, "--default-rate (GATEWAY_DEFAULT_RATE)"},
		{[]string{"--new-api-key", "acme corp"}, nil, "--new-api-key"},
		{[]string{"--metrics-addr", "nonsense"}, []string{"GATEWAY_AUTH=none"}, `--metrics-addr (METRICS_ADDR) "nonsense": want host:port`},
		{nil, []string{"IDEMPAY_HTTP_WAIT=1ms", "HTTP_WAIT=1s", "GATEWAY_AUTH=none"}, "--http-wait (IDEMPAY_HTTP_WAIT) must be between"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), c.args, c.env, &out, &errOut)
		require.Equal(t, cli.ExitUsage, cli.Exit("gateway", err, &errOut, nil), "%v %v: %v", c.args, c.env, err)
		require.Contains(t, errOut.String(), c.flag, "the error names the flag")
		require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut.String()), "\n")+1, "one line: %q", errOut.String())
	}
	var out bytes.Buffer
	require.ErrorIs(t, run(context.Background(), []string{"--help"}, nil, &out, &out), cli.ErrHelp)
	for _, want := range []string{"HTTP_ADDR", "NATS_URL", "HTTP_WAIT", "CORS_ORIGINS", "127.0.0.1:8080", "10s", "GATEWAY_AUTH",
		"GATEWAY_API_KEYS_FILE", "GATEWAY_JWKS_URL", "GATEWAY_JWT_ISSUER", "GATEWAY_JWT_AUDIENCE", "GATEWAY_TENANT_CLAIM",
		"GATEWAY_DEFAULT_RATE", "GATEWAY_DEFAULT_BURST", "GATEWAY_DEFAULT_CONCURRENCY", "NATS_INBOX_PREFIX", "SIGHUP"} {
		require.Contains(t, out.String(), want)
	}
	out.Reset()
	require.ErrorIs(t, run(context.Background(), []string{"--version"}, nil, &out, &out), cli.ErrHelp)
	require.Contains(t, out.String(), "gateway ")

	// Nothing listens: one line naming the server, exit 1, no password;
	// nor with a password whose %-escape is malformed.
	var errOut bytes.Buffer
	err := run(context.Background(), []string{"--nats-url", "nats://u:secret@127.0.0.1:1"}, []string{"GATEWAY_AUTH=none"}, &out, &errOut)
	require.Equal(t, 1, cli.Exit("gateway", err, &errOut, func(error) (int, bool) { return 1, false }))
	require.Contains(t, errOut.String(), "cannot connect to NATS at nats://u:xxxxx@127.0.0.1:1")
	require.NotContains(t, errOut.String(), "secret")
	errOut.Reset()
	err = run(context.Background(), []string{"--nats-url", "nats://u:se%zzcret@127.0.0.1:1"}, []string{"GATEWAY_AUTH=none"}, &out, &errOut)
	require.Error(t, err)
	_ = cli.Exit("gateway", err, &errOut, func(error) (int, bool) { return 1, false })
	require.Contains(t, errOut.String(), "xxxxx@127.0.0.1:1")
	require.NotContains(t, errOut.String(), "se%zz")
	require.NotContains(t, errOut.String(), "cret")

	// --new-api-key: a secret and the line that admits it, which the
	// gateway's own parser takes.
	out.Reset()
	require.NoError(t, run(context.Background(), []string{"--new-api-key", "acme"}, nil, &out, &out))
	var secret, line string
	for l := range strings.Lines(out.String()) {
		if _, s, ok := strings.Cut(l, "it is not stored anywhere): "); ok {
			secret = strings.TrimSpace(s)
		}
		if strings.HasPrefix(l, "acme ") {
			line = strings.TrimSpace(l)
		}
	}
	require.Equal(t, gateway.HashAPIKey("acme", secret), line, "%s", out.String())
	require.GreaterOrEqual(t, len(secret), 40)

	// --healthcheck with nothing serving: exit 1, saying why.
	errOut.Reset()
	err = run(context.Background(), []string{"--healthcheck", "--http-addr", "127.0.0.1:1"}, nil, &out, &errOut)
	require.Equal(t, 1, cli.Exit("gateway", err, &errOut, func(error) (int, bool) { return 1, false }))
	require.Contains(t, errOut.String(), "gateway: error: healthcheck: Get \"http://127.0.0.1:1/readyz\"")
}

// TestRun_ConfigReference: the gateway's section of docs/configuration.md
// is what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.ErrorIs(t, run(t.Context(), []string{cli.ReferenceFlag}, nil, &stdout, &stderr), cli.ErrHelp)
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "gateway", stdout.Bytes()))
}

// gatewayProc is a running gateway process.
type gatewayProc struct {
	cmd  *exec.Cmd
	url  string
	out  *syncBuffer
	done chan struct{}
	err  error
}

var listening = regexp.MustCompile(`msg="gateway listening" addr=(\S+)`)

// startGateway runs the gateway binary against env's topology, configured
// only through its environment, and waits until it listens.
func startGateway(t *testing.T, env *loadtest.Env, extra ...string) *gatewayProc {
	t.Helper()
	top := env.Config.Topology
	p := &gatewayProc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(context.WithoutCancel(t.Context()), gatewayBin) // lives until stop
	p.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"), "HTTP_ADDR=127.0.0.1:0", "NATS_URL=" + env.NATSURL,
		"COMMAND_STREAM=" + top.CommandStream, "RESULT_STREAM=" + top.ResultStream, "DEADLETTER_STREAM=" + top.DeadLetterStream,
		"COMMAND_SUBJECTS=" + top.Subjects.Command, "RESULT_SUBJECTS=" + top.Subjects.Result,
		"REJECTED_SUBJECTS=" + top.Subjects.Rejected, "DEADLETTER_SUBJECTS=" + top.Subjects.DeadLetter,
		"GATEWAY_STATE_BUCKET=" + env.NS + "_gateway",
	}, extra...)
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, p.cmd.Start())
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, p.out))
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-p.done:
		t.Fatalf("gateway exited before listening: %v\n%s", p.err, p.out)
	case <-time.After(20 * time.Second):
		t.Fatalf("gateway not listening after 20s:\n%s", p.out)
	}
	return p
}

// TestGateway_Process runs the binary as a user would: a payment gets
// 201, a repeat its replay; SIGTERM while a request is under way lets that
// request finish, and the process exits 0.
func TestGateway_Process(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Sim: sim.Config{Latency: 500 * time.Millisecond}})
	p := startGateway(t, env, "HTTP_WAIT=5s", "LOG_LEVEL=info", "GATEWAY_AUTH=none")
	require.Contains(t, p.out.String(), "GATEWAY_AUTH=none: every request is served without credentials", "none is logged as a warning")

	ready, err := http.Get(p.url + "/readyz") //nolint:noctx // a test's one-off request
	require.NoError(t, err)
	ready.Body.Close()
	require.Equal(t, http.StatusOK, ready.StatusCode)
	// The compose file's health check: the program asks its own /readyz.
	var hc bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"--healthcheck"}, []string{"HTTP_ADDR=" + strings.TrimPrefix(p.url, "http://")}, &hc, &hc))
	require.Equal(t, "ready\n", hc.String())

	key := uuid.NewString()
	status, replayed := post(t, p.url, key)
	require.Equal(t, http.StatusCreated, status)
	require.False(t, replayed)
	status, replayed = post(t, p.url, key)
	require.Equal(t, http.StatusCreated, status)
	require.True(t, replayed)

	// A request under way when SIGTERM comes is answered before the exit.
	type result struct {
		status int
		err    error
	}
	under := make(chan result, 1)
	slow := uuid.NewString()
	go func() {
		resp, err := postRaw(p.url, slow)
		if err != nil {
			under <- result{err: err}
			return
		}
		resp.Body.Close()
		under <- result{status: resp.StatusCode}
	}()
	loadtest.WaitFor(t, 5*time.Second, func() bool { return env.CommandsStored(t) == 2 }, "the slow request's command was not stored")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	r := <-under
	require.NoError(t, r.err)
	require.Equal(t, http.StatusCreated, r.status)
	select {
	case <-p.done:
	case <-time.After(25 * time.Second):
		t.Fatalf("no exit within 25s of SIGTERM:\n%s", p.out)
	}
	require.NoError(t, p.err, "exit status 0 after SIGTERM:\n%s", p.out)
	require.Contains(t, p.out.String(), "gateway stopped")
	_, charges := env.SimLedger(t)
	require.Len(t, charges, 2)
}

func postRaw(url, key string) (*http.Response, error) {
	body := `{"account_id":"acct_42","amount":1999,"currency":"EUR"}`
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url+"/v1/payments", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	return http.DefaultClient.Do(req)
}

func post(t *testing.T, url, key string) (status int, replayed bool) {
	t.Helper()
	resp, err := postRaw(url, key)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	res, err := messages.DecodeResult(body)
	require.NoError(t, err)
	require.Equal(t, key, res.Key)
	return resp.StatusCode, resp.Header.Get("Idempotent-Replayed") == "true"
}

// syncBuffer is a goroutine-safe bytes.Buffer for a child's output.
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

// TestGateway_ProcessTenants runs the binary with an API-key file and an
// operator address: a tenant's key is taken, a request without one is
// 401; SIGHUP reloads the file (a new tenant in, the old one out, a broken
// file ignored); /metrics and /readyz are on the operator address only.
func TestGateway_ProcessTenants(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	keys := filepath.Join(t.TempDir(), "api-keys")
	require.NoError(t, os.WriteFile(keys, []byte(gateway.HashAPIKey("acme", "sk-acme-1")+" rate=50\n"), 0o600))
	ops, err := testenv.FreePort()
	require.NoError(t, err)
	opsAddr := "127.0.0.1:" + strconv.Itoa(ops)
	p := startGateway(t, env, "GATEWAY_API_KEYS_FILE="+keys, "METRICS_ADDR="+opsAddr, "LOG_LEVEL=info")

	pay := func(secret, key string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.url+"/v1/payments",
			strings.NewReader(`{"account_id":"acct_42","amount":5,"currency":"EUR"}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.NotEmpty(t, resp.Header.Get("Request-Id"))
		return resp.StatusCode
	}
	require.Equal(t, http.StatusCreated, pay("sk-acme-1", "order-1"))
	require.Equal(t, http.StatusUnauthorized, pay("", "order-2"))
	require.Equal(t, http.StatusUnauthorized, pay("sk-globex-1", "order-3"))

	// A broken file: the keys loaded before stay.
	require.NoError(t, os.WriteFile(keys, []byte("globex not-a-hash\n"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	loadtest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(p.out.String(), "API keys not reloaded") }, "the reload's error is logged")
	require.Equal(t, http.StatusCreated, pay("sk-acme-1", "order-4"))

	require.NoError(t, os.WriteFile(keys, []byte(gateway.HashAPIKey("globex", "sk-globex-1")+"\n"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	loadtest.WaitFor(t, 10*time.Second, func() bool { return pay("sk-globex-1", "order-5") == http.StatusCreated }, "the new tenant is admitted")
	require.Equal(t, http.StatusUnauthorized, pay("sk-acme-1", "order-6"), "the old one is out")
	require.NotContains(t, p.out.String(), "sk-acme-1", "no secret in the log")
	require.NotContains(t, p.out.String(), "sk-globex-1")
	require.Contains(t, p.out.String(), `msg=request`, "an audit line per request")
	require.Contains(t, p.out.String(), `tenant=globex`)

	get := func(url string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, http.NoBody)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/metrics", "/readyz"} {
		require.Equal(t, http.StatusNotFound, get(p.url+path), "%s is not on the public address", path)
		require.Equal(t, http.StatusOK, get("http://"+opsAddr+path), "%s is on the operator address", path)
	}
	require.Equal(t, http.StatusOK, get(p.url+"/healthz"))
	require.Equal(t, http.StatusOK, get("http://"+opsAddr+"/healthz"))
}
