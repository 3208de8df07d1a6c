package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
	"github.com/idempay/idempay/pkg/sim"
)

// opsEnv is a deployment whose workers give each key one try, with a
// duplicate window short enough to replay in a test.
func opsEnv(t *testing.T) *loadtest.Env {
	t.Helper()
	fast := &processor.Policy{Transient: processor.Backoff{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond,
		MaxElapsedTime: time.Second}}
	return loadtest.Setup(t, &loadtest.Options{Workers: -1, Processor: processor.Config{
		MaxTries: 1, DedupeWindow: 300 * time.Millisecond, DeadLetterFence: 100 * time.Millisecond, // replayed soon after the dead letter
		Retry: fast, RetryOverrides: map[string]processor.RetryPolicy{messages.KindPaymentRefund: fast},
	}})
}

// pastWindow waits until the duplicate window of a command published now
// has passed on the server's clock (a time, not an event: nothing
// announces it).
func pastWindow(env *loadtest.Env) {
	time.Sleep(env.Config.DedupeWindow + 50*time.Millisecond)
}

func listed(t *testing.T, cli []string, args ...string) []map[string]any {
	t.Helper()
	r := runCLI(t, cli, append([]string{"--json", "dlq", "list"}, args...)...)
	if r.code == exitNoAnswer {
		return nil
	}
	require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
	var out []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	return out
}

func statuses(entries []map[string]any) map[string]string {
	out := map[string]string{}
	for _, e := range entries {
		out[fmt.Sprintf("%v#%v", e["key"], e["sequence"])] = fmt.Sprint(e["status"])
	}
	return out
}

