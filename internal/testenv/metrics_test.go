package testenv

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestScrapeMetrics(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\n" +
			"go_goroutines_total_not_this 7\n" +
			"process_resident_memory_bytes 1.2e+07\n" +
			"idempay_dead_letters_total{kind=\"payment.charge\",effect=\"none\"} 2\n" +
			"idempay_dead_letters_total{kind=\"cart.add\",effect=\"unknown\"} 3\n"))
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	m, err := ScrapeMetrics(t.Context(), addr, "go_goroutines", "process_resident_memory_bytes", "idempay_dead_letters_total", "go_threads")
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"go_goroutines": 42, "process_resident_memory_bytes": 1.2e7, "idempay_dead_letters_total": 5}, m,
		"a name's label sets are summed, a longer name sharing its prefix is not it, an absent name is absent")

	port, err := FreePort() // nothing listens there
	require.NoError(t, err)
	_, err = ScrapeMetrics(t.Context(), "127.0.0.1:"+strconv.Itoa(port), "go_goroutines")
	require.Error(t, err)
}

// TestFailureLines: a nats-server child's errors and failure warnings
// reach the test's output (the cause behind an API error such as "error
// creating store for stream"), its other lines do not, however the writes
// cut them.
func TestFailureLines(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	f := &failureLines{out: &out, prefix: "nats: "}
	for _, chunk := range []string{
		"[1] [INF] Starting nats-server\n[1] [ERR] JetStream failed to cre",
		"ate stream: open /x: too many open files\n[1] [WRN] Healthcheck failed\n",
		"[1] [WRN] Slow consumer\n[1] [FTL] bye\n",
	} {
		n, err := f.Write([]byte(chunk))
		require.NoError(t, err)
		require.Equal(t, len(chunk), n)
	}
	require.Equal(t, "nats: [1] [ERR] JetStream failed to create stream: open /x: too many open files\n"+
		"nats: [1] [WRN] Healthcheck failed\nnats: [1] [FTL] bye\n", out.String())
}
