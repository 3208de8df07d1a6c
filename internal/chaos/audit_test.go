package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// The auditor must be able to fail: each case below breaks one thing a
// user can see and names the invariant that must catch it. The clean case
// proves the others fail for their own reason.

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

const (
	kCharge = "01900000-0000-7000-8000-000000000001"
	kCart   = "01900000-0000-7000-8000-000000000002"
	kRefund = "01900000-0000-7000-8000-000000000003"
	kOther  = "01900000-0000-7000-8000-000000000009"
)

var (
	charge = messages.ChargeRequest{AccountID: "acct_1", Amount: 1000, Currency: "EUR"}
	add    = messages.CartAddRequest{CartID: "c1", SKU: "S", Quantity: 2}
	refund = messages.RefundRequest{ChargeKey: kCharge, Amount: 300}
)

func outcome(key string, cmd messages.Command, data any, at time.Time) messages.Result {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return messages.Result{Key: key, Kind: cmd.Kind(), Status: messages.StatusSucceeded, Data: raw, Attempts: 1,
		ProcessedAt: at, Fingerprint: messages.Fingerprint(cmd)}
}

func sent(key string, kind load.SendKind, cmd messages.Command, res *messages.Result, err error) load.Sent {
	s := load.Sent{Key: key, Kind: kind, Command: cmd, Err: err, At: t0, Took: 10 * time.Millisecond}
	s.Reply = &client.Reply{PublishAttempts: 1}
	if res != nil {
		s.Reply.Result = *res
	}
	return s
}

// clean is a consistent world: a charge, a cart add and a refund, each
// answered once and held by the provider and the cart.
func clean() *observed {
	chargeData := messages.ChargeData{ChargeID: "ch_1", AccountID: "acct_1", Amount: 1000, Currency: "EUR"}
	refundData := messages.RefundData{RefundID: "re_1", ChargeID: "ch_1", Amount: 300, Currency: "EUR", RefundedTotal: 300}
	rc := outcome(kCharge, charge, chargeData, t0.Add(time.Second))
	ra := outcome(kCart, add, messages.CartAddData{CartID: "c1", SKU: "S", Quantity: 2}, t0.Add(time.Second))
	rr := outcome(kRefund, refund, refundData, t0.Add(2*time.Second))
	return &observed{
		sends: []load.Sent{
			sent(kCharge, load.KindOriginal, charge, &rc, nil),
			sent(kCart, load.KindOriginal, add, &ra, nil),
			sent(kRefund, load.KindOriginal, refund, &rr, nil),
		},
		live:     map[string][]messages.Result{kCharge: {rc}},
		stored:   map[string]messages.Result{kCharge: rc, kCart: ra, kRefund: rr},
		rejected: map[string][]messages.Result{},
		replies:  map[string][]messages.Result{},
		provider: ledger.Provider{Charges: map[string]messages.ChargeData{kCharge: chargeData}, Calls: map[string]int64{kCharge: 2},
			Refunds: map[string]messages.RefundData{kRefund: refundData}, Refunded: map[string]int64{kCharge: 300}},
		carts: map[string]map[string]int64{"c1": {"S": 2}},
	}
}

