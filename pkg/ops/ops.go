// Package ops lists the operations idempay ships - payment.charge,
// cart.add and payment.refund - each in its own package below, and
// registers them all on an engine's Mux. A worker that wants other
// operations, or another set, registers them itself (see examples/).
package ops

import (
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/cart"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Provider is a payment provider for both payment operations.
type Provider interface {
	charge.Provider
	refund.Provider
}

// Register registers every shipped operation on mux: the payment ones
// through p, the carts under keyPrefix (the deployment's REDIS_KEY_PREFIX).
func Register(mux *processor.Mux, p Provider, keyPrefix string) {
	charge.Register(mux, p)
	cart.Register(mux, keyPrefix)
	refund.Register(mux, p)
}

// RetryPolicy returns a copy of the retry policy the shipped operation of
// kind registers with (the engine's default for a kind it does not know),
// for a worker's configuration to change one class of it.
func RetryPolicy(kind string) *processor.Policy {
	if kind == messages.KindPaymentRefund {
		return refund.RetryPolicy()
	}
	return processor.DefaultPolicy()
}
