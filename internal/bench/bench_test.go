package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and a parenthesis, as proc(5) allows.
	stat := []byte("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1234 0 0")
	d, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, ticks(300), d)

	_, err = parseStatCPU([]byte("4242 (x) S 1"))
	require.Error(t, err)
}

func TestParseVmRSS(t *testing.T) {
	status := []byte("Name:\tworker\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t7\n")
	require.Equal(t, int64(2048*1024), parseVmRSS(status))
	require.Zero(t, parseVmRSS([]byte("Name:\tkthread\n")))
}

func TestReadProc_Self(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	p, err := readProc(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, p.RSS)
	require.Positive(t, clkTck())
}

func TestAuxvValue(t *testing.T) {
	var auxv []byte
	for _, v := range []uint64{6, 4096, 17, 100, 0, 0} {
		auxv = binary.NativeEndian.AppendUint64(auxv, v)
	}
	v, ok := auxvValue(auxv, 17)
	require.True(t, ok)
	require.Equal(t, uint64(100), v)
	_, ok = auxvValue(auxv, 99)
	require.False(t, ok)
}

func TestRedisInfo(t *testing.T) {
	cs := "# Commandstats\r\ncmdstat_evalsha:calls=30,usec=300,usec_per_call=10.00\r\n" +
		"cmdstat_info:calls=7,usec=70\r\ncmdstat_set:calls=12,usec=24,rejected_calls=0\r\n"
	require.Equal(t, int64(42), sumCommandCalls(cs))
	st := "# Stats\r\ntotal_connections_received:3\r\ntotal_reads_processed:1234\r\n"
	require.Equal(t, int64(1234), infoInt(st, "total_reads_processed"))
	require.Zero(t, infoInt(st, "missing"))
}

func TestSpreadOf(t *testing.T) {
	require.Equal(t, Spread{Min: 1, Median: 2, Max: 5}, spreadOf([]float64{5, 1, 2}))
	require.Equal(t, Spread{Min: 1, Median: 2.5, Max: 4}, spreadOf([]float64{4, 1, 2, 3}))
	require.Equal(t, Spread{}, spreadOf(nil))
}

// TestCommandBody: the preload's bodies are what CONTRACT.md describes,
// with no field a worker would refuse.
func TestCommandBody(t *testing.T) {
	for i := range 3000 {
		var charge struct {
			AccountID   string `json:"account_id"`
			Amount      int64  `json:"amount"`
			Currency    string `json:"currency"`
			Description string `json:"description"`
		}
		dec := json.NewDecoder(bytes.NewReader(commandBody(kindCharge, i)))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&charge))
		require.Regexp(t, `^[A-Za-z0-9_.-]{1,64}$`, charge.AccountID)
		require.True(t, charge.Amount >= 1 && charge.Amount <= 1e12, charge.Amount)
		require.Equal(t, "EUR", charge.Currency)

		var cart struct {
			CartID   string `json:"cart_id"`
			SKU      string `json:"sku"`
			Quantity int64  `json:"quantity"`
		}
		dec = json.NewDecoder(bytes.NewReader(commandBody(kindCart, i)))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&cart))
		require.Regexp(t, `^[A-Za-z0-9_.-]{1,64}$`, cart.CartID)
		require.Regexp(t, `^[A-Za-z0-9_.-]{1,64}$`, cart.SKU)
		require.True(t, cart.Quantity >= 1 && cart.Quantity <= 1000, cart.Quantity)
	}
}

func TestConfig_Validate(t *testing.T) {
	require.NoError(t, (&Config{}).WithDefaults().Validate())
	require.ErrorContains(t, (&Config{Count: 1}).WithDefaults().Validate(), "count")
	require.ErrorContains(t, (&Config{Rounds: -1}).WithDefaults().Validate(), "rounds")
	require.NoError(t, (&SoakConfig{}).WithDefaults().Validate())
	require.ErrorContains(t, (&SoakConfig{Duration: time.Second, Interval: time.Minute}).WithDefaults().Validate(), "interval")
}

