package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// TestRun_DLQ dead-letters a charge on a provider that is down, then lists,
// shows, replays (refused inside the duplicate window, answered once the
// provider is back) and purges it with the producer, as an operator would.
func TestRun_DLQ(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1, Processor: processor.Config{
		MaxTries: 1, DedupeWindow: 1500 * time.Millisecond,
		Retry: &processor.Policy{Transient: processor.Backoff{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond,
			MaxElapsedTime: time.Second}},
	}})
	down, err := env.StartWorker(&sim.Config{FailureRate: 1})
	require.NoError(t, err)
	c := env.MustClient(t, nil)
	key := client.NewKey()
	_, err = c.Charge(context.Background(), key, messages.ChargeRequest{AccountID: "acct_dlq", Amount: 700, Currency: "EUR"})
	require.ErrorIs(t, err, client.ErrDeadLettered)
	cli := cliEnv(env)

	r := runCLI(t, cli, "dlq", "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, key)
	require.Contains(t, r.stdout, "payment.charge")
	require.Contains(t, r.stdout, "none")

	r = runCLI(t, cli, "--json", "dlq", "show", key)
	require.Equal(t, 0, r.code, r.stderr)
	var shown []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &shown))
	require.Len(t, shown, 1)
	require.Equal(t, key, shown[0]["key"])
	require.Contains(t, shown[0]["reason"], "provider temporarily unavailable")

	r = runCLI(t, cli, "dlq", "replay", key)
	require.Equal(t, exitNoAnswer, r.code, "refused inside the duplicate window: %s %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "duplicate window")
	require.Contains(t, r.stderr, "replay after")

	require.NoError(t, down.Stop(context.Background()))
	_, err = env.StartWorker(nil) // the provider is back
	require.NoError(t, err)
	time.Sleep(1600 * time.Millisecond) // past the duplicate window, on the server's clock
	r = runCLI(t, cli, "dlq", "replay", key)
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "succeeded")
	res, err := c.Status(context.Background(), key)
	require.NoError(t, err)
	require.Equal(t, messages.StatusSucceeded, res.Status)

	r = runCLI(t, cli, "dlq", "purge", key)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "purged 1")
	r = runCLI(t, cli, "dlq", "show", key)
	require.Equal(t, exitNoAnswer, r.code)
	require.Contains(t, r.stderr, "no dead letter")
	r = runCLI(t, cli, "dlq", "show", "not-a-key")
	require.Equal(t, exitUsage, r.code)
}
