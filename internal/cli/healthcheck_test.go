package cli

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		if status == http.StatusOK {
			fmt.Fprintln(w, "ready")
		} else {
			fmt.Fprintln(w, "not ready: consumer gone")
		}
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := strings.Cut(addr, ":")

	var out bytes.Buffer
	for _, a := range []string{addr, ":" + port, "0.0.0.0:" + port} {
		out.Reset()
		require.NoError(t, Healthcheck(t.Context(), a, &out), a)
		require.Equal(t, "ready\n", out.String())
	}
	status = http.StatusServiceUnavailable
	err := Healthcheck(t.Context(), addr, &out)
	require.EqualError(t, err, "healthcheck: GET http://"+addr+"/readyz: 503 Service Unavailable: not ready: consumer gone")
	srv.Close()
	require.ErrorContains(t, Healthcheck(t.Context(), addr, &out), "connection refused")
}
