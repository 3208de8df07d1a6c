package processor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/cart"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// TestProcessor_NATSRestart crashes the NATS server in the middle of a run
// and starts it again on the same store: no command whose publish was
// acknowledged is lost, each is charged once, and RESULTS holds every
// outcome once the workers have reconnected.
func TestProcessor_NATSRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restarts a NATS server")
	}
	srv, err := testenv.StartNATS()
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	b := setup(t) // Redis, namespace and config; its NATS is not used below

	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(srv.URL, nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	for i := range 2 {
		cfg := b.cfg
		p, err := processor.New(connect("worker"+string(rune('a'+i))), b.rdb, b.defaultMux(), &cfg)
		require.NoError(t, err)
		require.NoError(t, p.Start(context.Background()))
		t.Cleanup(func() { _ = p.Stop(context.Background()) })
	}
	js, err := jetstream.New(connect("client"))
	require.NoError(t, err)

	// A client that retries a failed publish with the same key, as
	// pkg/client does.
	publish := func(key string, amount int64) {
		msg := nats.NewMsg(b.subjects.CommandFor(messages.KindPaymentCharge))
		msg.Data = mustJSON(t, messages.ChargeRequest{AccountID: "acct_r", Amount: amount, Currency: "EUR"})
		msg.Header.Set(messages.HeaderMsgID, key)
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := js.PublishMsg(ctx, msg)
			cancel()
			if err == nil {
				return
			}
			require.True(t, time.Now().Before(deadline), "publish of %s: %v", key, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	const n = 120
	keys := make([]string, n)
	for i := range n {
		keys[i] = newKey()
		publish(keys[i], int64(i+1))
		if i == n/2 {
			require.NoError(t, srv.Restart())
		}
	}

	// Every key ends with its outcome stored, once, and in RESULTS.
	eventuallyf(t, 60*time.Second, func() bool {
		for _, k := range keys {
			if state, _ := b.rdb.HGet(context.Background(), b.cfg.KeyPrefix+"idem:rec:{"+k+"}", "state").Result(); state != "completed" {
				return false
			}
		}
		return true
	}, "every key completed")
	require.Equal(t, n, b.charges(t))
	s, err := js.Stream(context.Background(), b.cfg.Topology.ResultStream)
	require.NoError(t, err)
	for _, k := range keys {
		require.Equal(t, 1, b.calls(t, k), "provider calls for %s", k)
		var m *jetstream.RawStreamMsg
		eventuallyf(t, 30*time.Second, func() bool {
			m, err = s.GetLastMsgForSubject(context.Background(), b.subjects.ResultFor(k))
			return !errors.Is(err, jetstream.ErrMsgNotFound)
		}, "result of %s in RESULTS", k)
		require.NoError(t, err)
		r, err := messages.DecodeResult(m.Data)
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, r.Status)
	}
}

// TestProcessor_RedisRestart kills Redis with SIGKILL in the middle of a run
// and starts it again from its append-only file (appendfsync always, the
// setting the README requires): every command completes, each charge is
// made once, no cart line is added twice, and every stored outcome survives.
func TestProcessor_RedisRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restarts a Redis server")
	}
	rs, err := testenv.StartRedisWith("--save", "", "--appendonly", "yes", "--appendfsync", "always")
	require.NoError(t, err)
	t.Cleanup(rs.Shutdown)
	rdb, err := testenv.ConnectRedis(rs.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })

	b := setup(t) // NATS, namespace and config; its Redis is not used below
	provider, err := sim.New(rdb, &sim.Config{KeyPrefix: b.cfg.KeyPrefix})
	require.NoError(t, err)
	mux := processor.NewMux()
	charge.Register(mux, provider)
	cart.Register(mux, b.cfg.KeyPrefix)
	for range 2 {
		cfg := b.cfg
		cfg.MaxTries = 100 // ride out the outage rather than dead-letter
		p, err := processor.New(b.nc, rdb, mux, &cfg)
		require.NoError(t, err)
		require.NoError(t, p.Start(context.Background()))
		t.Cleanup(func() { _ = p.Stop(context.Background()) })
	}

	const charges, adds = 120, 60
	keys := make([]string, 0, charges+adds)
	for i := range charges + adds {
		key := newKey()
		keys = append(keys, key)
		if i < charges {
			b.charge(t, key, int64(i+1))
		} else {
			b.publish(t, messages.KindCartAdd, key, messages.CartAddRequest{CartID: "cart_r", SKU: "SKU", Quantity: 1})
		}
		if i == (charges+adds)/2 {
			rs.Kill()
			require.NoError(t, rs.Start())
		}
	}

	ctx := context.Background()
	eventuallyf(t, 60*time.Second, func() bool {
		for _, k := range keys {
			if state, _ := rdb.HGet(ctx, b.cfg.KeyPrefix+"idem:rec:{"+k+"}", "state").Result(); state != "completed" {
				return false
			}
		}
		return true
	}, "every key completed")
	stored, err := rdb.HGetAll(ctx, layout.SimCharges(b.cfg.KeyPrefix)).Result()
	require.NoError(t, err)
	require.Len(t, stored, charges, "one charge per key")
	for _, k := range keys[:charges] {
		data, err := rdb.HGet(ctx, b.cfg.KeyPrefix+"idem:rec:{"+k+"}", "data").Result()
		require.NoError(t, err)
		require.JSONEq(t, stored[k], data, "the outcome names the provider's charge")
	}
	qty, err := rdb.HGet(ctx, layout.Cart(b.cfg.KeyPrefix, "cart_r"), "SKU").Int()
	require.NoError(t, err)
	require.Equal(t, adds, qty, "each add applied once")
}
