package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/gateway"
)

// TestRun_Demo runs a small demo end to end, as `make demo` does, on its own
// embedded NATS and redis-server (or NATS_URL / REDIS_URL), and requires a
// clean audit.
func TestRun_Demo(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--count", "400", "--concurrency", "32"}, os.Environ(), &out, &errOut)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	s := out.String()
	require.Contains(t, s, "OK: every command has exactly one outcome")
	require.Contains(t, s, "double charges                   0")
	require.Contains(t, s, "disagreeing keys                 0")
	require.Contains(t, errOut.String(), "100%  ", "progress goes to stderr")

	// The next steps name a key file admitting tenant demo, and its secret.
	m := regexp.MustCompile(`GATEWAY_API_KEYS_FILE=(\S+) go run ./cmd/gateway`).FindStringSubmatch(s)
	require.NotNil(t, m, s)
	secret := regexp.MustCompile(`#api_key=(sk_demo_[0-9a-f]+)`).FindStringSubmatch(s)
	require.NotNil(t, secret, s)
	keys, err := gateway.LoadAPIKeys(m[1])
	require.NoError(t, err)
	require.Equal(t, []string{"demo"}, keys.Tenants())
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/payments", nil)
	req.Header.Set("Authorization", "Bearer "+secret[1])
	caller, err := keys.Authenticate(req)
	require.NoError(t, err)
	require.Equal(t, "demo", caller.Tenant)
}

func TestRun_UsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"--workers", "0"}, {"--failure-rate", "1"}, {"--mix", "payment=x"}, {"--count", "many"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, nil, &out, &errOut)
		var usage *cli.UsageError
		require.ErrorAs(t, err, &usage, "%v", args)
		require.Equal(t, cli.ExitUsage, cli.Exit("demo", err, &errOut, nil))
		flag := strings.TrimPrefix(args[0], "--")
		require.Contains(t, err.Error(), flag, "the error names the flag")
	}
	var out bytes.Buffer
	require.ErrorIs(t, run(context.Background(), []string{"--help"}, nil, &out, &out), cli.ErrHelp)
	require.Contains(t, out.String(), "--failure-rate")
	require.Contains(t, out.String(), "--nats-url")
}

// TestRun_ConfigReference: the demo's section of docs/configuration.md is
// what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	var stdout bytes.Buffer
	require.ErrorIs(t, run(context.Background(), []string{cli.ReferenceFlag}, nil, &stdout, &stdout), cli.ErrHelp)
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "demo", stdout.Bytes()))
}

// TestRun_DemoStripe is `make demo PROVIDER=stripe`: the same demo with the
// Stripe provider, against a stripe-mock the demo starts.
func TestRun_DemoStripe(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--provider", "stripe", "--count", "200", "--concurrency", "32"}, os.Environ(), &out, &errOut)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	s := out.String()
	require.Contains(t, s, "started stripe-mock at http://127.0.0.1:")
	require.Contains(t, s, "OK: every command has exactly one outcome and every retry got it back, through Stripe's API")
	require.Contains(t, s, "disagreeing keys                 0")
}

// TestRun_DemoOnYourServers runs the demo against a NATS and a Redis of
// one's own, as its --nats-url and --redis-url promise: it removes what it
// made (its prefixed streams and keys) and leaves nothing behind. It left
// its command stream: the cleanup ran while its workers still ran, and
// they put the stream back (the trial of issue 18).
func TestRun_DemoOnYourServers(t *testing.T) {
	ns, err := testenv.StartNATS()
	require.NoError(t, err)
	defer ns.Shutdown()
	rs, err := testenv.StartRedis()
	require.NoError(t, err)
	defer rs.Shutdown()
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"--count", "200", "--concurrency", "16"},
		[]string{"NATS_URL=" + ns.URL, "REDIS_URL=" + rs.URL}, &out, &errOut)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	require.Contains(t, out.String(), "streams and subjects prefixed")

	nc, err := nats.Connect(ns.URL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var left []string
	names := js.StreamNames(context.Background())
	for n := range names.Name() {
		left = append(left, n)
	}
	require.NoError(t, names.Err())
	require.Empty(t, left, "the demo's streams are gone")
	rdb, err := testenv.ConnectRedis(rs.URL)
	require.NoError(t, err)
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "the demo's keys are gone")
}
