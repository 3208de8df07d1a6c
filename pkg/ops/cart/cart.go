// Package cart owns the cart.add operation: an item added to a cart once
// per idempotency key.
package cart

import (
	"context"
	"encoding/json"

	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// Operation is cart.add. Its whole effect, HINCRBY on cart:{<cart_id>}, is
// applied by the engine's commit script together with the idempotency
// record, so there is no moment where the cart changed and the key is not
// completed, and no attempt can die half-way.
//
// On Redis Cluster the cart hash and the record hash to different slots and
// the script is refused (CROSSSLOT); cart.add needs a single node or
// Sentinel.
type Operation struct{ keyPrefix string }

// New returns the cart.add operation for the carts under keyPrefix (the
// deployment's REDIS_KEY_PREFIX).
func New(keyPrefix string) *Operation { return &Operation{keyPrefix: keyPrefix} }

// Register registers cart.add on mux, its effect in the commit.
func Register(mux *processor.Mux, keyPrefix string) {
	processor.Register(mux, New(keyPrefix), &processor.OpConfig{EffectInCommit: true})
}

// Handle implements processor.Operation. It does nothing but describe the
// effect; the quantity in its data is the SKU's quantity right after it.
func (o *Operation) Handle(_ context.Context, call *processor.Call[messages.CartAddRequest]) (processor.Outcome, error) {
	req := call.Command
	out := processor.Succeeded(struct {
		CartID   string          `json:"cart_id"`
		SKU      string          `json:"sku"`
		Quantity json.RawMessage `json:"quantity"`
	}{req.CartID, req.SKU, json.RawMessage(processor.Placeholder)})
	out.Effect = &processor.Effect{Key: layout.Cart(o.keyPrefix, req.CartID), Field: req.SKU, By: req.Quantity}
	return out, nil
}
