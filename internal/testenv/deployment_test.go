package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestPoll(t *testing.T) {
	t.Parallel()
	t.Run("UntilNil", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		err := Poll(t.Context(), time.Millisecond, func(context.Context) error {
			if n.Add(1) < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, int32(3), n.Load())
	})
	t.Run("TimeoutSaysWhatWasMissing", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		err := Poll(ctx, time.Millisecond, func(context.Context) error { return errors.New("the queue holds 3") })
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "the queue holds 3")
	})
	t.Run("StopPolling", func(t *testing.T) {
		t.Parallel()
		exited := errors.New("server exited")
		var n atomic.Int32
		err := Poll(t.Context(), time.Millisecond, func(context.Context) error { n.Add(1); return StopPolling(exited) })
		require.ErrorIs(t, err, exited)
		require.Equal(t, int32(1), n.Load())
	})
	t.Run("PollUntil", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		require.NoError(t, PollUntil(t.Context(), time.Millisecond, func() (bool, error) { return n.Add(1) == 2, nil }))
		boom := errors.New("boom")
		require.ErrorIs(t, PollUntil(t.Context(), time.Millisecond, func() (bool, error) { return false, boom }), boom)
	})
}

// fakeEngine counts its starts and stops.
type fakeEngine struct{ started, stopped *atomic.Int32 }

func (e fakeEngine) Start(context.Context) error { e.started.Add(1); return nil }
func (e fakeEngine) Stop(context.Context) error  { e.stopped.Add(1); return nil }

func TestEngineWorker(t *testing.T) {
	t.Parallel()
	var made, started, stopped atomic.Int32
	w := NewEngineWorker("w1", func() (Engine, error) {
		made.Add(1)
		return fakeEngine{started: &started, stopped: &stopped}, nil
	})
	ctx := t.Context()
	require.False(t, w.Running())
	require.NoError(t, w.Start(ctx))
	require.Error(t, w.Start(ctx), "a running worker is not started twice")
	require.NoError(t, w.Restart(ctx))
	require.True(t, w.Running())
	require.Equal(t, 2, w.Starts())
	require.Equal(t, int32(2), made.Load(), "a restart makes a new engine")
	require.NoError(t, w.Stop(ctx))
	require.NoError(t, w.Stop(ctx), "stopping a stopped worker does nothing")
	require.Equal(t, int32(2), started.Load())
	require.Equal(t, int32(2), stopped.Load())
	require.ErrorIs(t, w.Kill(), ErrUnsupported)
	require.ErrorIs(t, w.Pause(), ErrUnsupported)
	require.ErrorIs(t, w.Resume(), ErrUnsupported)
}

func TestProcessWorker(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc to see a process's state")
	}
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	// A program like idempay's: it logs a line once up, exits 0 on SIGTERM.
	script := `trap 'echo draining; exit 0' TERM; echo "run $$"; sleep 0.3; echo up; while :; do sleep 0.05; done`
	var ready atomic.Int32
	log := filepath.Join(t.TempDir(), "sleeper.log")
	w := NewProcessWorker(ProcessOptions{Name: "sleeper", Bin: sh, Args: []string{"-c", script},
		Log: log, StopGrace: 5 * time.Second, ReadyLine: "up",
		Ready: func(context.Context) error { ready.Add(1); return nil }})
	ctx := t.Context()
	require.NoError(t, w.Start(ctx))
	t.Cleanup(func() { _ = w.Kill() })
	require.Equal(t, int32(1), ready.Load(), "Ready is polled once ReadyLine is logged")
	require.True(t, w.Running())
	exited, _ := w.Exited()
	require.False(t, exited)

	require.NoError(t, w.Pause())
	require.NoError(t, PollUntil(ctx, 5*time.Millisecond, func() (bool, error) { return w.State() == "T", nil }))
	require.NoError(t, w.Resume())
	require.NoError(t, PollUntil(ctx, 5*time.Millisecond, func() (bool, error) { return w.State() != "T", nil }))

	require.NoError(t, w.Kill())
	require.False(t, w.Running())
	require.False(t, w.Crashed(), "a kill through the worker is no crash")
	require.Error(t, w.Pause(), "a dead process cannot be paused")
	exited, exitErr := w.Exited()
	require.True(t, exited)
	sig, ok := ExitSignal(exitErr)
	require.True(t, ok, "killed: %v", exitErr)
	require.Equal(t, syscall.SIGKILL, sig)

	// A restart waits for this run's "up", not the last run's.
	start := time.Now()
	require.NoError(t, w.Restart(ctx))
	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "Start took the previous run's ready line")
	require.True(t, w.Running())
	require.NoError(t, w.Pause())
	require.NoError(t, w.Stop(ctx), "a paused program is resumed to act on SIGTERM, and exits 0")
	require.False(t, w.Running())
	exited, exitErr = w.Exited()
	require.True(t, exited)
	require.NoError(t, exitErr)
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, 2, strings.Count(string(b), "run "), "both runs append to the one log:\n%s", b)

	// A program that does not exit 0 on SIGTERM is reported.
	bad := NewProcessWorker(ProcessOptions{Name: "sleep", Bin: "sleep", Args: []string{"60"},
		Log: filepath.Join(t.TempDir(), "sleep.log"), StopGrace: 5 * time.Second})
	require.NoError(t, bad.Start(ctx))
	require.ErrorContains(t, bad.Stop(ctx), "want exit status 0")
}

func TestDeployment_WaitDrained(t *testing.T) {
	t.Parallel()
	d, err := StartDeployment(&DeploymentOptions{Name: t.Name()})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	ctx := t.Context()
	top := Topology(Namespace())
	s, err := d.JS.CreateStream(ctx, jetstream.StreamConfig{Name: top.CommandStream, Subjects: []string{top.Subjects.CommandWildcard()},
		Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: top.Consumer, AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	require.NoError(t, d.WaitDrained(ctx, top))

	_, err = d.JS.Publish(ctx, top.Subjects.CommandFor("payment.charge"), []byte("{}"))
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = d.WaitDrained(short, top)
	cancel()
	require.ErrorContains(t, err, "holds 1 messages")

	batch, err := cons.Fetch(1)
	require.NoError(t, err)
	for m := range batch.Messages() {
		require.NoError(t, m.DoubleAck(ctx))
	}
	require.NoError(t, d.WaitDrained(ctx, top))
	d.DeleteStreams(ctx, top)
	_, err = d.JS.Stream(ctx, top.CommandStream)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}
