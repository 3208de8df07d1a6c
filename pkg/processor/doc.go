// Package processor owns idempay's worker engine and its operations.
//
// A [Processor] pulls commands from the durable consumer that every worker
// shares, and runs each through one pipeline:
//
//	validate -> lock -> begin -> operation (with backoff) -> fenced commit -> publish -> ack
//
// Validation failures become rejected answers (never stored). The lock and
// the record live in package dedupe: a key held by another worker is handed
// back with NakWithDelay, never waited for; a completed key is replayed with
// replayed: true; a key bound to another fingerprint is rejected with
// idempotency_key_reused. The operation runs under a watchdog that extends
// the lock and tells JetStream the message is in progress, and it is
// cancelled if the lock is lost. Errors are retried with exponential backoff
// inside the delivery, then by JetStream's redelivery, and a command that
// fails its last delivery is copied to the dead letters. An operation's
// outcome is stored before it is published and published before the message
// is acked, so a crash anywhere leaves a state the next delivery completes;
// deliver.go walks through every crash point.
//
// Operations register on a [Mux] by command type. [ChargeHandler] charges
// through a [Provider] that takes the idempotency key with every call;
// [SimProvider] is the simulated provider of the demo and the tests.
// [CartAddHandler] applies its HINCRBY in the commit script itself.
package processor
