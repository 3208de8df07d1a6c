package messages

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestContractDoc keeps docs/contract.md in step with this package: every
// command kind, answer code and header defined here is documented there.
func TestContractDoc(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/contract.md")
	require.NoError(t, err)
	text := string(doc)
	for _, name := range []string{
		KindPaymentCharge, KindCartAdd, KindPaymentRefund,
		CodeInvalidKey, CodeInvalidPayload, CodeUnknownCommand, CodePayloadTooLarge, CodeKeyReused,
		CodeDeadLettered, CodeOutcomeUnknown, CodeCardDeclined, CodeChargeNotFound, CodeChargeNotRefundable,
		CodeRefundExceedsCharge, CodeKeyVoided,
		HeaderMsgID, HeaderDlqVoided, HeaderReplyTo, HeaderDlqKey, HeaderDlqReason, HeaderDlqDeliveries, HeaderDlqEffect, HeaderDlqStreamSeq, HeaderDlqPublished,
		CommandStreamDefault, ResultStreamDefault, DeadLetterStreamDefault, ConsumerDefault,
	} {
		require.Contains(t, text, "`"+name+"`", "docs/contract.md does not name %q", name)
	}
	for _, field := range []string{"key", "command", "status", "code", "message", "data", "attempts", "replayed", "processed_at", "fingerprint"} {
		require.Contains(t, text, `"`+field+`"`, "the answer example has no field %q", field)
	}
}