func TestReport_LastLine(t *testing.T) {
	one := 1.0
	r := &Report{Rounds: 3, HeadlineInFlight: 64, Ratio: Spread{Min: 0.07, Median: 0.0789, Max: 0.09},
		Results: []Result{{Name: "ceiling @64 (round 1)", Commands: 10, PerSecond: 50000, Ratio: 1, RedisCommands: &one}}}
	var out bytes.Buffer
	r.WriteTable(&out)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	require.Equal(t, "throughput_ratio=0.0789", lines[len(lines)-1])
	require.Contains(t, lines[len(lines)-2], "at 64 in flight")
}

// TestRun runs every scenario with a handful of commands, under the race
// detector in `make test`: it checks that the harness completes and reports
// every row, never how fast anything was.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and worker processes for every scenario")
	}
	var progress bytes.Buffer
	rep, err := Run(context.Background(), &Config{Count: 100, Rounds: 1, Progress: &progress})
	require.NoError(t, err, progress.String())
	require.Len(t, rep.Results, 18) // 3 headline rows (ceiling, floor, payment.charge), 9 drains, 4 end-to-end rows, 2 through the gateway (no auth, API key)
	require.Equal(t, "floor @128 (round 1)", rep.Results[1].Name)
	for _, r := range rep.Results {
		require.Equal(t, 100, r.Commands, r.Name)
		require.Positive(t, r.PerSecond, r.Name)
	}
	var out bytes.Buffer
	rep.WriteTable(&out)
	require.Regexp(t, `\nthroughput_ratio=[0-9.]+\n$`, out.String())
	require.Regexp(t, `\nfloor_ratio=[0-9.]+\nidempay_over_floor=[0-9.]+\n`, out.String())
	require.Regexp(t, `\ngateway_ratio=[0-9.]+\n`, out.String())
	require.Regexp(t, `\ngateway_auth_ratio=[0-9.]+\n`, out.String())
}

// TestGateway runs the gateway triple once with a handful of commands: the
// harness completes, the three rows are there (pkg/client, the gateway
// without authentication, with an API key), and the last lines are the
// ratios.
func TestGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers, a worker and a gateway process")
	}
	var progress bytes.Buffer
	rep, err := Gateway(context.Background(), &GatewayConfig{Count: 100, Rounds: 1, Progress: &progress})
	require.NoError(t, err, progress.String())
	require.Len(t, rep.Results, 3)
	for _, r := range rep.Results {
		require.Equal(t, 100, r.Commands, r.Name)
		require.Empty(t, slices.DeleteFunc(slices.Clone(r.Notes), func(n string) bool { return !strings.HasPrefix(n, "NOT OK") }), r.Name)
	}
	require.NotNil(t, rep.Results[1].CPU.Gateway, "the gateway's CPU is measured")
	require.NotNil(t, rep.Results[2].CPU.Gateway)
	require.Contains(t, rep.Results[2].Name, "API key")
	var out bytes.Buffer
	rep.WriteTable(&out)
	require.Regexp(t, `\ngateway_auth_ratio=[0-9.]+\n.*\ngateway_ratio=[0-9.]+\n$`, out.String())
}

func TestParseMachineBusy(t *testing.T) {
	d, err := parseMachineBusy([]byte("cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4\n"))
	require.NoError(t, err)
	require.Equal(t, ticks(161), d)
	_, err = parseMachineBusy([]byte("intr 1 2 3"))
	require.Error(t, err)
}

// TestGoroutines: the worker's /metrics, once it serves them, are read;
// until then (or on any error) the figure is simply absent.
func TestGoroutines(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("# TYPE go_goroutines gauge\ngo_goroutines 97\n"))
	}))
	defer srv.Close()
	w := testenv.NewProcessWorker(testenv.ProcessOptions{MetricsAddr: strings.TrimPrefix(srv.URL, "http://")})
	n, ok := goroutines(context.Background(), w)
	require.True(t, ok)
	require.Equal(t, 97, n)

	port, err := testenv.FreePort() // nothing listens there
	require.NoError(t, err)
	_, ok = goroutines(context.Background(), testenv.NewProcessWorker(testenv.ProcessOptions{MetricsAddr: "127.0.0.1:" + strconv.Itoa(port)}))
	require.False(t, ok)
	_, ok = goroutines(context.Background(), testenv.NewProcessWorker(testenv.ProcessOptions{}))
	require.False(t, ok)
}
