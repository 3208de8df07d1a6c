package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// TestWorker_TwoProcesses drives two worker processes sharing one NATS and
// one Redis from outside, with a plain NATS client, through every behaviour
// of the contract.
func TestWorker_TwoProcesses(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	w1, w2 := d.start(t), d.start(t)
	got := d.listen(t)
	ctx := context.Background()

	// Charges, each published twice at once: JetStream drops the copy.
	const nCharges = 60
	charges := map[string]messages.ChargeRequest{}
	for i := range nCharges {
		key := newKey()
		req := messages.ChargeRequest{AccountID: "acct_e2e", Amount: int64(100 + i), Currency: "EUR"}
		charges[key] = req
		require.False(t, d.publish(t, messages.KindPaymentCharge, key, req).Duplicate)
		require.True(t, d.publish(t, messages.KindPaymentCharge, key, req).Duplicate)
	}
	// Cart adds across four carts.
	carts := map[string]int64{}
	cartKeys := map[string]messages.CartAddRequest{}
	for i := range 40 {
		req := messages.CartAddRequest{CartID: "cart_" + string(rune('a'+i%4)), SKU: "SKU-1", Quantity: int64(1 + i%3)}
		key := newKey()
		cartKeys[key] = req
		carts[req.CartID] += req.Quantity
		d.publish(t, messages.KindCartAdd, key, req)
	}
	declined := newKey()
	d.publish(t, messages.KindPaymentCharge, declined, messages.ChargeRequest{AccountID: "decline_1", Amount: 5, Currency: "EUR"})

	firsts := map[string]messages.Result{}
	for key := range charges {
		r := got.wait(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, r.Status, "%+v", r)
		firsts[key] = r
	}
	for key, req := range cartKeys {
		r := got.wait(t, key, 1)[0]
		require.Equal(t, messages.StatusSucceeded, r.Status, "%+v", r)
		var data messages.CartAddData
		require.NoError(t, json.Unmarshal(r.Data, &data))
		require.Equal(t, req.CartID, data.CartID)
		firsts[key] = r
	}
	dr := got.wait(t, declined, 1)[0]
	require.Equal(t, messages.StatusFailed, dr.Status)
	require.Equal(t, messages.CodeCardDeclined, dr.Code)

	// Late client retries, after the 1s dedupe window: the workers replay.
	time.Sleep(1200 * time.Millisecond)
	retried := map[string]bool{}
	for key, req := range charges {
		if len(retried) == 20 {
			break
		}
		require.False(t, d.publish(t, messages.KindPaymentCharge, key, req).Duplicate)
		retried[key] = true
	}
	// The same key with another amount is refused and changes nothing.
	var reusedKey string
	for key, req := range charges {
		if retried[key] {
			continue
		}
		reusedKey = key
		req.Amount++
		d.publish(t, messages.KindPaymentCharge, key, req)
		break
	}

	// Every rejection code, with a Reply-To.
	inbox := nats.NewInbox()
	replies, err := d.nc.SubscribeSync(inbox)
	require.NoError(t, err)
	rejections := map[string]string{
		messages.CodeUnknownCommand:  "refund.issue",
		messages.CodeInvalidPayload:  messages.KindPaymentCharge,
		messages.CodePayloadTooLarge: messages.KindCartAdd,
	}
	bodies := map[string]string{
		messages.CodeUnknownCommand:  `{"x":1}`,
		messages.CodeInvalidPayload:  `{"account_id":"a","amount":1.5,"currency":"EUR"}`,
		messages.CodePayloadTooLarge: `{"cart_id":"` + strings.Repeat("c", messages.MaxBodySize) + `"}`,
	}
	rejKeys := map[string]string{}
	for code, kind := range rejections {
		key := newKey()
		rejKeys[code] = key
		d.publish(t, kind, key, bodies[code], messages.HeaderReplyTo, inbox)
	}
	d.publish(t, messages.KindCartAdd, "NOT-A-UUID", `{"cart_id":"c","sku":"s","quantity":1}`, messages.HeaderReplyTo, inbox)

	for code, key := range rejKeys {
		r := got.wait(t, key, 1)[0]
		require.Equal(t, messages.StatusRejected, r.Status)
		require.Equal(t, code, r.Code)
	}
	invalidKeyReplies := 0
	for range len(rejKeys) + 1 {
		m, err := replies.NextMsg(30 * time.Second)
		require.NoError(t, err)
		r, err := messages.DecodeResult(m.Data)
		require.NoError(t, err)
		require.Equal(t, messages.StatusRejected, r.Status)
		if r.Code == messages.CodeInvalidKey {
			invalidKeyReplies++
			require.Equal(t, "NOT-A-UUID", r.Key)
		}
	}
	require.Equal(t, 1, invalidKeyReplies)

	reuse := got.wait(t, reusedKey, 2)
	require.Equal(t, messages.CodeKeyReused, reuse[len(reuse)-1].Code)

	// Every retried charge got a replay identical to its first answer.
	replays := 0
	eventually(t, 60*time.Second, func() bool {
		replays = 0
		for key := range charges {
			for _, r := range got.get(key) {
				if r.Replayed {
					replays++
				}
			}
		}
		return replays >= len(retried)
	}, "replays of the late retries")
	require.Equal(t, len(retried), replays)
	for key := range charges {
		for _, r := range got.get(key) {
			if r.Status != messages.StatusRejected {
				sameOutcome(t, firsts[key], r)
			}
		}
	}

	// The simulated provider's ledger: each charged key reached exactly once.
	ns := d.ns + ":"
	for key := range charges {
		require.EqualValues(t, 1, d.hgetInt(t, ns+"sim:calls", key), "provider calls for %s", key)
	}
	nCharged, err := d.rdb.HLen(ctx, ns+"sim:charges").Result()
	require.NoError(t, err)
	require.EqualValues(t, nCharges, nCharged)
	for cart, want := range carts {
		require.Equal(t, want, d.hgetInt(t, ns+"cart:{"+cart+"}", "SKU-1"), "cart %s", cart)
	}

	// Both processes took part, and both drain on SIGTERM.
	require.Contains(t, w1.out.String(), "command done")
	require.Contains(t, w2.out.String(), "command done")
	w1.stop(t)
	w2.stop(t)
	require.Regexp(t, `msg="worker stopped" deliveries=[1-9][0-9]* succeeded=[1-9]`, w1.out.String(), "final counters")
}

