//go:build chaos

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// chaosDuration is how long the chaos lasts: CHAOS_DURATION (make chaos),
// 20s by default.
func chaosDuration(t *testing.T) time.Duration {
	t.Helper()
	d := 20 * time.Second
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		var err error
		d, err = time.ParseDuration(s)
		require.NoError(t, err, "CHAOS_DURATION")
	}
	return d
}

// TestChaos_KillWorkers runs three worker processes under a steady load with
// client retries and a flaky provider, while workers are SIGKILLed at every
// step: each process arms a random failpoint that kills it with a small
// probability, and a killer SIGKILLs a random worker every second or two at
// whatever it is doing. Dead workers are replaced at once. When the chaos
// ends, a clean worker drains the queue and the ledger is checked: every
// command has exactly one outcome, every answer for a key is that outcome,
// every succeeded charge is the provider's one charge for its key and no
// other charge exists, and every cart holds exactly what its succeeded adds
// put there.
func TestChaos_KillWorkers(t *testing.T) {
	quietWorkers = true
	d := newDeployment(t, "SIM_FAILURE_RATE=0.1", "MAX_DELIVER=20", "LOG_LEVEL=warn")
	got := d.listen(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	t.Logf("chaos for %v", chaosDuration(t))

	startArmed := func() *workerProc {
		point := processor.Failpoints[rng.IntN(len(processor.Failpoints))]
		// Not waiting for "worker running": an armed worker may die first.
		return d.spawn(t, true, fmt.Sprintf("IDEMPAY_FAILPOINT=%s@0.03", point))
	}
	workers := []*workerProc{startArmed(), startArmed(), startArmed()}

	type sent struct {
		cmd  messages.Command
		late time.Time // when to send the late retry; zero for none
	}
	commands := map[string]*sent{}
	var order []string
	selfKills, externalKills, lateRetries := 0, 0, 0
	end := time.Now().Add(chaosDuration(t))
	nextKill := time.Now().Add(time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		// Load: five new commands a tick, a fifth of them retried at once
		// (JetStream drops the copy) and a fifth after the 1s window (a
		// worker replays the stored outcome).
		for range 5 {
			key := newKey()
			var cmd messages.Command
			if rng.Float64() < 0.7 {
				cmd = messages.ChargeRequest{AccountID: "acct_chaos", Amount: 1 + rng.Int64N(10_000), Currency: "EUR"}
			} else {
				cmd = messages.CartAddRequest{CartID: fmt.Sprintf("cart_%d", rng.IntN(20)), SKU: "SKU", Quantity: 1 + rng.Int64N(3)}
			}
			s := &sent{cmd: cmd}
			commands[key] = s
			order = append(order, key)
			d.publish(t, cmd.Kind(), key, cmd)
			switch r := rng.Float64(); {
			case r < 0.2:
				d.publish(t, cmd.Kind(), key, cmd)
			case r < 0.4:
				s.late = time.Now().Add(1500 * time.Millisecond)
			}
		}
		for _, key := range order {
			if s := commands[key]; !s.late.IsZero() && time.Now().After(s.late) {
				d.publish(t, s.cmd.Kind(), key, s.cmd)
				s.late = time.Time{}
				lateRetries++
			}
		}
		// Chaos: replace the dead, kill the living.
		for j, w := range workers {
			select {
			case <-w.done:
				selfKills++
				workers[j] = startArmed()
			default:
			}
		}
		if time.Now().After(nextKill) {
			w := workers[rng.IntN(len(workers))]
			if w.cmd.Process.Signal(syscall.SIGKILL) == nil {
				externalKills++
			}
			nextKill = time.Now().Add(time.Second + time.Duration(rng.Int64N(int64(time.Second))))
		}
	}
	// Late retries still due go out now.
	for _, key := range order {
		if s := commands[key]; !s.late.IsZero() {
			d.publish(t, s.cmd.Kind(), key, s.cmd)
			lateRetries++
		}
	}
	for _, w := range workers {
		select {
		case <-w.done:
			selfKills++
		default:
		}
	}
	d.spawn(t, true) // a clean worker finishes whatever the dead left behind

	// Every key ends with its outcome stored.
	rec := func(key string) map[string]string {
		m, err := d.rdb.HGetAll(ctx, d.ns+":idem:rec:{"+key+"}").Result()
		require.NoError(t, err)
		return m
	}
	eventually(t, 3*time.Minute, func() bool {
		for _, key := range order {
			if rec(key)["state"] != "completed" {
				return false
			}
		}
		return true
	}, "every command completed after the chaos")

	charges, err := d.rdb.HGetAll(ctx, d.ns+":sim:charges").Result()
	require.NoError(t, err)
	succeededCharges, replays, calls := 0, 0, map[int64]int{}
	cartWant := map[string]int64{}
	for _, key := range order {
		r := rec(key)
		require.Equal(t, "succeeded", r["status"], "key %s: %v", key, r)
		switch c := commands[key].cmd.(type) {
		case messages.ChargeRequest:
			succeededCharges++
			var data messages.ChargeData
			require.NoError(t, json.Unmarshal([]byte(r["data"]), &data))
			var charge messages.ChargeData
			require.NoError(t, json.Unmarshal([]byte(charges[key]), &charge), "no provider charge for %s", key)
			require.Equal(t, charge, data, "the outcome of %s names the provider's one charge", key)
			require.Equal(t, c.Amount, charge.Amount)
			calls[d.hgetInt(t, d.ns+":sim:calls", key)]++
		case messages.CartAddRequest:
			cartWant[c.CartID] += c.Quantity
		}
		// Every answer published for the key is its one outcome.
		answers := got.get(key)
		for _, a := range answers {
			sameOutcome(t, answers[0], a)
			if a.Replayed {
				replays++
			}
		}
	}
	require.Len(t, charges, succeededCharges, "no charge without a succeeded outcome")
	for cart, want := range cartWant {
		require.Equal(t, want, d.hgetInt(t, d.ns+":cart:{"+cart+"}", "SKU"), "cart %s", cart)
	}
	dlq, err := d.js.Stream(ctx, d.ns+"_DEADLETTER")
	require.NoError(t, err)
	info, err := dlq.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing dead-lettered")

	t.Logf("%d commands (%d charges), %d late retries; workers killed: %d at a failpoint, %d from outside; "+
		"%d replayed answers; provider calls per charge key: %v",
		len(order), succeededCharges, lateRetries, selfKills, externalKills, replays, calls)
}