func TestAuditor(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		breakIt func(o *observed)
		want    Invariant // "" for none
		says    string
		also    Invariant // another invariant the same break violates
	}{
		"clean": {breakIt: func(*observed) {}},
		"an accepted command never answered": {
			breakIt: func(o *observed) {
				o.sends = append(o.sends, sent(kOther, load.KindOriginal, add, nil, client.ErrResultTimeout))
			},
			want: Answered, says: "never answered",
		},
		"an unconfirmed publish is not owed an answer": {
			breakIt: func(o *observed) {
				o.sends = append(o.sends, load.Sent{Key: kOther, Kind: load.KindOriginal, Command: add, Err: client.ErrPublishUnconfirmed, At: t0})
			},
		},
		"a send that hung": {
			breakIt: func(o *observed) { o.sends[1].Took = 4 * time.Minute },
			want:    Bounded, says: "longer than the client's bounds",
		},
		"two answers of a key differ": {
			breakIt: func(o *observed) {
				r := o.stored[kCharge]
				r.ProcessedAt = r.ProcessedAt.Add(time.Millisecond)
				o.live[kCharge] = append(o.live[kCharge], r)
			},
			want: Agree, says: "answers disagree",
		},
		"a replay differs only by replayed": {
			breakIt: func(o *observed) {
				r := o.stored[kCharge]
				r.Replayed = true
				o.live[kCharge] = append(o.live[kCharge], r)
			},
		},
		"an answer of another payload": {
			breakIt: func(o *observed) {
				r := o.stored[kCart]
				r.Fingerprint = strings.Repeat("0", 64)
				o.stored[kCart] = r
			},
			want: Agree, says: "another command",
		},
		"a re-use with another payload answered with an outcome": {
			breakIt: func(o *observed) {
				other := add
				other.Quantity = 3
				r := outcome(kCart, other, messages.CartAddData{CartID: "c1", SKU: "S", Quantity: 5}, t0.Add(3*time.Second))
				o.sends = append(o.sends, sent(kCart, load.KindReuse, other, &r, nil))
			},
			want: Agree, says: "re-used with another payload", also: Answered,
		},
		"a re-use refused by the client": {
			breakIt: func(o *observed) {
				other := add
				other.Quantity = 3
				s := sent(kCart, load.KindReuse, other, nil, fmt.Errorf("x: %w", client.ErrKeyReused))
				s.Reply.Duplicate = true
				o.sends = append(o.sends, s)
			},
		},
		"a failed charge on an account that is not declined": {
			breakIt: func(o *observed) {
				r := o.stored[kCharge]
				r.Status, r.Code, r.Data = messages.StatusFailed, messages.CodeCardDeclined, json.RawMessage("null")
				o.stored[kCharge] = r
				o.sends[0].Reply.Result = r
				o.live[kCharge] = []messages.Result{r}
				delete(o.provider.Charges, kCharge)
			},
			// and its refund is of a charge the provider does not hold
			want: Agree, says: "declined card", also: Charges,
		},
		"a charge without a succeeded outcome": {
			breakIt: func(o *observed) {
				o.sends = append(o.sends, sent(kOther, load.KindOriginal, charge, nil, client.ErrResultTimeout))
				o.deadLetters = append(o.deadLetters, client.DeadLetter{Key: kOther, Effect: "none", DeadLettered: t0.Add(time.Second)})
				o.provider.Charges[kOther] = messages.ChargeData{ChargeID: "ch_9"}
			},
			want: DeadLetters, says: "dead-lettered with Dlq-Effect none",
		},
		"a charge of an outcome_unknown dead letter may exist": {
			breakIt: func(o *observed) {
				o.sends = append(o.sends, sent(kOther, load.KindOriginal, charge, nil, client.ErrResultTimeout))
				o.deadLetters = append(o.deadLetters, client.DeadLetter{Key: kOther, Effect: "unknown", DeadLettered: t0.Add(time.Second)})
				o.provider.Charges[kOther] = messages.ChargeData{ChargeID: "ch_9"}
			},
		},
		"a succeeded charge the provider does not hold": {
			breakIt: func(o *observed) { delete(o.provider.Charges, kCharge) },
			want:    Charges, says: "holds no charge",
		},
		"a charge nobody sent": {
			breakIt: func(o *observed) { o.provider.Charges[kOther] = messages.ChargeData{ChargeID: "ch_9"} },
			want:    Charges, says: "no client sent",
		},
		"refunds beyond the provider's total": {
			breakIt: func(o *observed) { o.provider.Refunded[kCharge] = 600 },
			want:    Charges, says: "provider refunded 600",
		},
		"dead-lettered while an outcome was stored": {
			breakIt: func(o *observed) {
				o.deadLetters = append(o.deadLetters, client.DeadLetter{Key: kCharge, Effect: "none", DeadLettered: t0.Add(5 * time.Second)})
			},
			want: DeadLetters, says: "although its outcome",
		},
		"told dead_lettered and charged": {
			breakIt: func(o *observed) {
				o.sends = append(o.sends, sent(kOther, load.KindOriginal, charge, nil, client.ErrResultTimeout))
				o.deadLetters = append(o.deadLetters, client.DeadLetter{Key: kOther, Effect: "none", DeadLettered: t0.Add(time.Second)})
				o.rejected[kOther] = []messages.Result{{Key: kOther, Kind: charge.Kind(), Status: messages.StatusRejected, Code: messages.CodeDeadLettered}}
				o.provider.Charges[kOther] = messages.ChargeData{ChargeID: "ch_9"}
			},
			want: DeadLetters, says: "but the provider holds",
		},
		"a dead_lettered answer without its dead letter": {
			breakIt: func(o *observed) {
				o.sends = append(o.sends, sent(kOther, load.KindOriginal, add, nil, client.ErrResultTimeout))
				o.rejected[kOther] = []messages.Result{{Key: kOther, Kind: add.Kind(), Status: messages.StatusRejected, Code: messages.CodeDeadLettered}}
			},
			want: DeadLetters, says: "no such dead letter", also: Answered,
		},
		"a re-drive after a dead letter may succeed": {
			breakIt: func(o *observed) {
				o.deadLetters = append(o.deadLetters, client.DeadLetter{Key: kCart, Effect: "none", DeadLettered: t0.Add(-time.Second)})
			},
		},
		"a cart holding an add twice": {
			breakIt: func(o *observed) { o.carts["c1"]["S"] = 4 },
			want:    Carts, says: "holds 4",
		},
		"a cart nobody added to": {
			breakIt: func(o *observed) { o.carts["c9"] = map[string]int64{"X": 1} },
			want:    Carts, says: "cart c9",
		},
		"a poison message never answered": {
			breakIt: func(o *observed) {
				o.poison = append(o.poison, poisonSent{What: "no key", ReplyTo: "chaos.reply.x.1", Want: messages.CodeInvalidKey, Acked: true})
			},
			want: Answered, says: "never answered",
		},
		"a poison message refused for another reason": {
			breakIt: func(o *observed) {
				o.poison = append(o.poison, poisonSent{What: "no key", ReplyTo: "chaos.reply.x.1", Want: messages.CodeInvalidKey, Acked: true})
				o.replies["chaos.reply.x.1"] = []messages.Result{{Status: messages.StatusRejected, Code: messages.CodeInvalidPayload}}
			},
			want: Answered, says: "want rejected/invalid_key",
		},
		"a poison message refused as it must be": {
			breakIt: func(o *observed) {
				o.poison = append(o.poison, poisonSent{What: "no key", ReplyTo: "chaos.reply.x.1", Want: messages.CodeInvalidKey, Acked: true})
				o.replies["chaos.reply.x.1"] = []messages.Result{{Status: messages.StatusRejected, Code: messages.CodeInvalidKey}}
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o := clean()
			tc.breakIt(o)
			a := newAuditor(o)
			a.check()
			for _, inv := range Invariants {
				if inv == tc.also {
					require.NotEmpty(t, a.violations[inv], "%s catches it too", inv)
					continue
				}
				if inv == tc.want {
					require.NotEmpty(t, a.violations[inv], "%s must catch it", inv)
					require.Contains(t, strings.Join(a.violations[inv], "\n"), tc.says)
					continue
				}
				require.Empty(t, a.violations[inv], "%s", inv)
			}
		})
	}
}