// TestWorker_KilledAt SIGKILLs a real worker process at each step of a
// charge - after the lock, after marking the record, right after the
// provider charged, after the commit, after publishing - and lets the next
// worker finish the command: the card is charged once, and every answer is
// the same outcome.
func TestWorker_KilledAt(t *testing.T) {
	t.Parallel()
	for _, point := range []processor.Failpoint{processor.AfterLock, processor.AfterBegin, processor.AfterOperation,
		processor.AfterCommit, processor.AfterPublish} {
		t.Run(string(point), func(t *testing.T) {
			t.Parallel()
			d := newDeployment(t)
			got := d.listen(t)
			doomed := d.start(t, "IDEMPAY_FAILPOINT="+string(point))
			key := newKey()
			d.publish(t, messages.KindPaymentCharge, key, messages.ChargeRequest{AccountID: "acct_k", Amount: 4200, Currency: "EUR"})
			select {
			case <-doomed.done:
			case <-time.After(30 * time.Second):
				t.Fatal("the worker did not reach its failpoint")
			}
			require.Contains(t, doomed.err.Error(), "killed")

			d.start(t)
			answers := got.wait(t, key, 1)
			first := answers[0]
			require.Equal(t, messages.StatusSucceeded, first.Status)
			wantAnswers, wantCalls := 1, int64(1)
			switch point {
			case processor.AfterLock, processor.AfterBegin, processor.AfterCommit:
				// one provider call, one answer
			case processor.AfterOperation:
				wantCalls = 2 // asked again after the kill, with the same key
			case processor.AfterPublish:
				wantAnswers = 2 // the original, then the redelivery's replay
			case processor.AfterDeadLetterCopy:
				t.Fatal("not a step of a charge that succeeds")
			}
			answers = got.wait(t, key, wantAnswers)
			for _, a := range answers {
				sameOutcome(t, first, a)
			}
			require.Equal(t, wantCalls, d.hgetInt(t, d.ns+":sim:calls", key))
			n, err := d.rdb.HLen(context.Background(), d.ns+":sim:charges").Result()
			require.NoError(t, err)
			require.EqualValues(t, 1, n, "charged once")
		})
	}
}

