// Package chaos is idempay's fault-injection suite: named scenarios, each on
// fresh servers (a nats-server with file storage and sync_interval: always,
// a redis-server with appendonly yes and appendfsync always), drive a load
// through the client library against real worker processes built with the
// race detector, inject real faults while it runs, and then hand what a user
// can see to an independent auditor.
//
// The faults are real: SIGKILL and SIGSTOP of worker processes (from
// outside, and from inside at every failpoint of a delivery), SIGKILL and
// SIGTERM of redis-server and nats-server with a restart from their files,
// a TCP proxy in the test process between the workers and each server
// (latency, resets, hung connections, the server unreachable), a provider
// slower than the lock, one that commits and then times out, one that
// fails transiently, and SIGTERM of workers under load.
//
// The load (package load, through pkg/client) sends charges, cart adds and
// refunds, re-sends keys inside and after the dedupe window and after a
// timeout, reuses keys with another payload, charges accounts that are
// declined, and sends poison messages (invalid payloads, unknown kinds, bad
// keys, oversized bodies) as raw JetStream publishes.
//
// The auditor reads only what a user can see: the answers the client got,
// the answers on result.> (live), rejected.> and reply subjects (kept by a
// stream of the suite's own), the RESULTS and DEADLETTER streams, the
// simulated provider's ledger (sim:charges, sim:calls, sim:refunds,
// sim:refunded) and the carts; and the COMMANDS stream and the workers'
// output. It checks the invariants listed by [Invariants] after every
// scenario. Nothing it checks comes from the idempotency records.
//
// A negative control is a scenario run in a setting docs/guarantees.md's "Not
// covered" table names (Redis without persistence, NATS losing writes it had
// not synced, a retry after RESULT_TTL, a worker frozen past the key's last
// try, a Redis failover losing writes): it must show the violation that
// table promises, and a control that shows none is a failure.
//
// [Run] runs one scenario and returns its [Result]; [WriteReport] renders
// the scenario x invariant table, the faults with their recovery times and
// the violations, as text and Markdown. The entry point is TestChaos in
// cmd/worker (build tag chaos, `make chaos`).
package chaos
