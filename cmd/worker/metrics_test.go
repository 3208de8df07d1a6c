package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// TestWorker_Metrics runs a load with duplicates (racing, after the answer,
// and late, past the dedupe window), declines, refunds and a flaky provider
// through a real worker process, then scrapes its /metrics: the counts agree
// with what the load saw and with the simulated provider's ledger.
func TestWorker_Metrics(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, "METRICS_ADDR=127.0.0.1:0", "SIM_FAILURE_RATE=0.2", "MAX_DELIVER=50")
	w := d.start(t)
	addr := regexp.MustCompile(`serving /metrics, /healthz, /readyz" addr=(\S+)`).FindStringSubmatch(w.out.String())
	require.NotNil(t, addr, "the worker logs where it serves:\n%s", w.out.String())
	base := "http://" + addr[1]

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get(base + path) //nolint:noctx // a test's one-off request
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, path)
	}

	env, _ := testenv.Shared()
	nc, err := testenv.ConnectNATS(env.NATSURL, t.Name()+"-client")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc, &client.Config{Topology: testenv.Topology(d.ns), ResultTimeout: 30 * time.Second})
	require.NoError(t, err)
	s, err := load.Run(context.Background(), c, &load.Config{
		Count: 300, Concurrency: 16, Duplicates: 0.4, LateAfter: 1500 * time.Millisecond, LateShare: 0.5,
		DeclineShare: 0.1, RefundShare: 0.2, Seed: 42,
	})
	require.NoError(t, err)
	require.True(t, s.OK(), "%+v", s)
	ledger, err := load.CheckLedger(context.Background(), d.rdb, d.ns+":", s)
	require.NoError(t, err)
	require.True(t, ledger.OK(), "%v", ledger.Mismatches)

	// A delivery counts its answer after sending it, and leaves the
	// in-flight gauge after that: wait for the gauge to read 0 (and for no
	// command to wait), so that every answer the load saw is counted.
	var m map[string]float64
	eventually(t, 30*time.Second, func() bool {
		m = scrape(t, base+"/metrics")
		return m["idempay_in_flight"] == 0 && m["idempay_consumer_ack_pending_messages"] == 0 && m["idempay_consumer_pending_messages"] == 0
	}, "the worker is idle")
	// Counters are whole numbers: compare them as such.
	sum := func(name string, labels ...string) int {
		total := 0.0
		for series, v := range m {
			if !strings.HasPrefix(series, name+"{") && series != name {
				continue
			}
			ok := true
			for _, l := range labels {
				ok = ok && strings.Contains(series, l)
			}
			if ok {
				total += v
			}
		}
		return int(total)
	}
	require.Equal(t, s.ByStatus[messages.StatusSucceeded], sum("idempay_commands_total", `status="succeeded"`, `replayed="false"`),
		"one succeeded answer per succeeded key")
	require.Equal(t, s.ByStatus[messages.StatusFailed], sum("idempay_commands_total", `status="failed"`, `replayed="false"`))
	require.Equal(t, s.ByCode[messages.CodeCardDeclined], sum("idempay_commands_total", `code="card_declined"`, `replayed="false"`))
	// Every late duplicate the load sent was replayed; the worker may have
	// replayed more: a message that waited in the pull buffer past its
	// 2s ack wait on this busy machine is delivered again and finds its
	// outcome stored (harmless: it runs nothing).
	require.GreaterOrEqual(t, sum("idempay_commands_total", `replayed="true"`), s.ReplayedByWorkers, "replays: at least the late duplicates")
	require.EqualValues(t, ledger.Calls, sum("idempay_provider_calls_total", `kind="charge"`), "every charge call the provider received")
	require.Equal(t, s.ByCode[messages.CodeCardDeclined], sum("idempay_provider_calls_total", `kind="charge"`, `result="declined"`))
	require.Positive(t, sum("idempay_provider_calls_total", `result="transient"`), "the flaky provider's failures are counted")
	require.Equal(t, sum("idempay_provider_calls_total", `result="transient"`), sum("idempay_redeliveries_total", `reason="retry"`)+
		inDeliveryRetries(t, w), "each transient failure was retried, in the delivery or by redelivery")
	require.Zero(t, sum("idempay_dead_letters_total"))
	require.Positive(t, sum("idempay_command_duration_seconds_count", `kind="payment.charge"`))
	require.Contains(t, m, "idempay_consumer_pending_messages")
	require.Positive(t, sum("go_goroutines"))
}