func TestAuditor_Stats(t *testing.T) {
	t.Parallel()
	a := newAuditor(clean())
	a.check()
	require.Equal(t, Stats{Commands: 3, Sends: 3, Succeeded: 3, ExtraCalls: 1}, a.stats)
}

// TestScanOutput: race reports and panics in a worker's output are found,
// with what follows them; ordinary logs are not.
func TestScanOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		out   string
		found string
	}{
		"quiet":   {out: "time=x level=INFO msg=\"worker running\"\ntime=x level=WARN msg=\"NATS disconnected\"\n"},
		"race":    {out: "time=x level=INFO msg=a\n==================\nWARNING: DATA RACE\nWrite at 0x00c by goroutine 7:\n  main.f()\n", found: "a race report"},
		"panic":   {out: "panic: runtime error: index out of range\n\ngoroutine 1 [running]:\n", found: "a panic"},
		"fatal":   {out: "fatal error: concurrent map writes\n", found: "a panic"},
		"handled": {out: "time=x level=ERROR msg=\"delivery panicked; redelivering\" key=k\n", found: "a recovered panic"},
	} {
		w := &worker{n: 1, log: filepath.Join(dir, name+".log")}
		require.NoError(t, os.WriteFile(w.log, []byte(tc.out), 0o600))
		got := scanOutput(w)
		if tc.found == "" {
			require.Empty(t, got, name)
			continue
		}
		require.Len(t, got, 1, name)
		require.Contains(t, got[0], tc.found, name)
	}
}

