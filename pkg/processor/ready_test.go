package processor_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/messages"
)

// TestProcessor_Ready serves Ready on /readyz and takes the durable
// consumer away from a running worker: an operator deletes it and another
// consumer on the same subjects takes its place, so that the worker cannot
// create it again. /readyz says 503, naming the consumer, while NATS and
// Redis both still answer; once the other consumer is gone, the worker
// recreates its own, /readyz says 200 again and commands are processed.
func TestProcessor_Ready(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.startWorker(t, nil, nil)
	ctx := t.Context()
	srv, err := telemetry.Serve(ctx, "127.0.0.1:0", telemetry.NewRegistry(), p.Ready, testLogger(t), false)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close(context.Background()) })
	readyz := func() (int, string) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+srv.Addr()+"/readyz", http.NoBody)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	code, body := readyz()
	require.Equal(t, http.StatusOK, code, body)

	// A work-queue stream takes one consumer per subject: the squatter,
	// on the workers' subjects, keeps the worker from recreating its own.
	// The worker may win the race after a deletion; then delete again.
	top := b.cfg.Topology
	squatter := jetstream.ConsumerConfig{Durable: "squatter", FilterSubject: top.Subjects.CommandWildcard(), AckPolicy: jetstream.AckExplicitPolicy}
	eventuallyf(t, 20*time.Second, func() bool {
		_ = b.js.DeleteConsumer(ctx, top.CommandStream, top.Consumer)
		_, err := b.js.CreateConsumer(ctx, top.CommandStream, squatter)
		return err == nil
	}, "the squatter takes the consumer's place")
	var last string
	eventuallyf(t, 10*time.Second, func() bool {
		code, last = readyz()
		return code == http.StatusServiceUnavailable
	}, "/readyz 503 without the consumer (last: %s)", last)
	require.Contains(t, last, "consumer "+top.Consumer)
	require.NoError(t, b.rdb.Ping(ctx).Err(), "Redis answers all along")
	require.True(t, b.nc.IsConnected(), "NATS too")

	require.NoError(t, b.js.DeleteConsumer(ctx, top.CommandStream, "squatter"))
	eventuallyf(t, 15*time.Second, func() bool {
		code, last = readyz()
		return code == http.StatusOK
	}, "/readyz 200 once the worker has its consumer again (last: %s)", last)
	key := newKey()
	b.charge(t, key, 3)
	require.Equal(t, messages.StatusSucceeded, b.answers.waitAnswers(t, key, 1)[0].Status)
}
