package main

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// TestWorker_RedisDeployments runs the worker against a Redis Cluster and
// against a Sentinel deployment, each named by REDIS_URL alone: it starts,
// says where it is, and /readyz answers 200. On the cluster it says that
// it does not pipeline (internal/autopipe is not safe above a cluster
// client's routing); on the Sentinel master it charges end to end.
func TestWorker_RedisDeployments(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a Redis Cluster and a Sentinel deployment")
	}
	ready := func(t *testing.T, w *workerProc) {
		t.Helper()
		addr := regexp.MustCompile(`serving /metrics, /healthz, /readyz" addr=(\S+)`).FindStringSubmatch(w.out.String())
		require.NotNil(t, addr, "the worker logs where it serves:\n%s", w.out.String())
		eventually(t, 10*time.Second, func() bool {
			return getStatus(t, "http://"+addr[1]+"/readyz") == http.StatusOK
		}, "/readyz 200")
	}
	t.Run("Cluster", func(t *testing.T) {
		t.Parallel()
		c, err := testenv.StartRedisCluster(3)
		require.NoError(t, err)
		t.Cleanup(c.Shutdown)
		d := newDeployment(t, "METRICS_ADDR=127.0.0.1:0")
		w := d.start(t, "REDIS_URL="+c.URL())
		require.Contains(t, w.out.String(), `redis="cluster via `+c.Addrs()[0])
		require.Contains(t, w.out.String(), "Redis Cluster: --redis-pipeline (REDIS_PIPELINE) does not apply")

		ready(t, w)
	})
	t.Run("Sentinel", func(t *testing.T) {
		t.Parallel()
		s, err := testenv.StartSentinel()
		require.NoError(t, err)
		t.Cleanup(s.Shutdown)
		d := newDeployment(t, "METRICS_ADDR=127.0.0.1:0")
		w := d.start(t, "REDIS_URL="+s.URL())
		require.Contains(t, w.out.String(), `redis="master `+s.MasterName()+" via sentinels ")
		require.NotContains(t, w.out.String(), "does not apply")
		ready(t, w)

		env, err := testenv.Shared()
		require.NoError(t, err)
		nc, err := testenv.ConnectNATS(env.NATSURL, t.Name())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		cl, err := client.New(nc, &client.Config{Topology: testenv.Topology(d.ns)})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		res, err := cl.Charge(ctx, client.NewKey(), messages.ChargeRequest{AccountID: "acct_sentinel", Amount: 700, Currency: "EUR"})
		require.NoError(t, err)
		require.NotEmpty(t, res.Data.ChargeID)
	})
}

// getStatus returns the status of a GET of url, 0 when it got no answer.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
