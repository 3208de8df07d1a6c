package ledger_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/pkg/messages"
)

const (
	chargeKey = "0b6e4c1e-6f2a-4b8e-9d3c-1a2b3c4d5e6f"
	refundKey = "1c7f5d2f-7a3b-4c9f-8e4d-2b3c4d5e6f70"
	otherKey  = "2d8a6e3a-8b4c-4daf-9f5e-3c4d5e6f7081"
)

var (
	t0      = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	chargeC = messages.ChargeRequest{AccountID: "acct_1", Amount: 1000, Currency: "EUR"}
	charged = messages.ChargeData{ChargeID: "ch_1", AccountID: "acct_1", Amount: 1000, Currency: "EUR"}
)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func succeeded(key string, cmd messages.Command, data any) *messages.Result {
	raw, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	return &messages.Result{Key: key, Kind: cmd.Kind(), Status: messages.StatusSucceeded, Data: raw,
		Attempts: 1, ProcessedAt: t0, Fingerprint: messages.Fingerprint(cmd)}
}

func failed(key string, cmd messages.Command, code string) *messages.Result {
	return &messages.Result{Key: key, Kind: cmd.Kind(), Status: messages.StatusFailed, Code: code, Data: json.RawMessage("null"),
		Attempts: 1, ProcessedAt: t0, Fingerprint: messages.Fingerprint(cmd)}
}

func rejected(cmd messages.Command, code string, processed time.Time) *messages.Result {
	return &messages.Result{Key: chargeKey, Kind: cmd.Kind(), Status: messages.StatusRejected, Code: code, ProcessedAt: processed}
}

func send(key string, cmd messages.Command, role ledger.Role, from, to int, told *messages.Result) ledger.Send {
	return ledger.Send{Key: key, Command: cmd, Role: role, At: at(from), Done: at(to), Accepted: true, PublishAttempts: 1, Told: told}
}

// gatewaySend is a send through the gateway whose last request began at
// from.
func gatewaySend(cmd messages.Command, role ledger.Role, from, to int, told *messages.Result) ledger.Send {
	return ledger.Send{Key: chargeKey, Command: cmd, Role: role, At: at(from), Done: at(to), Accepted: true, Gateway: true, LastPublish: at(from), Told: told}
}

