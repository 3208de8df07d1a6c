package loadtest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// Audit checks a finished run as `make demo` does: every command answered,
// one outcome per key (load.Summary), a provider ledger and carts that
// agree with the outcomes (load.CheckLedger), and no charge beyond one per
// succeeded key in the whole of the deployment's ledger. It returns the
// ledger.
func (e *Env) Audit(tb testing.TB, s *load.Summary) *load.Ledger {
	tb.Helper()
	require.Empty(tb, s.Errors, "every send answered")
	require.Zero(tb, s.Unanswered, "every key answered")
	require.Empty(tb, s.Disagreeing, "one outcome per key")
	require.True(tb, s.OK(), "%+v", s)
	ledger, err := load.CheckLedger(context.Background(), e.RDB, e.Config.KeyPrefix, s)
	require.NoError(tb, err)
	require.True(tb, ledger.OK(), "ledger: %v", ledger.Mismatches)
	require.Equal(tb, ledger.Succeeded, ledger.Charged, "one provider charge per succeeded key")
	_, charges := e.SimLedger(tb)
	require.Len(tb, charges, ledger.Succeeded, "no charge the answers do not name")
	return ledger
}

// ReuseKeys sends, under up to n keys of s that have an outcome, another
// command than theirs, and checks that each is refused as a reused key
// (inside the dedupe window by the client, which finds the stored outcome
// at odds with it; after it by a worker) and that the stored outcome stays
// as it was. It returns how many it sent.
func (e *Env) ReuseKeys(tb testing.TB, c *client.Client, s *load.Summary, n int) int {
	tb.Helper()
	sent := 0
	for key, o := range s.Outcomes {
		if sent == n {
			break
		}
		var other messages.Command = messages.CartAddRequest{CartID: "reuse_" + e.NS, SKU: "SKU-REUSED", Quantity: 1}
		if o.Command.Kind() == messages.KindCartAdd {
			other = messages.ChargeRequest{AccountID: "acct_reuse", Amount: 1, Currency: "EUR"}
		}
		reply, err := c.Send(context.Background(), key, other)
		require.ErrorIs(tb, err, client.ErrKeyReused, "key %s reused: %+v", key, reply)
		got, err := c.Status(context.Background(), key)
		require.NoError(tb, err)
		require.Equal(tb, o.Result.Status, got.Status, key)
		require.JSONEq(tb, string(o.Result.Data), string(got.Data), key)
		sent++
	}
	n2, err := e.RDB.Exists(context.Background(), layout.Cart(e.Config.KeyPrefix, "reuse_"+e.NS)).Result()
	require.NoError(tb, err)
	require.Zero(tb, n2, "no reused key added to a cart")
	return sent
}
