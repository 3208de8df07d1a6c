package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestServe_Endpoints: /healthz, /readyz (200 or 503 with the reason) and
// /metrics always; /debug/pprof/ only when asked for.
func TestServe_Endpoints(t *testing.T) {
	t.Parallel()
	var notReady error
	ready := func(context.Context) error { return notReady }
	get := func(t *testing.T, url string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, withPprof := range []bool{false, true} {
		srv, err := Serve(t.Context(), "127.0.0.1:0", NewRegistry(), ready, slog.New(slog.DiscardHandler), withPprof)
		require.NoError(t, err)
		base := "http://" + srv.Addr()
		notReady = nil
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			require.Equal(t, http.StatusOK, get(t, base+path), path)
		}
		notReady = errors.New("consumer gone")
		require.Equal(t, http.StatusServiceUnavailable, get(t, base+"/readyz"))
		want := http.StatusNotFound
		if withPprof {
			want = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
			require.Equal(t, want, get(t, base+path), "pprof %t: %s", withPprof, path)
		}
		srv.Close(context.Background())
	}
}
