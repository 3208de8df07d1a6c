package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/gateway"
)

func TestMain(m *testing.M) { testenv.Main(m) }

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

// consoleProc is a console running in the test's process, as main runs it.
type consoleProc struct {
	url  string
	out  *syncBuffer
	stop func()
}

var listening = regexp.MustCompile(`msg="console listening" addr=(\S+)`)

// envOf is the environment that points the console at env.
func envOf(env *loadtest.Env) []string {
	top := env.Config.Topology
	return []string{
		"CONSOLE_ADDR=127.0.0.1:0", "NATS_URL=" + env.NATSURL, "REDIS_URL=" + env.RedisURL, "REDIS_KEY_PREFIX=" + env.Config.KeyPrefix,
		"COMMAND_STREAM=" + top.CommandStream, "RESULT_STREAM=" + top.ResultStream, "DEADLETTER_STREAM=" + top.DeadLetterStream,
		"COMMAND_SUBJECTS=" + top.Subjects.Command, "RESULT_SUBJECTS=" + top.Subjects.Result,
		"REJECTED_SUBJECTS=" + top.Subjects.Rejected, "DEADLETTER_SUBJECTS=" + top.Subjects.DeadLetter,
		"LOOKUP_SUBJECTS=" + top.Subjects.Lookup, "CONSUMER=" + top.Consumer,
	}
}

// startConsole runs the console against env until the test ends, and
// waits until it listens.
func startConsole(t *testing.T, env *loadtest.Env, extra ...string) *consoleProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &consoleProc{out: &syncBuffer{}}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, append(envOf(env), extra...), io.Discard, p.out) }()
	p.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("console: %v", err)
		}
	}
	t.Cleanup(p.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := listening.FindStringSubmatch(p.out.String()); m != nil {
			p.url = "http://" + m[1]
			return p
		}
		select {
		case err := <-done:
			t.Fatalf("console exited before listening: %v\n%s", err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("console not listening after 20s:\n%s", p.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// operatorKeys writes a key file with an operator and a plain tenant, and
// returns its path and the operator's and the tenant's secrets.
func operatorKeys(t *testing.T) (path, operator, tenant string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "operators")
	operator, tenant = "sk-operator-test-secret", "sk-tenant-test-secret"
	require.NoError(t, os.WriteFile(path, []byte(gateway.HashAPIKey("ops", operator)+" role=operator\n"+
		gateway.HashAPIKey("shop", tenant)+"\n"), 0o600))
	return path, operator, tenant
}

func TestRun_UsageErrors(t *testing.T) {
	t.Parallel()
	keys, _, _ := operatorKeys(t)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "CONSOLE_AUTH=apikeys needs CONSOLE_API_KEYS_FILE"},
		{[]string{"CONSOLE_AUTH=none", "CONSOLE_API_KEYS_FILE=" + keys}, "the console has no none"},
		{[]string{"CONSOLE_AUTH=jwt"}, "CONSOLE_AUTH=jwt needs CONSOLE_JWKS_URL"},
		{[]string{"CONSOLE_API_KEYS_FILE=" + keys, "CONSOLE_WORKER_METRICS=worker:9464"}, "want an http(s) URL"},
		{[]string{"CONSOLE_API_KEYS_FILE=" + keys, "CONSOLE_ADDR=nowhere"}, "--http-addr (CONSOLE_ADDR)"},
		{[]string{"CONSOLE_API_KEYS_FILE=" + keys, "CONSOLE_SESSION_TTL=1s"}, "--session-ttl"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), nil, tc.env, io.Discard, &stderr)
		require.Equal(t, cli.ExitUsage, cli.Exit("console", err, &stderr, func(error) (int, bool) { return 1, false }), "%v", tc.env)
		require.Contains(t, stderr.String(), tc.want, "%v", tc.env)
	}
}

func TestRun_NewAPIKey(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"--new-api-key", "ops"}, nil, &out, io.Discard))
	m := regexp.MustCompile(`secret \(give it to the operator; it is not stored anywhere\): (\S+)\n.*\n(ops [0-9a-f]{64} role=operator)\n`).FindStringSubmatch(out.String())
	require.NotNil(t, m, out.String())
	require.Equal(t, gateway.HashAPIKey("ops", m[1])+" role=operator", m[2])
}

