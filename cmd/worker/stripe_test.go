package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/cli"
	"github.com/idempay/idempay/internal/testenv"
	"github.com/idempay/idempay/pkg/messages"
)

// stripeTestKey is the example key of Stripe's docs: stripe-mock takes any
// well-formed test key.
const stripeTestKey = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

// TestWorker_Stripe runs a worker process with PROVIDER=stripe against
// stripe-mock: a charge and its refund succeed on Stripe's API, and the
// worker never prints its key.
func TestWorker_Stripe(t *testing.T) {
	t.Parallel()
	mock, err := testenv.StartStripeMock()
	require.NoError(t, err)
	t.Cleanup(mock.Shutdown)
	d := newDeployment(t, "PROVIDER=stripe", "STRIPE_API_KEY="+stripeTestKey, "STRIPE_API_BASE="+mock.URL)
	w := d.start(t)
	got := d.listen(t)

	chargeKey, refundKey := newKey(), newKey()
	d.publish(t, messages.KindPaymentCharge, chargeKey, messages.ChargeRequest{AccountID: "acct_e2e", Amount: 1999, Currency: "EUR"})
	r := got.wait(t, chargeKey, 1)[0]
	require.Equal(t, messages.StatusSucceeded, r.Status, "%+v", r)
	var c messages.ChargeData
	require.NoError(t, json.Unmarshal(r.Data, &c))
	require.True(t, strings.HasPrefix(c.ChargeID, "pi_"), "a PaymentIntent: %q", c.ChargeID)

	d.publish(t, messages.KindPaymentRefund, refundKey, messages.RefundRequest{ChargeKey: chargeKey, Amount: 500})
	r = got.wait(t, refundKey, 1)[0]
	require.Equal(t, messages.StatusSucceeded, r.Status, "%+v", r)

	w.stop(t)
	require.Contains(t, w.out.String(), "provider=stripe")
	require.NotContains(t, w.out.String(), stripeTestKey, "the key is never logged")
}

// TestWorker_StripeFlags: --provider stripe without a key is a usage error
// naming the variable; the help names every Stripe variable.
func TestWorker_StripeFlags(t *testing.T) {
	t.Parallel()
	run := func(args []string, env ...string) (string, int) {
		cmd := exec.CommandContext(t.Context(), workerBin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			return out.String(), ee.ExitCode()
		}
		return out.String(), 0
	}
	out, code := run([]string{"--provider", "stripe"}, "STRIPE_API_KEY=")
	require.Equal(t, cli.ExitUsage, code, out)
	require.Contains(t, out, "--provider stripe needs --stripe-api-key (STRIPE_API_KEY)")

	out, code = run(nil, "PROVIDER=stripe", "STRIPE_API_KEY="+stripeTestKey, "STRIPE_API_BASE=not a url")
	require.NotEqual(t, 0, code)
	require.Contains(t, out, "Config.APIBase")
	require.NotContains(t, out, stripeTestKey)

	out, code = run([]string{"--help"})
	require.Equal(t, 0, code)
	for _, v := range []string{"$STRIPE_API_KEY", "$STRIPE_API_BASE", "$STRIPE_PAYMENT_METHOD", "or stripe"} {
		require.Contains(t, out, v)
	}
}
