// Package layout owns the names of idempay's Redis keys outside the
// idempotency store: the carts that cart.add increments, and the ledger of
// the simulated payment provider (contract: "Redis layout"). It is a leaf:
// it imports nothing, so the operations, the simulated provider, the load
// generator's ledger check and the demo's audit all name the same keys
// without pulling in the worker engine. Every function takes the
// deployment's key prefix (REDIS_KEY_PREFIX, "" by default).
//
// The idempotency record and lock (idem:rec:{<key>}, idem:lock:{<key>})
// belong to package dedupe, whose prefixes are configurable.
package layout

// Cart returns the hash of a cart, SKU -> quantity: cart:{<cart_id>}.
func Cart(prefix, cartID string) string { return prefix + "cart:{" + cartID + "}" }

// CartApplied returns the key that remembers, on a Redis Cluster, that one
// cart.add command (idempotency key and payload fingerprint) was applied
// to a cart: the SKU's quantity right after that add, or "void" when the
// add was voided and never applies. It shares the cart's hash tag, and so
// its Cluster slot, and expires a retention (RESULT_TTL) after it was
// written. On a single Redis the commit script applies the add with the
// record, and these keys are not written. (Before contract v1.2 one hash,
// cart:{<cart_id>}:applied, held every add of a cart.)
func CartApplied(prefix, cartID, key, fingerprint string) string {
	return Cart(prefix, cartID) + ":applied:" + key + ":" + fingerprint
}

// SimLedger names the simulated provider's ledger hashes.
type SimLedger struct {
	// Charges: idempotency key -> charge JSON (one per key).
	Charges string
	// Calls: idempotency key -> number of Charge calls it received.
	Calls string
	// Refunds: refund key -> refund JSON (one per key).
	Refunds string
	// Refunded: charge key -> total refunded.
	Refunded string
	// Voided: idempotency key (of a charge or a refund) -> the time it was
	// voided (contract v1.2); a voided key is never charged or refunded.
	Voided string
}

// SimClusterTag is the hash tag of the simulated provider's ledger on a
// Redis Cluster.
const SimClusterTag = "{sim}"

// Sim returns the simulated provider's ledger under prefix. On a single
// Redis or Sentinel (cluster false) they are the contract's sim:charges,
// sim:calls, sim:refunds and sim:refunded. On a Redis Cluster they are
// {sim}:charges, {sim}:calls, {sim}:refunds, {sim}:refunded and
// {sim}:voided (and sim:voided on a single Redis): the
// provider's scripts touch two or three of them at once (a charge counts
// its call; a refund checks the charge and the refunded total), and the
// shared hash tag keeps them in one slot, where a script may touch them
// all.
func Sim(prefix string, cluster bool) SimLedger {
	base := prefix + "sim:"
	if cluster {
		base = prefix + SimClusterTag + ":"
	}
	return SimLedger{Charges: base + "charges", Calls: base + "calls", Refunds: base + "refunds", Refunded: base + "refunded",
		Voided: base + "voided"}
}

// SimCharges is the simulated provider's hash of charges on a single Redis
// (Sim names the Cluster's): idempotency key -> charge JSON (one per key).
func SimCharges(prefix string) string { return prefix + "sim:charges" }

// SimCalls is the simulated provider's hash of calls: idempotency key ->
// number of Charge calls it received.
func SimCalls(prefix string) string { return prefix + "sim:calls" }

// SimRefunds is the simulated provider's hash of refunds: refund key ->
// refund JSON (one per key).
func SimRefunds(prefix string) string { return prefix + "sim:refunds" }

// SimRefunded is the simulated provider's hash of refunded totals: charge
// key -> total refunded.
func SimRefunded(prefix string) string { return prefix + "sim:refunded" }

// SimVoided is the simulated provider's hash of voided keys: idempotency
// key -> the time it was voided (contract v1.2).
func SimVoided(prefix string) string { return prefix + "sim:voided" }

// SimDeclinePrefix: the simulated provider declines every charge to an
// account whose id starts with it, with code card_declined.
const SimDeclinePrefix = "decline"
