package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestRun runs the example worker on real servers and sends it both of its
// operations through the client library, twice each: one effect per key.
func TestRun(t *testing.T) {
	env, err := testenv.Shared()
	require.NoError(t, err)
	ns := testenv.Namespace()
	cfg := config{nats: env.NATSURL, redis: env.RedisURL, topology: testenv.Topology(ns), keyPrefix: ns + ":"}
	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- run(ctx, cfg, func() { close(started) }) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	nc, err := testenv.ConnectNATS(env.NATSURL, "example-client")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc, &client.Config{Topology: cfg.topology, ResultTimeout: 20 * time.Second})
	require.NoError(t, err)

	key := client.NewKey()
	for range 2 {
		res, err := c.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_1", Amount: 500, Currency: "EUR"})
		require.NoError(t, err)
		require.Equal(t, "acme_1", res.Data.ChargeID, "the same charge, whatever the retries")
	}
	_, err = c.Charge(ctx, client.NewKey(), messages.ChargeRequest{AccountID: "acct_1", Amount: 2_000_000, Currency: "EUR"})
	var failed *client.FailedError
	require.ErrorAs(t, err, &failed)
	require.Equal(t, "amount_too_large", failed.Code)

	awardKey := client.NewKey()
	for range 2 {
		reply, err := c.Send(ctx, awardKey, award{Member: "m_1", Points: 50})
		require.NoError(t, err)
		var data struct{ Balance int64 }
		require.NoError(t, json.Unmarshal(reply.Result.Data, &data))
		require.EqualValues(t, 50, data.Balance, "awarded once")
	}
	_, err = c.Send(ctx, client.NewKey(), award{Member: "m_1", Points: 0})
	require.ErrorIs(t, err, client.ErrInvalidPayload)
}