// TestWorker_RefundKilledAfterTheProviderCall SIGKILLs the worker of a
// refund right after the provider refunded, before the commit: the next
// worker asks the provider again with the refund's key and gets the same
// refund back, so the charge is refunded once.
func TestWorker_RefundKilledAfterTheProviderCall(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	got := d.listen(t)
	healthy := d.start(t)
	chargeKey := newKey()
	d.publish(t, messages.KindPaymentCharge, chargeKey, messages.ChargeRequest{AccountID: "acct_rk", Amount: 5000, Currency: "EUR"})
	require.Equal(t, messages.StatusSucceeded, got.wait(t, chargeKey, 1)[0].Status)
	healthy.stop(t)

	doomed := d.start(t, "IDEMPAY_FAILPOINT="+string(processor.AfterOperation))
	key := newKey()
	d.publish(t, messages.KindPaymentRefund, key, messages.RefundRequest{ChargeKey: chargeKey, Amount: 1500})
	select {
	case <-doomed.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not reach its failpoint")
	}
	require.Contains(t, doomed.err.Error(), "killed")
	require.True(t, d.rdb.HExists(context.Background(), d.ns+":sim:refunds", key).Val(), "the provider refunded before the kill")

	d.start(t)
	answer := got.wait(t, key, 1)[0]
	require.Equal(t, messages.StatusSucceeded, answer.Status, "%+v", answer)
	var data messages.RefundData
	require.NoError(t, json.Unmarshal(answer.Data, &data))
	require.Equal(t, int64(1500), data.Amount)
	require.Equal(t, int64(1500), data.RefundedTotal)
	require.Equal(t, int64(1500), d.hgetInt(t, d.ns+":sim:refunded", chargeKey), "refunded once")
	n, err := d.rdb.HLen(context.Background(), d.ns+":sim:refunds").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "one refund")
}

func TestWorker_CommandLine(t *testing.T) {
	t.Parallel()
	run := func(args []string, env ...string) (string, int) {
		cmd := exec.CommandContext(t.Context(), workerBin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		}
		return out.String(), code
	}

	out, code := run([]string{"--help"})
	require.Equal(t, 0, code)
	for _, v := range []string{"NATS_URL", "REDIS_URL", "DEDUPE_WINDOW", "RESULT_TTL", "ACK_WAIT", "MAX_DELIVER", "SIM_LATENCY", "SIM_FAILURE_RATE"} {
		require.Contains(t, out, v)
	}

	out, code = run([]string{"--version"})
	require.Equal(t, 0, code)
	require.Contains(t, out, "worker ")

	out, code = run([]string{"--help"})
	require.Equal(t, 0, code)
	require.Contains(t, out, "IDEMPAY_ prefix")
	require.NotContains(t, out, "only checked, never changed")

	out, code = run([]string{"--max-delivr", "3"})
	require.Equal(t, cli.ExitUsage, code)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "one line: %q", out)
	require.Contains(t, out, "--max-delivr")

	out, code = run(nil, "SIM_FAILURE_RATE=1.5")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--sim-failure-rate (SIM_FAILURE_RATE)")

	out, code = run([]string{"--ack-wait", "soon"})
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--ack-wait")

	out, code = run([]string{"--retry", "payment.refund:sometimes=1s/2s/3s/4"})
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--retry (RETRY_POLICIES)")
	require.Contains(t, out, "sometimes")

	out, code = run(nil, "RESULT_TTL=2m", "MAX_DELIVER=20", "ACK_WAIT=30s")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--result-ttl (RESULT_TTL) 2m0s must cover the longest redelivery horizon")

	out, code = run(nil, "RESULTS_MAX_AGE=30s")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--results-max-age (RESULTS_MAX_AGE) must be 0 or between --dedupe-window (2m0s) and --result-ttl (24h0m0s), got 30s")

	out, code = run(nil, "DEAD_LETTER_FENCE=0s")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--dead-letter-fence (DEAD_LETTER_FENCE) must be positive, got 0s")

	out, code = run([]string{"--lock-ttl", "10m", "--ack-wait", "5s"})
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--lock-ttl (LOCK_TTL) 10m0s must not exceed 10 x --ack-wait (ACK_WAIT) 5s")

	out, code = run(nil, "DEDUPE_WINDOW=xyz")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, `--dedupe-window (from DEDUPE_WINDOW): expected duration but got "xyz"`)

	out, code = run(nil, "IDEMPAY_DEDUPE_WINDOW=xyz", "DEDUPE_WINDOW=1m")
	require.Equal(t, cli.ExitUsage, code, "the prefixed name wins")
	require.Contains(t, out, "--dedupe-window (from IDEMPAY_DEDUPE_WINDOW)")

	out, code = run(nil, "IDEMPAY_MAX_DELIVER=0")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--max-deliver (IDEMPAY_MAX_DELIVER) must be at least 1, got 0")

	out, code = run(nil, "MAX_DELIVER=0", "IDEMPAY_MAX_DELIVER=5", "NATS_URL=nats://127.0.0.1:1")
	require.Equal(t, 1, code, "MAX_DELIVER=0 is not read when IDEMPAY_MAX_DELIVER is set: %s", out)

	out, code = run([]string{"--metrics-addr=nonsense"})
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, `--metrics-addr (METRICS_ADDR) "nonsense": want host:port`)

	out, code = run(nil, "PPROF=true")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--pprof (PPROF) needs --metrics-addr (METRICS_ADDR)")

	out, code = run(nil, "NATS_URL=nats://alice:s3cret@127.0.0.1:1")
	require.Equal(t, 1, code)
	require.Contains(t, out, "cannot connect to NATS at nats://alice:xxxxx@127.0.0.1:1")
	require.NotContains(t, out, "s3cret", "a password never reaches the logs")
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "one line: %q", out)

	env, err := testenv.Shared()
	require.NoError(t, err)
	out, code = run(nil, "NATS_URL="+env.NATSURL, "REDIS_URL=redis://alice:s3cret@127.0.0.1:1")
	require.Equal(t, 1, code)
	require.Contains(t, out, "cannot reach Redis at 127.0.0.1:1: ")
	require.NotContains(t, out, "s3cret", "a password never reaches the logs")
	require.NotRegexp(t, `redis: +redis:`, out)
	require.Equal(t, 1, strings.Count(out, "connection refused"), "said once: %q", out)

	out, code = run(nil, "REDIS_URL=redis://:s3cret@127.0.0.1:1", "REDIS_CA=/dev/null")
	require.Equal(t, cli.ExitUsage, code)
	require.Contains(t, out, "--redis-ca (REDIS_CA) and --redis-cert (REDIS_CERT) are for TLS: --redis-url (REDIS_URL) must then be a rediss:// URL, not redis://:xxxxx@127.0.0.1:1")
	require.NotContains(t, out, "s3cret")
}