// deadLettered is a key told dead_lettered at 900ms, its dead letter
// copied at 890ms.
func deadLettered() *ledger.Input {
	return &ledger.Input{
		Sends:       []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 900, rejected(chargeC, messages.CodeDeadLettered, at(895)))},
		DeadLetters: []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "none", At: at(890)}},
		Calls:       []ledger.Call{},
		Provider:    ledger.Provider{Charges: map[string]messages.ChargeData{}},
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		input func() *ledger.Input
		want  map[ledger.Invariant]int
	}{
		"Clean": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends: []ledger.Send{
						send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged)),
						{Key: chargeKey, Command: chargeC, Role: ledger.RoleResend, At: at(200), Done: at(210), Accepted: true, Duplicate: true, PublishAttempts: 1,
							Told: succeeded(chargeKey, chargeC, charged)},
					},
					Calls:    []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "ok", Start: at(10), End: at(20), Effect: true, EffectAt: at(15)}},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
					Queue:    &ledger.Queue{},
				}
			},
		},
		// Issue 17 item 1: a lost response, then transient errors, then
		// dead_lettered.
		"DeadLetteredAfterAnEffect": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.Calls = []ledger.Call{
					{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "lost_response", Start: at(10), End: at(20), Effect: true, EffectAt: at(15)},
					{Key: chargeKey, Op: ledger.OpCharge, N: 2, Behaviour: "transient", Start: at(40), End: at(41)},
				}
				in.Provider.Charges[chargeKey] = charged
				return in
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		// A call frozen in flight that lands after the dead letter.
		"DeadLetteredThenAFrozenCallLands": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.Calls = []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "frozen", Start: at(10), End: at(300), Effect: true, EffectAt: at(4000)}}
				in.Provider.Charges[chargeKey] = charged
				return in
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		// A re-drive after the dead letter may charge: its call started
		// after it.
		"ReDriveAfterTheDeadLetterCharges": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.Sends = append(in.Sends, send(chargeKey, chargeC, ledger.RoleResend, 2000, 2100, succeeded(chargeKey, chargeC, charged)))
				in.Calls = []ledger.Call{
					{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "transient", Start: at(10), End: at(11)},
					{Key: chargeKey, Op: ledger.OpCharge, N: 2, Behaviour: "ok", Start: at(2010), End: at(2020), Effect: true, EffectAt: at(2015)},
				}
				in.Provider.Charges[chargeKey] = charged
				return in
			},
		},
		// Without a call log: the effect counts against the dead letter
		// unless a re-send re-drove the key after it.
		"NoCallLogDeadLetteredCharged": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.Calls = nil
				in.Provider.Charges[chargeKey] = charged
				return in
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"NoCallLogReDriven": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.Calls = nil
				in.Sends = append(in.Sends, send(chargeKey, chargeC, ledger.RoleResend, 2000, 2100, succeeded(chargeKey, chargeC, charged)))
				in.Provider.Charges[chargeKey] = charged
				return in
			},
		},
		// The answer lost, its dead letter still says "none".
		"DeadLetterCopyThenCharged": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.Sends[0].Told = nil
				in.Calls = []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "lost_response", Start: at(10), End: at(20), Effect: true, EffectAt: at(15)}}
				in.Provider.Charges[chargeKey] = charged
				return in
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1, ledger.Stranded: 1}, // and the message was never answered
		},
		"DeadLetteredWithoutACopy": {
			input: func() *ledger.Input {
				in := deadLettered()
				in.DeadLetters = []ledger.DeadLetter{} // read, and empty
				return in
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"SucceededWithoutACharge": {
			input: func() *ledger.Input {
				return &ledger.Input{Sends: []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged))}}
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"SucceededWithAnotherCharge": {
			input: func() *ledger.Input {
				other := charged
				other.ChargeID = "ch_2"
				return &ledger.Input{
					Sends:    []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, other))},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"DeclinedButCharged": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:    []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, failed(chargeKey, chargeC, messages.CodeCardDeclined))},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"OutcomesDisagree": {
			input: func() *ledger.Input {
				in := &ledger.Input{
					Sends:    []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged))},
					Stored:   map[string]messages.Result{chargeKey: *failed(chargeKey, chargeC, messages.CodeCardDeclined)},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
				return in
			},
			want: map[ledger.Invariant]int{ledger.OneOutcome: 1},
		},
		// Issue 17 item 2: a client takes another message's refusal.
		"ToldKeyReusedForItsOwnOutcome": {
			input: func() *ledger.Input {
				s := send(chargeKey, chargeC, ledger.RoleResend, 500, 900, rejected(chargeC, messages.CodeKeyReused, at(890)))
				s.Duplicate, s.KeyReused = true, true
				return &ledger.Input{
					Sends:    []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged)), s},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.OneOutcome: 1},
		},
		"AnswerOfAnotherBody": {
			input: func() *ledger.Input {
				other := chargeC
				other.Amount++
				reuse := send(chargeKey, other, ledger.RoleReuse, 200, 300, succeeded(chargeKey, chargeC, charged))
				reuse.Duplicate = true
				return &ledger.Input{
					Sends: []ledger.Send{
						send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged)),
						reuse,
					},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.OneOutcome: 1},
		},
		"AcceptedNeverAnswered": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends: []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, nil)},
					Queue: &ledger.Queue{Messages: 1, AckPending: 1},
				}
			},
			want: map[ledger.Invariant]int{ledger.Stranded: 2},
		},
		"UnknownNotJudgedBeforeV12": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:       []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 900, rejected(chargeC, messages.CodeOutcomeUnknown, at(895)))},
					DeadLetters: []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "unknown", At: at(890)}},
					Provider:    ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
		},
		"UnknownUnresolved": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:             []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 900, rejected(chargeC, messages.CodeOutcomeUnknown, at(895)))},
					DeadLetters:       []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "unknown", At: at(890)}},
					Provider:          ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
					RequireResolution: true,
				}
			},
			want: map[ledger.Invariant]int{ledger.Stranded: 1},
		},
		"UnknownResolved": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:             []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 900, rejected(chargeC, messages.CodeOutcomeUnknown, at(895)))},
					Heard:             []ledger.Heard{{Subject: "result." + chargeKey, At: at(5000), Result: *succeeded(chargeKey, chargeC, charged)}},
					DeadLetters:       []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "unknown", At: at(890)}},
					Provider:          ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
					RequireResolution: true,
				}
			},
		},
		// Seed 495 with the clients' link slowed: the resolution's
		// dead_lettered was heard at 4750ms, and a client whose link was
		// slow returned the outcome_unknown decided at 4100ms only at
		// 4817ms. Decided after the unknown, the dead letter resolves it.
		"UnknownToldLateAfterItsResolution": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:             []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 4817, rejected(chargeC, messages.CodeOutcomeUnknown, at(4100)))},
					Heard:             []ledger.Heard{{Subject: "rejected." + chargeKey, At: at(4750), Result: *rejected(chargeC, messages.CodeDeadLettered, at(4749))}},
					DeadLetters:       []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "unknown", At: at(4095)}},
					Calls:             []ledger.Call{},
					Provider:          ledger.Provider{Charges: map[string]messages.ChargeData{}},
					RequireResolution: true,
				}
			},
		},
		// A resolution's dead_lettered (after a copy with effect unknown)
		// speaks from when it was processed: a frozen call that lands
		// before it and charges is a violation.
		"ResolvedDeadLetteredAfterACharge": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:             []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 900, rejected(chargeC, messages.CodeOutcomeUnknown, at(895)))},
					Heard:             []ledger.Heard{{Subject: "rejected." + chargeKey, At: at(5000), Result: *rejected(chargeC, messages.CodeDeadLettered, at(4990))}},
					DeadLetters:       []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "unknown", At: at(890)}},
					Calls:             []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "frozen", Start: at(10), End: at(300), Effect: true, EffectAt: at(3000)}},
					Provider:          ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
					RequireResolution: true,
				}
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"RefundsAboveTheCharge": {
			input: func() *ledger.Input {
				r := messages.RefundRequest{ChargeKey: chargeKey, Amount: 800}
				r2 := messages.RefundRequest{ChargeKey: chargeKey, Amount: 700}
				d1 := messages.RefundData{RefundID: "re_1", ChargeID: "ch_1", Amount: 800, Currency: "EUR", RefundedTotal: 800}
				d2 := messages.RefundData{RefundID: "re_2", ChargeID: "ch_1", Amount: 700, Currency: "EUR", RefundedTotal: 1500}
				return &ledger.Input{
					Sends: []ledger.Send{
						send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged)),
						send(refundKey, r, ledger.RoleFirst, 200, 300, succeeded(refundKey, r, d1)),
						send(otherKey, r2, ledger.RoleFirst, 200, 300, succeeded(otherKey, r2, d2)),
					},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged},
						Refunds: map[string]messages.RefundData{refundKey: d1, otherKey: d2}, Refunded: map[string]int64{chargeKey: 1500}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Refunds: 2},
		},
		"RefusedAsExceedingWhenItDidNot": {
			input: func() *ledger.Input {
				r := messages.RefundRequest{ChargeKey: chargeKey, Amount: 500}
				return &ledger.Input{
					Sends: []ledger.Send{
						send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged)),
						send(refundKey, r, ledger.RoleFirst, 200, 300, failed(refundKey, r, messages.CodeRefundExceedsCharge)),
					},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Refunds: 1},
		},
		"TwoCallsTookEffect": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends: []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged))},
					Calls: []ledger.Call{
						{Key: chargeKey, Op: ledger.OpCharge, N: 1, Start: at(10), Effect: true, EffectAt: at(11)},
						{Key: chargeKey, Op: ledger.OpCharge, N: 2, Start: at(20), Effect: true, EffectAt: at(21)},
					},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.DoubleCharge: 1},
		},
		"ChargeForAKeyNeverSent": {
			input: func() *ledger.Input {
				return &ledger.Input{
					Sends:    []ledger.Send{send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged))},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged, otherKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.DoubleCharge: 1},
		},
		// Seed 524 with the clients' link cut: the first send's publish
		// was swallowed by a hang, a re-use with another body reached the
		// stream first and took the key (then was dead-lettered), and the
		// first send's repeated publish (after the window: a message of
		// its own) was refused idempotency_key_reused - its answer, told
		// to it just before it returned.
		"FirstSendsBodyLostTheKeyToAReuse": {
			input: func() *ledger.Input {
				other := chargeC
				other.Amount++
				first := send(chargeKey, chargeC, ledger.RoleFirst, 0, 3100, rejected(chargeC, messages.CodeKeyReused, at(3099)))
				first.PublishAttempts, first.KeyReused = 2, true
				first.Told.Fingerprint = messages.Fingerprint(chargeC)
				dead := rejected(other, messages.CodeDeadLettered, at(2600))
				dead.Fingerprint = messages.Fingerprint(other)
				return &ledger.Input{
					Sends:       []ledger.Send{first, send(chargeKey, other, ledger.RoleReuse, 1000, 2600, dead)},
					DeadLetters: []ledger.DeadLetter{{Key: chargeKey, Kind: other.Kind(), Effect: "none", At: at(2590)}},
					Calls:       []ledger.Call{},
					Provider:    ledger.Provider{Charges: map[string]messages.ChargeData{}},
				}
			},
		},
		// The gateway's dead_lettered problem says nothing of when it was
		// decided: the copy it announces does, and without one (the
		// resolver's answer) the moment it was heard.
		"GatewayToldDeadLetteredOfAChargedKey": {
			input: func() *ledger.Input {
				told := rejected(chargeC, messages.CodeDeadLettered, time.Time{})
				told.Fingerprint = messages.Fingerprint(chargeC)
				s := gatewaySend(chargeC, ledger.RoleFirst, 0, 900, told)
				return &ledger.Input{
					Sends:    []ledger.Send{s},
					Calls:    []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "lost_response", Start: at(100), End: at(200), Effect: true, EffectAt: at(150)}},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		// A request that kept asking (504 publish_unconfirmed) and ended
		// without an answer may have stored a message at any time of it:
		// that message's charge, after another send's dead letter, is a
		// re-drive.
		"GatewayUnansweredSendReDroveTheKey": {
			input: func() *ledger.Input {
				in := deadLettered()
				s := gatewaySend(chargeC, ledger.RoleResend, 2000, 9000, nil)
				s.LastPublish = s.Done
				in.Sends = append(in.Sends, s)
				in.Stored = map[string]messages.Result{chargeKey: *succeeded(chargeKey, chargeC, charged)}
				in.Calls = []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "ok", Start: at(8000), End: at(8100), Effect: true, EffectAt: at(8050)}}
				in.Provider.Charges[chargeKey] = charged
				return in
			},
		},
		"GatewaySentAnAcceptedCommandsLocationTo404": {
			input: func() *ledger.Input {
				s := gatewaySend(chargeC, ledger.RoleFirst, 0, 5000, nil)
				s.Broken = "answered 202 Accepted, then its Location answered 404"
				in := deadLettered()
				in.Sends = append(in.Sends, s)
				return in
			},
			want: map[ledger.Invariant]int{ledger.Stranded: 1},
		},
		// Seed 718 through the gateway, before the client's fix: the first
		// send's publish, repeated on a hung link, landed past the dead
		// letter of the resend's message and re-drove the key; the first
		// send was told that dead letter, and its own message charged.
		// Its own late publish is no re-drive that excuses its answer; the
		// resend's (true) answer is excused by it.
		"ToldAnotherMessagesDeadLetterWhileItsOwnCharged": {
			input: func() *ledger.Input {
				told := func() *messages.Result {
					r := rejected(chargeC, messages.CodeDeadLettered, time.Time{})
					r.Fingerprint = messages.Fingerprint(chargeC)
					return r
				}
				first := gatewaySend(chargeC, ledger.RoleFirst, 344, 3430, told())
				first.LastPublish = at(3430)
				resend := gatewaySend(chargeC, ledger.RoleResend, 1416, 1803, told())
				return &ledger.Input{
					Sends:       []ledger.Send{first, resend},
					DeadLetters: []ledger.DeadLetter{{Key: chargeKey, Kind: chargeC.Kind(), Effect: "none", At: at(1802)}},
					Calls:       []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 13, Behaviour: "ok", Start: at(3680), End: at(3681), Effect: true, EffectAt: at(3680)}},
					Provider:    ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Claimed: 1},
		},
		"ReuseNeverRefused": {
			input: func() *ledger.Input {
				other := chargeC
				other.Amount++
				return &ledger.Input{
					Sends: []ledger.Send{
						send(chargeKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(chargeKey, chargeC, charged)),
						send(chargeKey, other, ledger.RoleReuse, 2000, 2100, nil),
					},
					Provider: ledger.Provider{Charges: map[string]messages.ChargeData{chargeKey: charged}},
				}
			},
			want: map[ledger.Invariant]int{ledger.Stranded: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rep := ledger.Check(tc.input())
			got := map[ledger.Invariant]int{}
			for _, inv := range ledger.Invariants {
				if n := rep.Count(inv); n > 0 {
					got[inv] = n
				}
			}
			want := tc.want
			if want == nil {
				want = map[ledger.Invariant]int{}
			}
			require.Equal(t, want, got, "violations: %v", rep.Violations)
		})
	}
}

