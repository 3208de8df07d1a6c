package cart_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/cart"
	"github.com/idempay/idempay/pkg/processor"
)

// The effect names the contract's cart, with a hash tag so that its applied
// hash (on a Redis Cluster) is the one layout documents, in the same slot.
func TestOperation_Effect(t *testing.T) {
	t.Parallel()
	out, err := cart.New("p:").Handle(t.Context(), &processor.Call[messages.CartAddRequest]{
		Command: messages.CartAddRequest{CartID: "cart_7", SKU: "SKU-1", Quantity: 2}})
	require.NoError(t, err)
	require.Equal(t, &processor.Effect{Key: "p:cart:{cart_7}", Field: "SKU-1", By: 2, TTL: cart.TTLDefault}, out.Effect)
	require.NoError(t, out.Effect.Validate())
	require.Equal(t, layout.CartApplied("p:", "cart_7", "k", "fp"), dedupe.AppliedKey(out.Effect.Key, "k", "fp"))
}
