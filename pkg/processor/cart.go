package processor

import (
	"context"
	"encoding/json"

	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// CartPrefixDefault prefixes a cart's hash: cart:{<cart_id>}.
const CartPrefixDefault = "cart:"

// CartKey returns the Redis key of a cart's hash (SKU -> quantity).
func CartKey(keyPrefix, cartID string) string {
	return keyPrefix + CartPrefixDefault + "{" + cartID + "}"
}

// CartAddHandler returns the cart.add handler. Its whole effect, HINCRBY on
// cart:{<cart_id>}, is applied by the processor's commit script together
// with the idempotency record, so there is no moment where the cart changed
// and the key is not marked.
//
// On Redis Cluster the cart hash and the record hash to different slots and
// the script is refused (CROSSSLOT); cart.add needs a single node or
// Sentinel.
func CartAddHandler() Handler { return cartAddHandler{} }

type cartAddHandler struct{}

func (cartAddHandler) Kind() string                 { return messages.TypeCartAdd }
func (cartAddHandler) NewCommand() messages.Command { return &messages.CartAddRequest{} }

func (cartAddHandler) Handle(_ context.Context, call *Call) (Outcome, error) {
	req := call.Command.(*messages.CartAddRequest) //nolint:errcheck,forcetypeassert // always NewCommand's type; a bug panics, recovered as a PanicError
	data := struct {
		CartID   string          `json:"cart_id"`
		SKU      string          `json:"sku"`
		Quantity json.RawMessage `json:"quantity"`
	}{req.CartID, req.SKU, json.RawMessage(dedupe.Placeholder)}
	o := Succeeded(data)
	o.Effect = &dedupe.Effect{Key: CartKey(call.KeyPrefix, req.CartID), Field: req.SKU, By: req.Quantity}
	return o, nil
}