func TestCheck_Stats(t *testing.T) {
	t.Parallel()
	in := deadLettered()
	in.Sends = append(in.Sends, send(otherKey, chargeC, ledger.RoleFirst, 0, 100, succeeded(otherKey, chargeC, charged)))
	in.Provider.Charges[otherKey] = charged
	in.Calls = append(in.Calls, ledger.Call{Key: otherKey, Op: ledger.OpCharge, N: 1, Start: at(10), Effect: true, EffectAt: at(11)})
	rep := ledger.Check(in)
	require.True(t, rep.OK(), "violations: %v", rep.Violations)
	require.Equal(t, 2, rep.Stats.Keys)
	require.Equal(t, map[string]int{"succeeded": 1, "dead_lettered": 1}, rep.Stats.Final)
	require.Equal(t, 1, rep.Stats.Charged)
}

// TestCheck_Carts: a cart line holds the sum of its keys' distinct
// succeeded adds: a key re-sent and replayed counts once, a failed add not
// at all, and a line nobody added to is a violation too.
func TestCheck_Carts(t *testing.T) {
	t.Parallel()
	add := messages.CartAddRequest{CartID: "c1", SKU: "S", Quantity: 2}
	addData := messages.CartAddData{CartID: "c1", SKU: "S", Quantity: 2}
	input := func(carts map[string]map[string]int64) *ledger.Input {
		return &ledger.Input{
			Sends: []ledger.Send{
				send(chargeKey, add, ledger.RoleFirst, 0, 100, succeeded(chargeKey, add, addData)),
				send(chargeKey, add, ledger.RoleResend, 200, 210, succeeded(chargeKey, add, addData)), // replayed: counts once
				send(otherKey, add, ledger.RoleFirst, 0, 100, succeeded(otherKey, add, addData)),
				send(refundKey, add, ledger.RoleFirst, 0, 100, failed(refundKey, add, "out_of_stock")),
			},
			Provider: ledger.Provider{Charges: map[string]messages.ChargeData{}},
			Carts:    carts,
		}
	}
	rep := ledger.Check(input(map[string]map[string]int64{"c1": {"S": 4}}))
	require.True(t, rep.OK(), "%v", rep.Violations)
	require.Equal(t, 1, rep.Stats.CartLines)
	require.Equal(t, int64(4), rep.Stats.CartUnits)
	require.Equal(t, int64(4), rep.Stats.CartWant)

	rep = ledger.Check(input(map[string]map[string]int64{"c1": {"S": 6}}))
	require.Equal(t, 1, rep.Count(ledger.Carts), "an add applied twice: %v", rep.Violations)
	require.Contains(t, rep.Violations[0].Text, "holds 6, the distinct succeeded adds sum to 4")

	rep = ledger.Check(input(map[string]map[string]int64{"c1": {"S": 4}, "c9": {"X": 1}}))
	require.Equal(t, 1, rep.Count(ledger.Carts), "a line nobody added to: %v", rep.Violations)
	require.Contains(t, rep.Violations[0].Text, "cart c9, X: holds 1")

	rep = ledger.Check(input(nil))
	require.True(t, rep.OK(), "carts not read: not judged")
	require.Zero(t, rep.Stats.CartLines)
}

