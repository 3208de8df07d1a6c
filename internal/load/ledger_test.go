package load_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// TestCheckLedger judges through internal/ledger: an outcome the provider
// does not hold, a declined charge it charged, and a refund above the
// charge are mismatches; the truth is none.
func TestCheckLedger(t *testing.T) {
	t.Parallel()
	env, err := testenv.Shared()
	require.NoError(t, err)
	rdb, err := testenv.ConnectRedis(env.RedisURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := testenv.Namespace() + ":"
	sim := layout.Sim(prefix, false)
	ctx := t.Context()

	const good, lied, declined, refund = "0b6e4c1e-6f2a-4b8e-9d3c-1a2b3c4d5e6f", "1c7f5d2f-7a3b-4c9f-8e4d-2b3c4d5e6f70",
		"2d8a6e3a-8b4c-4daf-9f5e-3c4d5e6f7081", "3e9b7f4b-9c5d-4eba-8a6f-4d5e6f708192"
	req := messages.ChargeRequest{AccountID: "acct_1", Amount: 1000, Currency: "EUR"}
	charge := messages.ChargeData{ChargeID: "ch_1", AccountID: "acct_1", Amount: 1000, Currency: "EUR"}
	refundReq := messages.RefundRequest{ChargeKey: good, Amount: 1200}
	refunded := messages.RefundData{RefundID: "re_1", ChargeID: "ch_1", Amount: 1200, Currency: "EUR", RefundedTotal: 1200}
	raw := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return string(b)
	}
	answer := func(key string, cmd messages.Command, status messages.Status, code string, data any) load.Answered {
		return load.Answered{Command: cmd, Result: messages.Result{Key: key, Kind: cmd.Kind(), Status: status, Code: code,
			Data: json.RawMessage(raw(data)), Fingerprint: messages.Fingerprint(cmd)}}
	}
	s := &load.Summary{Outcomes: map[string]load.Answered{
		good: answer(good, req, messages.StatusSucceeded, "", charge),
	}}
	require.NoError(t, rdb.HSet(ctx, sim.Charges, good, raw(charge)).Err())
	require.NoError(t, rdb.HSet(ctx, sim.Calls, good, 1).Err())
	l, err := load.CheckLedger(ctx, rdb, prefix, s)
	require.NoError(t, err)
	require.True(t, l.OK(), "%v", l.Mismatches)
	require.Equal(t, 1, l.Succeeded)

	s.Outcomes[lied] = answer(lied, req, messages.StatusSucceeded, "", charge)
	s.Outcomes[declined] = answer(declined, req, messages.StatusFailed, messages.CodeCardDeclined, nil)
	s.Outcomes[refund] = answer(refund, refundReq, messages.StatusSucceeded, "", refunded)
	require.NoError(t, rdb.HSet(ctx, sim.Calls, lied, 1, declined, 1).Err())
	require.NoError(t, rdb.HSet(ctx, sim.Charges, declined, raw(charge)).Err())
	require.NoError(t, rdb.HSet(ctx, sim.Refunds, refund, raw(refunded)).Err())
	require.NoError(t, rdb.HSet(ctx, sim.Refunded, good, 1200).Err())
	l, err = load.CheckLedger(ctx, rdb, prefix, s)
	require.NoError(t, err)
	require.Len(t, l.Mismatches, 4, "%v", l.Mismatches) // no charge; declined but charged; refunded above the charge, at the provider and in the answers
}
