package processor_test

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// TestLogs_NoPaymentFieldsAtInfo: at info level the worker's logs name
// keys, kinds and codes, never the payment fields of a command (account,
// description), whether it succeeds, is declined or is refused.
func TestLogs_NoPaymentFieldsAtInfo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	logs := &syncBuffer{}
	b.startWorker(t, nil, func(c *processor.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	const secretAccount, secretText = "acct_SECRET.4242", "gift for SECRET-PERSON" //nolint:gosec // test data, not a credential
	keys := []string{newKey(), newKey(), newKey()}
	b.publish(t, messages.KindPaymentCharge, keys[0], messages.ChargeRequest{AccountID: secretAccount, Amount: 100, Currency: "EUR", Description: secretText})
	b.publish(t, messages.KindPaymentCharge, keys[1], messages.ChargeRequest{AccountID: "decline_" + secretAccount, Amount: 100, Currency: "EUR", Description: secretText})
	b.publish(t, messages.KindPaymentCharge, keys[2], `{"account_id":"`+secretAccount+`!","amount":100,"currency":"EUR","description":"`+secretText+`"}`)
	for _, k := range keys {
		b.answers.waitAnswers(t, k, 1)
	}
	out := logs.String()
	require.Contains(t, out, keys[2], "the rejection is logged, by key")
	require.NotContains(t, out, "SECRET")
}
