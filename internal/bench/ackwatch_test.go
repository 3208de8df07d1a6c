package bench

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
)

// TestAckWatch_DrainBeforeTheFirstPoll: a drain that ends before the
// watch's first poll (seen in a fresh clone's make test: "cart.add @16: 0
// is not positive") still has a span, from the watch's start, so its rate
// is positive.
func TestAckWatch_DrainBeforeTheFirstPoll(t *testing.T) {
	t.Parallel()
	d, err := testenv.StartDeployment(&testenv.DeploymentOptions{Name: "ackwatch"})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	ctx := context.Background()
	_, err = d.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ACKWATCH", Subjects: []string{"ackwatch.>"}})
	require.NoError(t, err)
	// The stream is empty: every one of the 100 commands the watch waits
	// for is gone by its first poll, as after a drain faster than a poll.
	w, err := watchAcks(ctx, d.JS, "ACKWATCH", 100)
	require.NoError(t, err)
	defer w.stop()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, w.wait(wctx, time.Second))
	n, span := w.span()
	require.Equal(t, 100, n)
	require.Positive(t, span, "a drain done before the first poll has no span")
	require.Positive(t, rate(n, span))
}
