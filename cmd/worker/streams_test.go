package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
)

// The streams are the operator's once they exist: a limit edited on
// DEADLETTER (nats stream edit DEADLETTER --max-age 7d) survives the next
// worker start, which sets only what the guarantees need. Without provisioning and
// without streams the worker fails at start, naming the stream and the
// setting.
func TestWorker_Streams(t *testing.T) {
	t.Parallel()

	t.Run("AnOperatorsEditSurvivesARestart", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, "DEADLETTER_MAX_AGE=48h", "STREAM_REPLICAS=1")
		d.start(t).stop(t)
		ctx := context.Background()
		s, err := d.js.Stream(ctx, d.ns+"_DEADLETTER")
		require.NoError(t, err)
		sc := s.CachedInfo().Config
		require.Equal(t, 48*time.Hour, sc.MaxAge, "DEADLETTER_MAX_AGE made it")
		require.EqualValues(t, 1<<30, sc.MaxBytes, "the default byte limit")
		sc.MaxAge = 7 * 24 * time.Hour
		_, err = d.js.UpdateStream(ctx, sc)
		require.NoError(t, err)

		d.start(t).stop(t)
		s, err = d.js.Stream(ctx, d.ns+"_DEADLETTER")
		require.NoError(t, err)
		require.Equal(t, 7*24*time.Hour, s.CachedInfo().Config.MaxAge)
	})

	// A worker started again with another DEDUPE_WINDOW and RESULT_TTL, on
	// the streams an earlier one made: it updates what they mean and runs,
	// as the contract's "create or update" says; the operator's DEADLETTER
	// age stays.
	t.Run("NewSettingsUpdateTheStreams", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t, "DEADLETTER_MAX_AGE=48h")
		d.start(t).stop(t)
		got := d.listen(t)
		d.start(t, "DEDUPE_WINDOW=5s", "RESULT_TTL=2h")
		ctx := context.Background()
		for stream, check := range map[string]func(jetstream.StreamConfig){
			"_COMMANDS":   func(sc jetstream.StreamConfig) { require.Equal(t, 5*time.Second, sc.Duplicates) },
			"_RESULTS":    func(sc jetstream.StreamConfig) { require.Equal(t, 2*time.Hour, sc.MaxAge) },
			"_DEADLETTER": func(sc jetstream.StreamConfig) { require.Equal(t, 48*time.Hour, sc.MaxAge) },
		} {
			s, err := d.js.Stream(ctx, d.ns+stream)
			require.NoError(t, err)
			check(s.CachedInfo().Config)
		}
		key := newKey()
		d.publish(t, messages.KindPaymentCharge, key, messages.ChargeRequest{AccountID: "acct_st", Amount: 10, Currency: "EUR"})
		require.Equal(t, messages.StatusSucceeded, got.wait(t, key, 1)[0].Status)
	})

	t.Run("NoProvisionWithoutStreamsFails", func(t *testing.T) {
		t.Parallel()
		d := newDeployment(t)
		w := d.spawn(t, true, "PROVISION=false")
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Fatal("the worker did not exit")
		}
		require.Error(t, w.err)
		out := w.out.String()
		require.Contains(t, out, "stream "+d.ns+"_COMMANDS does not exist")
		require.Contains(t, out, "--provision=false, PROVISION=false")
		require.NotContains(t, out, "Config.", "the command line's words, not the engine's field")
		require.Contains(t, out, "docs/operations.md")
	})
}
