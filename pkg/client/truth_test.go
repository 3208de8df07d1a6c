package client_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// TestClient_RefusalsNameTheirMessage holds contract v1.2's "refusals name
// their message": a client never takes another message's refusal of the
// same key for its own. Each case failed against the client that accepted
// any rejection of its key.
func TestClient_RefusalsNameTheirMessage(t *testing.T) {
	t.Parallel()

	// Issue 17 item 2: A's charge is slow; A re-sends inside the dedupe
	// window and waits; B publishes another body under the same key after
	// the window and is refused idempotency_key_reused. A's Send must end
	// with A's own outcome, not B's refusal (which tells A to use a new
	// key: a second charge).
	t.Run("AnotherBodysRefusalIsNotOurs", func(t *testing.T) {
		t.Parallel()
		env := loadtest.Setup(t, &loadtest.Options{
			Processor: processor.Config{DedupeWindow: 300 * time.Millisecond},
			Sim:       sim.Config{Latency: 2 * time.Second},
		})
		c := env.MustClient(t, nil)
		key := client.NewKey()

		first := make(chan error, 1)
		go func() { _, err := c.Charge(testCtx(t), key, charge(100)); first <- err }()
		time.Sleep(100 * time.Millisecond) // A's first message is in the worker
		again := make(chan *client.ChargeResult, 1)
		againErr := make(chan error, 1)
		go func() {
			res, err := c.Charge(testCtx(t), key, charge(100))
			again <- res
			againErr <- err
		}()
		time.Sleep(400 * time.Millisecond) // past the window
		_, err := c.Charge(testCtx(t), key, charge(999))
		require.ErrorIs(t, err, client.ErrKeyReused, "B is refused")

		require.NoError(t, <-againErr, "A's re-send gets A's outcome, not B's refusal")
		res := <-again
		require.Equal(t, messages.StatusSucceeded, res.Result.Status)
		require.EqualValues(t, 100, res.Data.Amount)
		require.NoError(t, <-first)
	})

	// Suspected in issue 17, confirmed: anyone who reads a command's
	// Reply-To can answer it. A refusal on the inbox that carries another
	// message's fingerprint is not this Send's answer.
	t.Run("AForgedRefusalOnTheInboxIsIgnored", func(t *testing.T) {
		t.Parallel()
		env := loadtest.Setup(t, &loadtest.Options{Sim: sim.Config{Latency: time.Second}})
		c := env.MustClient(t, nil)
		key := client.NewKey()
		// An eavesdropper on the command subjects answers first.
		spy, err := testenv.ConnectNATS(env.NATSURL, "spy")
		require.NoError(t, err)
		t.Cleanup(spy.Close)
		sub, err := spy.Subscribe(env.Config.Topology.Subjects.CommandWildcard(), func(m *nats.Msg) {
			forged := messages.Result{Key: key, Kind: messages.KindPaymentCharge, Status: messages.StatusRejected,
				Code: messages.CodeKeyReused, Fingerprint: "0000000000000000000000000000000000000000000000000000000000000000"}
			_ = spy.Publish(m.Header.Get(messages.HeaderReplyTo), forged.Marshal())
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		require.NoError(t, spy.Flush())

		res, err := c.Charge(testCtx(t), key, charge(250))
		require.NoError(t, err, "the forged refusal is not taken")
		require.Equal(t, messages.StatusSucceeded, res.Result.Status)
	})

	// Suspected in issue 17, confirmed: a refusal or dead-letter notice
	// published while the client reconnects is lost (RESULTS keeps only
	// outcomes), and Send ended ErrResultTimeout. It learns it from the
	// workers' lookup service instead.
	t.Run("ADeadLetterMissedWhileDisconnectedIsLearnt", func(t *testing.T) {
		t.Parallel()
		env := loadtest.Setup(t, &loadtest.Options{
			Processor: processor.Config{MaxTries: 1, Retry: &processor.Policy{}},
			Sim:       sim.Config{FailureRate: 1, Latency: 500 * time.Millisecond},
		})
		proxy, err := testenv.StartProxy(hostOf(t, env.NATSURL))
		require.NoError(t, err)
		t.Cleanup(proxy.Close)
		nc, err := nats.Connect("nats://"+proxy.Addr(), nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		cfg := env.ClientConfig()
		cfg.ResultTimeout = 8 * time.Second
		c, err := client.New(nc, cfg)
		require.NoError(t, err)

		key := client.NewKey()
		// A watcher on a connection of its own sees the command arrive and
		// its dead-letter notice leave.
		watch, err := testenv.ConnectNATS(env.NATSURL, "watch")
		require.NoError(t, err)
		t.Cleanup(watch.Close)
		sent, notices := make(chan *nats.Msg, 4), make(chan *nats.Msg, 4)
		_, err = watch.ChanSubscribe(env.Config.Topology.Subjects.CommandWildcard(), sent)
		require.NoError(t, err)
		_, err = watch.ChanSubscribe(env.Config.Topology.Subjects.RejectedFor(key), notices)
		require.NoError(t, err)
		require.NoError(t, watch.Flush())

		done := make(chan error, 1)
		go func() { _, err := c.Charge(testCtx(t), key, charge(300)); done <- err }()
		// Cut the client off while the worker dead-letters the command, and
		// let it back once the notice is gone.
		<-sent
		proxy.Down()
		select {
		case <-notices:
		case <-time.After(10 * time.Second):
			t.Fatal("no dead-letter notice")
		}
		require.NoError(t, proxy.Up())

		err = <-done
		require.ErrorIs(t, err, client.ErrDeadLettered)
		require.NotErrorIs(t, err, client.ErrResultTimeout)
	})
}

func hostOf(t *testing.T, natsURL string) string {
	t.Helper()
	u, err := url.Parse(natsURL)
	require.NoError(t, err)
	return u.Host
}
