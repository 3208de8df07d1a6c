package processor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHealthMonitor_BoundedRate: an outage is told once when it starts,
// again only every healthRepeatEvery while it lasts, and once when it
// ends; a server that keeps answering is never mentioned.
func TestHealthMonitor_BoundedRate(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := &Processor{log: logger{slog.New(slog.NewTextHandler(&buf, nil))}}
	h := newHealthMonitor(p)
	ctx := context.Background()
	refused := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	lines := func() []string {
		defer buf.Reset()
		return strings.FieldsFunc(buf.String(), func(r rune) bool { return r == '\n' })
	}

	t0 := time.Now()
	h.check(ctx, "NATS", nil, t0)
	h.check(ctx, "Redis", refused, t0)
	got := lines()
	require.Len(t, got, 1, "one warning when Redis stops answering, nothing about NATS")
	require.Contains(t, got[0], "level=WARN")
	require.Contains(t, got[0], "Redis unreachable")
	require.Contains(t, got[0], "connection refused")

	for s := 2 * time.Second; s < healthRepeatEvery; s += 2 * time.Second {
		h.check(ctx, "Redis", refused, t0.Add(s))
	}
	require.Empty(t, lines(), "no repeat inside %v", healthRepeatEvery)

	h.check(ctx, "Redis", refused, t0.Add(healthRepeatEvery))
	got = lines()
	require.Len(t, got, 1)
	require.Contains(t, got[0], "Redis still unreachable")
	require.Contains(t, got[0], "down_for=15s")

	h.check(ctx, "Redis", refused, t0.Add(healthRepeatEvery+2*time.Second))
	require.Empty(t, lines(), "the repeat clock restarts at each repeat")

	h.check(ctx, "Redis", nil, t0.Add(20*time.Second))
	got = lines()
	require.Len(t, got, 1)
	require.Contains(t, got[0], "level=INFO")
	require.Contains(t, got[0], "Redis answers again")
	require.Contains(t, got[0], "down_for=20s")

	h.check(ctx, "Redis", nil, t0.Add(22*time.Second))
	require.Empty(t, lines(), "nothing while it answers")
}

// TestConsumerCheck_Cached: Ready looks the consumer up at most every
// consumerCheckEvery, keeps a failed look as long as a good one, bounds
// each look, and a probe whose own request was cancelled still gets a
// real look.
func TestConsumerCheck_Cached(t *testing.T) {
	t.Parallel()
	var c consumerCheck
	looks := 0
	gone := errors.New("consumer gone")
	var answer error
	look := func(ctx context.Context) error {
		looks++
		deadline, ok := ctx.Deadline()
		require.True(t, ok, "each look is bounded")
		require.LessOrEqual(t, time.Until(deadline), time.Second)
		require.NoError(t, ctx.Err(), "a cancelled probe does not cancel the look")
		return answer
	}
	t0 := time.Now()
	require.NoError(t, c.check(context.Background(), t0, look))
	require.NoError(t, c.check(context.Background(), t0.Add(consumerCheckEvery/2), look))
	require.Equal(t, 1, looks, "fresh: no second look")

	answer = gone
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, c.check(cancelled, t0.Add(consumerCheckEvery), look), gone)
	require.ErrorIs(t, c.check(context.Background(), t0.Add(consumerCheckEvery*3/2), look), gone, "a failure is kept too")
	require.Equal(t, 2, looks)

	answer = nil
	require.NoError(t, c.check(context.Background(), t0.Add(2*consumerCheckEvery), look))
	require.Equal(t, 3, looks)
}