// TestRun_ConfigReference: the console's section of docs/configuration.md
// is what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.ErrorIs(t, run(t.Context(), []string{cli.ReferenceFlag}, nil, &stdout, &stderr), cli.ErrHelp)
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "console", stdout.Bytes()))
}

// browser is an HTTP client that keeps cookies and does not follow
// redirects, as a test of the login needs.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values) (int, string, http.Header) {
	t.Helper()
	var body io.Reader = http.NoBody
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestConsole_Login: a page without a session goes to the login; a
// tenant without the operator role and an unknown key are refused; an
// operator gets in, with the security headers; a change posted without
// the session's CSRF token is refused; /metrics serves idempay_build_info
// without a login; logging out ends the session.
func TestConsole_Login(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	keys, operator, tenant := operatorKeys(t)
	p := startConsole(t, env, "CONSOLE_API_KEYS_FILE="+keys)
	c := browser(t)

	code, _, h := do(t, c, http.MethodGet, p.url+"/deadletters?kind=cart.add", nil)
	require.Equal(t, http.StatusSeeOther, code)
	require.Equal(t, "/login?next="+url.QueryEscape("/deadletters?kind=cart.add"), h.Get("Location"))

	code, body, _ := do(t, c, http.MethodPost, p.url+"/login", url.Values{"credential": {tenant}, "next": {"/"}})
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, "tenant shop&#39;s, without the operator role")
	code, body, _ = do(t, c, http.MethodPost, p.url+"/login", url.Values{"credential": {"sk-guess"}, "next": {"/"}})
	require.Equal(t, http.StatusUnauthorized, code)
	require.Contains(t, body, "Unknown API key or token")
	code, _, _ = do(t, c, http.MethodGet, p.url+"/", nil)
	require.Equal(t, http.StatusSeeOther, code, "still not logged in")

	code, _, h = do(t, c, http.MethodPost, p.url+"/login", url.Values{"credential": {operator}, "next": {"//evil.example/"}})
	require.Equal(t, http.StatusSeeOther, code)
	require.Equal(t, "/", h.Get("Location"), "a redirect never leaves the console")
	code, body, h = do(t, c, http.MethodGet, p.url+"/", nil)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "ops (api key)")
	require.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'")
	require.Equal(t, "no-store", h.Get("Cache-Control"))
	require.Contains(t, p.out.String(), `msg="console: login" tenant=ops`)

	for _, path := range []string{"/deadletters", "/unknown", "/keys", "/audit", "/keys/" + "0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f"} {
		code, body, _ = do(t, c, http.MethodGet, p.url+path, nil)
		require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	}
	code, _, _ = do(t, c, http.MethodGet, p.url+"/keys/not-a-key", nil)
	require.Equal(t, http.StatusBadRequest, code)

	code, _, _ = do(t, c, http.MethodPost, p.url+"/deadletters/purge", url.Values{"kind": {"cart.add"}})
	require.Equal(t, http.StatusForbidden, code, "no CSRF token")
	code, _, _ = do(t, c, http.MethodPost, p.url+"/deadletters/purge", url.Values{"kind": {"cart.add"}, "csrf": {"forged"}})
	require.Equal(t, http.StatusForbidden, code, "a forged CSRF token")
	_, body, _ = do(t, c, http.MethodGet, p.url+"/deadletters", nil)
	csrf := csrfField.FindStringSubmatch(body)
	require.NotNil(t, csrf)
	code, body, _ = do(t, c, http.MethodPost, p.url+"/deadletters/purge", url.Values{"kind": {"cart.add"}, "csrf": {csrf[1]}})
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "Purged 0 dead letter(s)")

	code, body, _ = do(t, http.DefaultClient, http.MethodGet, p.url+"/metrics", nil)
	require.Equal(t, http.StatusOK, code)
	require.Regexp(t, `idempay_build_info\{goversion="go[0-9.]+",version="dev"\} 1`, body)

	code, _, _ = do(t, c, http.MethodPost, p.url+"/logout", url.Values{"csrf": {csrf[1]}})
	require.Equal(t, http.StatusSeeOther, code)
	code, _, _ = do(t, c, http.MethodGet, p.url+"/", nil)
	require.Equal(t, http.StatusSeeOther, code, "logged out")
}