// TestRun_ConfigReference: the worker's section of docs/configuration.md
// is what its flags say (the page is generated from --config-reference).
func TestRun_ConfigReference(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{cli.ReferenceFlag}, nil, &stdout, &stderr)
	require.ErrorIs(t, err, cli.ErrHelp)
	require.Contains(t, stdout.String(), "| `--dedupe-window` | `IDEMPAY_DEDUPE_WINDOW`, `DEDUPE_WINDOW` | `2m` |")
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	require.NoError(t, cli.CheckReference(doc, "worker", stdout.Bytes()))
}

// TestWorker_OldNATSServer: on a nats-server older than the release the
// docs recommend the worker warns once at start and runs; on the embedded
// 2.15 it says nothing. The old server is Debian's 2.9 (.ci/run installs
// it; NATS_SERVER_BIN names another).
func TestWorker_OldNATSServer(t *testing.T) {
	t.Parallel()
	const warning = "nats-server is older than " + cli.NATSServerRecommended

	d := newDeployment(t)
	w := d.start(t)
	w.stop(t)
	if os.Getenv("NATS_SERVER_BIN") == "" { // the shared server is the embedded 2.15, not an old binary
		require.NotContains(t, w.out.String(), warning)
	}

	bin := os.Getenv("NATS_SERVER_BIN")
	if bin == "" {
		bin = "/usr/sbin/nats-server"
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // a test's choice of server binary
		t.Skipf("no old nats-server at %s (Debian: apt-get install -y nats-server): %v", bin, err)
	}
	old, err := testenv.StartNATSBinary(bin)
	require.NoError(t, err)
	t.Cleanup(old.Shutdown)
	w = d.start(t, "NATS_URL="+old.URL)
	out := w.out.String()
	w.stop(t)
	if !strings.Contains(out, warning) {
		nc, err := nats.Connect(old.URL)
		require.NoError(t, err)
		defer nc.Close()
		require.False(t, strings.HasPrefix(nc.ConnectedServerVersion(), "2.9."), "no warning on %s:\n%s", nc.ConnectedServerVersion(), out)
		t.Skipf("%s is %s, not older than %s", bin, nc.ConnectedServerVersion(), cli.NATSServerRecommended)
	}
	require.Equal(t, 1, strings.Count(out, warning), out)
	require.Contains(t, out, "level=WARN")
}