// TestInput_History tells a key's story in time order, with what it holds
// at the end, and nothing of another key.
func TestInput_History(t *testing.T) {
	t.Parallel()
	in := deadLettered()
	in.Calls = []ledger.Call{{Key: chargeKey, Op: ledger.OpCharge, N: 1, Behaviour: "lost_response", Start: at(100), End: at(200), Effect: true, EffectAt: at(150)}}
	in.Provider.Charges[chargeKey] = charged
	in.Heard = []ledger.Heard{{Subject: "result." + otherKey, At: at(50), Result: *succeeded(otherKey, chargeC, charged)}}
	in.Records = map[string]ledger.Record{}
	h := in.History(chargeKey)
	require.Len(t, h, 5, "%s", strings.Join(h, "\n"))
	require.True(t, strings.HasPrefix(h[0], "+0.000s send (first, body "), h[0])
	require.Contains(t, h[0], "through pkg/client: charge acct_1 1000 EUR")
	require.Contains(t, h[0], "returned at +0.900s told rejected/dead_lettered")
	require.Equal(t, "+0.100s provider charge #1 (lost_response) until +0.200s: took effect at +0.150s", h[1])
	require.Equal(t, "+0.890s dead-letter copy, Dlq-Effect none (its message published at (never))", h[2])
	require.Equal(t, "at the end, no record", h[3])
	require.Contains(t, h[4], `at the end, the provider holds: charge {"charge_id":"ch_1"`)
}
