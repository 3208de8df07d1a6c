// Package cart owns the cart.add operation: an item added to a cart once
// per idempotency key.
package cart

import (
	"context"
	"encoding/json"
	"time"

	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/processor"
)

// Operation is cart.add. Its whole effect is HINCRBY on cart:{<cart_id>},
// which the engine applies once per idempotency key (an EffectInCommit
// operation):
//
//   - on a single Redis or Sentinel, in the commit script, together with
//     the idempotency record: there is no moment where the cart changed and
//     the key is not completed, and no attempt can die half-way;
//   - on a Redis Cluster, where the cart and the record hash to different
//     slots (one script over both is refused with CROSSSLOT), by a script
//     of its own in the cart's slot, between Begin and the commit. It
//     increments the line and records, in cart:{<cart_id>}:applied, the
//     key, its payload fingerprint and the quantity it produced; run again
//     for that key (a redelivery after a crash before the commit), it
//     returns that quantity and changes nothing. pkg/processor's deliver.go
//     walks through what each crash point leaves.
//
// A cart expires TTLDefault after its last add: carts are abandoned, and a
// key space that only grows is a leak.
type Operation struct {
	keyPrefix string
	ttl       time.Duration
}

// TTLDefault is how long a cart lives after its last add.
const TTLDefault = 30 * 24 * time.Hour

// New returns the cart.add operation for the carts under keyPrefix (the
// deployment's REDIS_KEY_PREFIX); each cart expires TTLDefault after its
// last add.
func New(keyPrefix string) *Operation { return &Operation{keyPrefix: keyPrefix, ttl: TTLDefault} }

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
	out.Effect = &processor.Effect{Key: layout.Cart(o.keyPrefix, req.CartID), Field: req.SKU, By: req.Quantity, TTL: o.ttl}
	return out, nil
}
