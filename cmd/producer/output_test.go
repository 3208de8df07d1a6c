package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// An outcome_unknown answer is shown as "not known yet, re-send the same
// key", and exits 3 (no answer yet), never 1 (failed) or 2 (rejected).
func TestOutput_OutcomeUnknownIsNotAFailure(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	o := &output{stdout: &stdout, stderr: &stderr}
	res := messages.Result{Key: "0b6e4c1e-7d2a-4f5b-9c3e-1a2b3c4d5e6f", Kind: messages.KindPaymentCharge,
		Status: messages.StatusRejected, Code: messages.CodeOutcomeUnknown}
	err := o.answer(false, res.Key, &client.Reply{Result: res}, &messages.RejectError{Code: messages.CodeOutcomeUnknown})
	var ae *answerError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, exitNoAnswer, ae.code)
	require.Contains(t, stdout.String(), "not known yet (not a failure): send it again with the SAME key")

	stdout.Reset()
	res.Code = messages.CodeDeadLettered
	err = o.answer(false, res.Key, &client.Reply{Result: res}, &messages.RejectError{Code: messages.CodeDeadLettered})
	require.ErrorAs(t, err, &ae)
	require.Equal(t, exitRejected, ae.code)
	require.Contains(t, stdout.String(), "certainly not done")
}
