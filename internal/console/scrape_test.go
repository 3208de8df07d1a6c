package console

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestQuantile(t *testing.T) {
	t.Parallel()
	// 100 observations: 50 up to 1ms, 40 in (1ms, 2ms], 10 in (2ms, 4ms].
	b := map[float64]float64{0.001: 50, 0.002: 90, 0.004: 100, math.Inf(1): 100}
	require.Equal(t, time.Millisecond, quantile(0.5, b))
	require.Equal(t, 3800*time.Microsecond, quantile(0.99, b), "interpolated in (2ms, 4ms]")
	require.Equal(t, 4*time.Millisecond, quantile(0.99, map[float64]float64{0.004: 0, math.Inf(1): 10}), "all above the last bound")
}

// TestScraper_Rates scrapes two workers' /metrics twice: the rates are the
// increase over the interval, summed over the workers, a restarted
// worker's counters counted from zero, and the quantiles those of the
// interval's observations only.
func TestScraper_Rates(t *testing.T) {
	t.Parallel()
	var round atomic.Int32
	serve := func(series func(r int32) string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, series(round.Load()))
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	hist := func(le1, le2, count float64) string {
		return fmt.Sprintf(`# TYPE idempay_command_duration_seconds histogram
idempay_command_duration_seconds_bucket{kind="payment.charge",le="0.001"} %v
idempay_command_duration_seconds_bucket{kind="payment.charge",le="0.01"} %v
idempay_command_duration_seconds_bucket{kind="payment.charge",le="+Inf"} %v
idempay_command_duration_seconds_sum{kind="payment.charge"} 1
idempay_command_duration_seconds_count{kind="payment.charge"} %v
`, le1, le2, count, count)
	}
	a := serve(func(r int32) string {
		n := []float64{100, 300}[r]
		return fmt.Sprintf(`# TYPE idempay_commands_total counter
idempay_commands_total{code="",kind="payment.charge",replayed="false",status="succeeded"} %v
idempay_commands_total{code="",kind="payment.charge",replayed="true",status="succeeded"} 10
idempay_commands_total{code="card_declined",kind="payment.charge",replayed="false",status="failed"} %v
# TYPE idempay_in_flight gauge
idempay_in_flight 3
# TYPE idempay_build_info gauge
idempay_build_info{goversion="go1.26",version="v1.2.0"} 1
`, n, n/10) + hist([]float64{0, 0}[r], []float64{100, 300}[r], []float64{100, 300}[r])
	})
	b := serve(func(r int32) string { // restarted between the two readings
		n := []float64{1000, 50}[r]
		return fmt.Sprintf(`# TYPE idempay_commands_total counter
idempay_commands_total{code="",kind="payment.charge",replayed="false",status="succeeded"} %v
`, n) + hist([]float64{1000, 50}[r], []float64{1000, 50}[r], []float64{1000, 50}[r])
	})
	s := NewScraper([]string{a.URL, b.URL}, time.Second)
	require.False(t, s.Rates().At.After(time.Time{}), "nothing read yet")
	s.scrapeAll(context.Background())
	first := s.Rates()
	require.True(t, first.Configured)
	require.Zero(t, first.Window, "one reading: no rate yet")
	require.Len(t, first.Workers, 2)
	round.Store(1)
	s.mu.Lock()
	s.last.at = s.last.at.Add(-2 * time.Second) // the interval, as if two seconds had passed
	s.mu.Unlock()
	s.scrapeAll(context.Background())
	r := s.Rates()
	require.InDelta(t, 2.0, r.Window.Seconds(), 0.1)
	require.Len(t, r.Kinds, 1)
	k := r.Kinds[0]
	secs := r.Window.Seconds()
	require.InDelta(t, (200+50)/secs, k.Succeeded, 0.01, "200 more on a, 50 since b restarted")
	require.InDelta(t, 20/secs, k.Failed, 0.01)
	require.Zero(t, k.Replayed)
	require.True(t, k.Observed)
	// The interval's 250 observations: b's 50 up to 1ms, a's 200 in
	// (1ms, 10ms]: the 125th is 75/200 into that bucket, the 247.5th
	// 197.5/200 into it.
	require.Equal(t, 4375*time.Microsecond, k.P50)
	require.InDelta(t, float64(9887500*time.Nanosecond), float64(k.P99), float64(time.Microsecond))
	require.InDelta(t, 3.0, r.InFlight, 0)
	require.Equal(t, "v1.2.0", r.Workers[0].Version+r.Workers[1].Version)
}
