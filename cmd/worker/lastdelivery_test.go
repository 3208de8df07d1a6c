package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
)

// TestWorker_LastDelivery_NoCommandIsStranded SIGKILLs every worker that
// takes the command, on each of its tries, and then keeps killing whoever
// is alive for a while: whatever a worker knew about the command dies with
// it. A command must still end: here dead-lettered, since no attempt got as
// far as charging, and answered dead_lettered.
func TestWorker_LastDelivery_NoCommandIsStranded(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, "MAX_DELIVER=2", "SIM_LATENCY=1500ms")
	got := d.listen(t)
	ctx := context.Background()
	key := newKey()
	lock := d.ns + ":idem:lock:{" + key + "}"

	w := d.start(t)
	d.publish(t, messages.KindPaymentCharge, key, messages.ChargeRequest{AccountID: "acct_s", Amount: 10, Currency: "EUR"})
	for try := 1; try <= 2; try++ {
		// The try is under way once its lock exists (and the provider
		// takes 1.5s): kill it there, and replace the worker at once.
		eventually(t, 30*time.Second, func() bool { return d.rdb.Exists(ctx, lock).Val() == 1 }, "try under way")
		require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
		<-w.done
		w = d.start(t)
		eventually(t, 10*time.Second, func() bool { return d.rdb.Exists(ctx, lock).Val() == 0 }, "the dead try's lock expires")
	}
	// Whoever would keep a note of the exhausted command in memory dies too.
	for range 3 {
		time.Sleep(2500 * time.Millisecond)
		require.NoError(t, w.cmd.Process.Signal(syscall.SIGKILL))
		<-w.done
		w = d.start(t)
	}
	answers := got.wait(t, key, 1)
	require.Equal(t, messages.CodeDeadLettered, answers[0].Code, "%+v", answers[0])
	eventually(t, 30*time.Second, func() bool { return d.streamMsgs(t, "_COMMANDS") == 0 }, "COMMANDS drained")
	// One dead letter. A worker killed between its copy and the condemn
	// leaves a second copy of the same dead letter (the same
	// Dlq-Stream-Seq), which the next live worker makes again.
	require.Len(t, d.deadLetterSeqs(t, key), 1, "one dead letter of the command")
	require.False(t, d.rdb.HExists(ctx, d.ns+":sim:charges", key).Val(), "nothing charged")
}

// TestWorker_LastDelivery_ARetryDuringALongChargeIsNotDeadLettered re-sends
// a charge while its first delivery is in a slow provider call, then
// SIGKILLs the worker of that call: the re-send meets the lock many times
// more than MAX_DELIVER, and must never be answered dead_lettered, because
// the key then gets charged.
func TestWorker_LastDelivery_ARetryDuringALongChargeIsNotDeadLettered(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, "MAX_DELIVER=3", "SIM_LATENCY=4s", "LOCK_TTL=2s")
	got := d.listen(t)
	ctx := context.Background()
	key := newKey()
	lock := d.ns + ":idem:lock:{" + key + "}"
	req := messages.ChargeRequest{AccountID: "acct_r", Amount: 20, Currency: "EUR"}

	first := d.start(t)
	d.publish(t, messages.KindPaymentCharge, key, req)
	eventually(t, 30*time.Second, func() bool { return d.rdb.Exists(ctx, lock).Val() == 1 }, "first delivery under way")
	d.start(t) // a second worker takes the re-send
	time.Sleep(1500 * time.Millisecond)
	require.False(t, d.publish(t, messages.KindPaymentCharge, key, req).Duplicate, "past the 1s dedupe window")
	time.Sleep(2 * time.Second) // the re-send meets the lock again and again
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGKILL))

	answers := got.wait(t, key, 2)
	for _, a := range answers {
		require.Equal(t, messages.StatusSucceeded, a.Status, "never dead_lettered for a key that gets charged: %+v", a)
		sameOutcome(t, answers[0], a)
	}
	eventually(t, 30*time.Second, func() bool { return d.streamMsgs(t, "_COMMANDS") == 0 }, "COMMANDS drained")
	n, err := d.rdb.HLen(ctx, d.ns+":sim:charges").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "charged once")
	require.Zero(t, d.streamMsgs(t, "_DEADLETTER"))
}

// streamMsgs returns how many messages the deployment's stream (by suffix)
// holds.
func (d *deployment) streamMsgs(t *testing.T, suffix string) uint64 {
	t.Helper()
	s, err := d.js.Stream(context.Background(), d.ns+suffix)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// deadLetterSeqs returns the distinct Dlq-Stream-Seq of the dead-letter
// copies of key, requiring every copy in the stream to be key's.
func (d *deployment) deadLetterSeqs(t *testing.T, key string) map[string]int {
	t.Helper()
	ctx := context.Background()
	s, err := d.js.Stream(ctx, d.ns+"_DEADLETTER")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	seqs := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		require.Equal(t, key, m.Header.Get(messages.HeaderMsgID))
		seqs[m.Header.Get(messages.HeaderDlqStreamSeq)]++
	}
	return seqs
}