// TestResult_Passed: a control passes only by showing what it must.
func TestResult_Passed(t *testing.T) {
	t.Parallel()
	sc := &Scenario{Name: "s"}
	ctl := &Scenario{Name: "c", Control: &Control{Expect: []Invariant{Agree, Carts}}}
	require.True(t, (&Result{Scenario: sc, Violations: map[Invariant][]string{}}).Passed())
	require.False(t, (&Result{Scenario: sc, Violations: map[Invariant][]string{Carts: {"x"}}}).Passed())
	require.False(t, (&Result{Scenario: ctl, Violations: map[Invariant][]string{}}).Passed())
	require.False(t, (&Result{Scenario: ctl, Violations: map[Invariant][]string{Agree: {"x"}}}).Passed(), "every expected violation")
	require.True(t, (&Result{Scenario: ctl, Violations: map[Invariant][]string{Agree: {"x"}, Carts: {"y"}, Charges: {"z"}}}).Passed())
	require.False(t, (&Result{Scenario: ctl, Violations: map[Invariant][]string{Agree: {"x"}, Carts: {"y"}, Workers: {"race"}}}).Passed(),
		"a race is a bug in any setting")
}

func TestWriteReport(t *testing.T) {
	t.Parallel()
	sc := &Scenario{Name: "worker-kill", Proves: "crashes"}
	ctl := &Scenario{Name: "redis-no-persistence", Proves: "forgets", Control: &Control{Expect: []Invariant{Agree}}}
	results := []*Result{
		{Scenario: sc, Start: t0, Stats: Stats{Commands: 10}, Violations: map[Invariant][]string{},
			Faults: []Fault{{Kind: "worker SIGKILL", Target: "worker 1", At: t0.Add(time.Second), Healed: t0.Add(2 * time.Second), Recovery: 30 * time.Millisecond}}},
		{Scenario: ctl, Start: t0, Violations: map[Invariant][]string{}},
	}
	var md strings.Builder
	WriteReport(&md, ReportMeta{Started: t0, Duration: time.Second, Rate: 10}, results, true)
	for _, want := range []string{"| worker-kill | 10 |", "| 1 | worker SIGKILL | worker 1 | +1.0s | 1s | 30ms |", "NOT SHOWN", "FAIL: violation not shown",
		"1 scenarios: 10 commands, 1 faults injected, 0 violations. 0 of 1 negative controls"} {
		require.Contains(t, md.String(), want)
	}
}