// field reads a nested member of decoded JSON, or nil.
func field(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// TestRun_DLQBulk walks an outage with the producer: dead letters of two
// kinds while the provider is down, listed with every filter; a dry run;
// one key re-driven while still down (a second dead letter supersedes the
// first); the provider back, a bulk replay of the charges, after which the
// list shows them resolved, never pending; a purge of what was replayed;
// a record gone (expired); and no worker to ask (unchecked). Exit
// statuses: 0 done, 1 error, 3 nothing matched, 64 usage.
func TestRun_DLQBulk(t *testing.T) {
	t.Parallel()
	env := opsEnv(t)
	ctx := context.Background()
	c := env.MustClient(t, nil)
	cli := cliEnv(env)

	good, err := env.StartWorker(nil)
	require.NoError(t, err)
	charged := client.NewKey()
	_, err = c.Charge(ctx, charged, messages.ChargeRequest{AccountID: "acct_bulk", Amount: 900, Currency: "EUR"})
	require.NoError(t, err)
	require.NoError(t, good.Stop(ctx))

	down, err := env.StartWorker(&sim.Config{FailureRate: 1})
	require.NoError(t, err)
	charges := []string{client.NewKey(), client.NewKey(), client.NewKey()}
	for _, key := range charges {
		_, err := c.Charge(ctx, key, messages.ChargeRequest{AccountID: "acct_bulk", Amount: 700, Currency: "EUR"})
		require.ErrorIs(t, err, client.ErrDeadLettered)
	}
	refund := client.NewKey()
	_, err = c.Refund(ctx, refund, messages.RefundRequest{ChargeKey: charged, Amount: 100})
	require.ErrorIs(t, err, client.ErrDeadLettered)

	all := listed(t, cli)
	require.Len(t, all, 4)
	for _, e := range all {
		require.Equal(t, "pending", e["status"], e)
		require.Equal(t, "dead_lettered", field(e, "state", "state"))
	}
	r := runCLI(t, cli, "dlq", "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "STATUS")
	require.Contains(t, r.stdout, "4 dead letter(s) match (pending 4)")
	for args, want := range map[string]int{
		"--kind payment.refund": 1, "--kind payment.charge,payment.refund": 4, "--kind cart.add": 0,
		"--reason UNAVAILABLE": 4, "--reason nope": 0, "--effect none": 4, "--effect unknown": 0,
		"--since 1h": 4, "--before 1h": 0, "--since 2020-01-01T00:00:00Z": 4,
		"--status pending": 4, "--status resolved,voided": 0, "--replayed": 0,
	} {
		require.Len(t, listed(t, cli, strings.Fields(args)...), want, args)
	}
	r = runCLI(t, cli, "dlq", "list", "--reason", "nope")
	require.Equal(t, exitNoAnswer, r.code, "nothing matched")
	require.Contains(t, r.stdout, "0 dead letter(s) match")
	for _, args := range [][]string{{"--since", "yesterday"}, {"--status", "lost"}, {"--effect", "maybe"}} {
		r = runCLI(t, cli, append([]string{"dlq", "list"}, args...)...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}

	r = runCLI(t, cli, "dlq", "replay", "--dry-run", "--kind", "payment.charge")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "would replay 3")
	require.Len(t, listed(t, cli, "--status", "pending"), 4, "a dry run changes nothing")

	pastWindow(env)
	r = runCLI(t, cli, "dlq", "replay", charges[2]) // still down: dead-lettered again
	require.Equal(t, exitRejected, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "dead_lettered")
	st := statuses(listed(t, cli, "--kind", "payment.charge"))
	require.Len(t, st, 4)
	superseded := 0
	for k, s := range st {
		if strings.HasPrefix(k, charges[2]) && s == "superseded" {
			superseded++
		}
	}
	require.Equal(t, 1, superseded, "the first dead letter of the re-driven key: %v", st)

	require.NoError(t, down.Stop(ctx))
	_, err = env.StartWorker(nil) // the provider is back
	require.NoError(t, err)
	pastWindow(env)
	r = runCLI(t, cli, "dlq", "replay", "--kind", "payment.charge")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "replayed 3 (succeeded 3, failed 0, rejected 0, no answer 0); skipped 1")
	for _, key := range charges {
		res, err := c.Status(ctx, key)
		require.NoError(t, err)
		require.Equal(t, messages.StatusSucceeded, res.Status)
	}
	r = runCLI(t, cli, "dlq", "list")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "resolved: succeeded")
	require.Len(t, listed(t, cli, "--status", "pending"), 1, "only the refund: a replayed dead letter is never pending")
	require.Len(t, listed(t, cli, "--replayed"), 4, "3 resolved and 1 superseded")
	r = runCLI(t, cli, "dlq", "replay", "--kind", "payment.charge")
	require.Equal(t, exitNoAnswer, r.code, "nothing left to replay: %s", r.stdout)

	for _, args := range [][]string{{"dlq", "purge"}, {"dlq", "purge", "--all", "--kind", "payment.charge"},
		{"dlq", "replay", charges[0], "--kind", "payment.charge"}, {"dlq", "purge", "not-a-key"}} {
		r = runCLI(t, cli, args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r.stderr)
	}
	r = runCLI(t, cli, "dlq", "purge", "--replayed", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "would purge 4 dead letter(s) of 3 key(s)")
	require.Len(t, listed(t, cli), 5, "a dry run purges nothing")
	r = runCLI(t, cli, "dlq", "purge", "--replayed")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "purged 4 dead letter(s) of 3 key(s)")
	left := listed(t, cli)
	require.Len(t, left, 1)
	require.Equal(t, refund, left[0]["key"])
	r = runCLI(t, cli, "dlq", "purge", "--kind", "cart.add")
	require.Equal(t, exitNoAnswer, r.code, "nothing matched")

	// The refund's record gone (expired, or evicted): expired; with no
	// worker to ask: unchecked.
	a, err := admin.New(env.NC, env.RDB, &admin.Config{Topology: env.Config.Topology, KeyPrefix: env.Config.KeyPrefix})
	require.NoError(t, err)
	require.NoError(t, env.RDB.Del(ctx, a.RecordKey(refund)).Err())
	require.Equal(t, "expired", listed(t, cli)[0]["status"])
	r = runCLI(t, cli, "dlq", "replay", "--dry-run")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "would replay 1", "an expired dead letter whose effect was none may be replayed")
	env.Close() // stops the workers (and removes the streams: list no more after this)
}

