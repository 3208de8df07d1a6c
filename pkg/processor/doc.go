// Package processor owns idempay's worker engine: it knows how to run a
// command exactly once per idempotency key, and nothing about payments or
// carts. Operations (package ops/...) register on a [Mux] with [Register];
// the wiring of a worker (cmd/worker, examples/) chooses them.
//
// A [Processor] pulls commands from the durable consumer every worker
// shares and runs each through one pipeline:
//
//	validate -> lock -> begin -> operation (with retries) -> fenced commit -> publish -> ack
//
// Each delivery first learns what there is to learn (deliver.go: examine),
// then one pure function decides its verdict (decide: answer an outcome,
// reject, retry later, dead-letter), and one step carries it out (report.go:
// publish, reply, ack / nak / term, counters, logs).
//
// The lock and the record live in package dedupe. A key held by another
// worker is handed back with a growing delay, never given up on while it is
// held; a completed key is answered with its stored outcome (replayed:
// true); a key bound to another fingerprint is rejected. The operation runs
// under a watchdog that extends the lock and tells JetStream the message is
// in progress, and it is cancelled if the lock is lost.
//
// Errors are retried by their [Class] with the operation's [RetryPolicy]
// inside the delivery, then by redelivery. The engine counts a key's
// attempts in its record and, after [Config.MaxTries] of them, dead-letters
// the command holding the key's lock: as dead_lettered only when no attempt
// can have taken effect (or the operation's [Resolver] confirms none did),
// as outcome_unknown otherwise. The consumer itself has no delivery limit,
// so no message is ever left in the work queue without an end.
//
// An outcome is stored before it is published and published before the
// message is acked, so a crash anywhere leaves a state the next delivery
// completes; deliver.go walks through every crash point.
package processor