// TestWorker_MetricsAtStart scrapes a worker that has done nothing yet:
// idempay_build_info names its version, and the series alerting and the
// dashboard query (answers by kind and status, dead letters by effect,
// resolutions by result, redeliveries by reason, the latency histogram)
// are there at zero, for every kind of the contract.
func TestWorker_MetricsAtStart(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, "METRICS_ADDR=127.0.0.1:0")
	w := d.start(t)
	addr := regexp.MustCompile(`serving /metrics, /healthz, /readyz" addr=(\S+)`).FindStringSubmatch(w.out.String())
	require.NotNil(t, addr, "the worker logs where it serves:\n%s", w.out.String())
	m := scrape(t, "http://"+addr[1]+"/metrics")

	build := ""
	for series, v := range m {
		if strings.HasPrefix(series, "idempay_build_info{") {
			build = series
			require.InDelta(t, 1.0, v, 0, series)
		}
	}
	require.Contains(t, build, `version="dev"`, "go test builds without -ldflags: the version is dev")
	require.Regexp(t, `goversion="go1\.\d+`, build)

	zero := func(series string) {
		t.Helper()
		v, ok := m[series]
		require.True(t, ok, "%s is scraped from the start", series)
		require.Zero(t, v, series)
	}
	for _, kind := range []string{messages.KindPaymentCharge, messages.KindCartAdd, messages.KindPaymentRefund} {
		for _, s := range []string{
			`idempay_commands_total{code="",kind="%s",replayed="false",status="succeeded"}`,
			`idempay_commands_total{code="",kind="%s",replayed="true",status="succeeded"}`,
			`idempay_commands_total{code="",kind="%s",replayed="false",status="failed"}`,
			`idempay_commands_total{code="dead_lettered",kind="%s",replayed="false",status="rejected"}`,
			`idempay_commands_total{code="outcome_unknown",kind="%s",replayed="false",status="rejected"}`,
			`idempay_commands_total{code="idempotency_key_reused",kind="%s",replayed="false",status="rejected"}`,
			`idempay_dead_letters_total{effect="none",kind="%s"}`,
			`idempay_dead_letters_total{effect="unknown",kind="%s"}`,
			`idempay_resolutions_total{kind="%s",result="succeeded"}`,
			`idempay_resolutions_total{kind="%s",result="dead_lettered"}`,
			`idempay_resolutions_total{kind="%s",result="unresolved"}`,
			`idempay_command_duration_seconds_count{kind="%s"}`,
		} {
			zero(fmt.Sprintf(s, kind))
		}
	}
	for _, reason := range []string{"lock_busy", "retry", "store", "publish", "stopping"} {
		zero(`idempay_redeliveries_total{reason="` + reason + `"}`)
	}
	for _, s := range []string{"idempay_in_flight", "idempay_lock_busy_total", "idempay_lock_lost_total", "idempay_commit_refused_total"} {
		zero(s)
	}
}

// inDeliveryRetries counts the worker's "operation failed; retrying" lines:
// the retries inside a delivery, which no redelivery counter sees.
func inDeliveryRetries(t *testing.T, w *workerProc) int {
	t.Helper()
	return strings.Count(w.out.String(), `msg="operation failed; retrying"`)
}

// scrape reads a Prometheus text exposition into series -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx,gosec // a test's one-off request to the worker it started
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out
}

// TestWorker_Healthcheck runs worker --healthcheck as the compose file's
// health check does, with the worker's own environment: exit 0 while the
// worker serves a ready /readyz, 1 with the reason once it is gone.
func TestWorker_Healthcheck(t *testing.T) {
	t.Parallel()
	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	d := newDeployment(t, "METRICS_ADDR="+addr)
	w := d.start(t)
	check := func() (string, int) {
		cmd := exec.CommandContext(t.Context(), workerBin, "--healthcheck")
		cmd.Env = append(os.Environ(), d.env...)
		out, err := cmd.CombinedOutput()
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			return string(out), ee.ExitCode()
		}
		require.NoError(t, err)
		return string(out), 0
	}
	var out string
	var code int
	eventually(t, 10*time.Second, func() bool { out, code = check(); return code == 0 }, "worker --healthcheck exits 0")
	require.Equal(t, "ready\n", out)

	w.stop(t)
	out, code = check()
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "worker: error: healthcheck: Get \"http://"+addr+"/readyz\"")
}
