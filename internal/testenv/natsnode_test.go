package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestNATSNode: an acknowledged message survives a SIGKILL and a SIGTERM of
// the server, which comes back on the same port with the same store.
func TestNATSNode(t *testing.T) {
	t.Parallel()
	n, err := StartNATSNode(nil)
	require.NoError(t, err)
	t.Cleanup(n.Shutdown)
	require.True(t, n.SyncAlways(), "the pinned server supports sync_interval: always")
	pid := n.Pid()
	require.Positive(t, pid)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := nats.Connect(n.URL, nats.Timeout(2*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)

	for i, restart := range []func() error{
		func() error { n.Kill(); return nil },
		n.Stop,
	} {
		publishUntilAcked(ctx, t, js, "s.x", "m"+string(rune('0'+i)))
		require.NoError(t, restart())
		require.False(t, n.Running())
		require.NoError(t, n.Start())
		require.NotEqual(t, pid, n.Pid())
		pid = n.Pid()
		s, err := js.Stream(ctx, "S")
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), info.State.Msgs, "the acknowledged messages are still there after restart %d", i)
	}
}
