// Command peers runs one job, the same way, on idempay and on the queues a
// Go team would pick instead, on this machine, in one run: 30,000
// payment.charge keys plus 20% re-sends of keys already sent (half of them
// racing the original, half late), enqueued by 64 concurrent senders, each
// system's worker one process with 64 in flight, the provider one Redis
// call (pkg/sim's charge) for every system. It reports charges per second
// (first send to the provider's 30,000th charge), min/median/max over
// --runs, and what each system's guarantee held: keys the provider was
// called for more than once, keys never charged.
//
// The systems: the bare JetStream consumer (no guarantee: the ceiling),
// idempay (its worker binary, built from this checkout), River with unique
// jobs on PostgreSQL (FetchCooldown 1ms; its default 100ms is shown too
// with --river-default), asynq with task ids (kept for the run as the
// unique key), and Watermill on NATS JetStream with its Deduplicator
// middleware, in memory and with a Redis key store (SET NX).
//
// It is a module of its own so that the peers' dependencies stay out of
// idempay's go.mod; `make bench/peers` runs it. A worker is this program
// run again as `peers work`.
package main