// TestRun_Key inspects keys with the producer: a completed charge (show,
// timeline, JSON), a dead-lettered one (whose eviction is refused), a key
// nothing holds (exit 3), a locked key (eviction refused, exit 2), and the
// eviction of a completed record without and with --yes, after which the
// audit log names the operator and a duplicate runs the charge again
// (the provider's idempotency returns the same charge).
func TestRun_Key(t *testing.T) {
	t.Parallel()
	env := opsEnv(t)
	ctx := context.Background()
	c := env.MustClient(t, nil)
	cli := cliEnv(env)

	down, err := env.StartWorker(&sim.Config{FailureRate: 1})
	require.NoError(t, err)
	dead := client.NewKey()
	_, err = c.Charge(ctx, dead, messages.ChargeRequest{AccountID: "acct_key", Amount: 300, Currency: "EUR"})
	require.ErrorIs(t, err, client.ErrDeadLettered)
	require.NoError(t, down.Stop(ctx))
	_, err = env.StartWorker(nil)
	require.NoError(t, err)
	key := client.NewKey()
	req := messages.ChargeRequest{AccountID: "acct_key", Amount: 1999, Currency: "EUR"}
	first, err := c.Charge(ctx, key, req)
	require.NoError(t, err)

	r := runCLI(t, cli, "key", "show", key)
	require.Equal(t, 0, r.code, r.stderr)
	for _, want := range []string{`completed: the outcome is stored \(succeeded\)`, first.Data.ChargeID, `lock\s+free`,
		`RESULTS\s+#\d+ succeeded`, `simulated: 1 charge call\(s\)`, `evictable\s+yes`, `not scheduled`} {
		require.Regexp(t, want, r.stdout)
	}
	r = runCLI(t, cli, "--json", "key", "show", key)
	require.Equal(t, 0, r.code, r.stderr)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, "completed", field(rep, "record", "state"))
	require.Equal(t, "succeeded", field(rep, "result", "outcome", "status"))
	require.InDelta(t, 1.0, field(rep, "provider_ledger", "calls"), 0)
	require.Equal(t, true, field(rep, "eviction", "allowed"))

	r = runCLI(t, cli, "key", "timeline", key)
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `record\s+outcome stored: succeeded \(attempts 1\)`, r.stdout)
	require.Regexp(t, `RESULTS\s+last answer stored in RESULTS`, r.stdout)
	require.Contains(t, r.stdout, "the record expires")
	require.Less(t, strings.Index(r.stdout, "outcome stored"), strings.Index(r.stdout, "the record expires"), "oldest first")

	r = runCLI(t, cli, "key", "show", dead)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "dead: dead-lettered, certainly without effect")
	require.Regexp(t, `dead letters\s+1 `, r.stdout)
	require.Contains(t, r.stdout, "provider temporarily unavailable")
	require.Regexp(t, `evictable\s+no: the key is dead-lettered`, r.stdout)
	r = runCLI(t, cli, "key", "timeline", dead)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "command published (COMMANDS #")
	require.Contains(t, r.stdout, "dead-lettered after 1 deliveries")
	require.Contains(t, r.stdout, "became dead: its client was told dead_lettered")
	r = runCLI(t, cli, "key", "evict", dead, "--yes")
	require.Equal(t, exitRejected, r.code, r.stdout)
	require.Contains(t, r.stderr, "must not be evicted")

	for args, want := range map[string]int{
		"key show " + client.NewKey(): exitNoAnswer, "key timeline " + client.NewKey(): exitNoAnswer,
		"key evict " + client.NewKey(): exitNoAnswer, "key show not-a-key": exitUsage, "key evict": exitUsage,
	} {
		r = runCLI(t, cli, strings.Fields(args)...)
		require.Equal(t, want, r.code, "%s: %s", args, r.stderr)
	}

	a, err := admin.New(env.NC, env.RDB, &admin.Config{Topology: env.Config.Topology, KeyPrefix: env.Config.KeyPrefix})
	require.NoError(t, err)
	require.NoError(t, env.RDB.Set(ctx, a.LockKey(key), "a-worker-token", time.Minute).Err())
	r = runCLI(t, cli, "key", "show", key)
	require.Contains(t, r.stdout, "held by a-worker-token")
	r = runCLI(t, cli, "key", "evict", key, "--yes")
	require.Equal(t, exitRejected, r.code, r.stdout)
	require.Contains(t, r.stderr, "lock is held")
	require.NoError(t, env.RDB.Del(ctx, a.LockKey(key)).Err())

	r = runCLI(t, cli, "key", "evict", key)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "RUNS THE OPERATION AGAIN")
	require.Contains(t, r.stdout, "not evicted: run again with --yes")
	require.Equal(t, 0, runCLI(t, cli, "key", "show", key).code, "still there")
	r = runCLI(t, cli, "key", "evict", key, "--yes", "--operator", "alice")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "evicted the completed record of "+key)
	r = runCLI(t, cli, "key", "show", key)
	require.Equal(t, 0, r.code, "RESULTS and the audit log still hold the key")
	require.Regexp(t, `record\s+none`, r.stdout)
	require.Contains(t, r.stdout, "evict by alice")
	r = runCLI(t, cli, "key", "timeline", key)
	require.Contains(t, r.stdout, "evict by alice: evicted a completed record")

	pastWindow(env)
	again, err := c.Charge(ctx, key, req)
	require.NoError(t, err)
	require.False(t, again.Result.Replayed, "the duplicate ran again, as the confirmation said")
	require.Equal(t, first.Data.ChargeID, again.Data.ChargeID, "the provider's idempotency returned the same charge")
	require.EqualValues(t, 2, env.SimCalls(t, key))
}
