// Package load drives idempay with many commands and checks what came back:
// the engine behind `producer load` and the demo.
//
// [Run] sends Count commands (a Mix of payment.charge and cart.add, each
// with a new key) through a client, with Concurrency in flight and at most
// Rate new commands a second, and re-sends a share of the keys (Duplicates)
// the way a retrying client would: always with the same key and the same
// payload. Three kinds of duplicate exercise three paths:
//
//   - racing: sent while the original is in flight. JetStream drops one of
//     the two publishes (duplicate PubAck); the dropped one waits for the
//     original's answer on result.<key>, subscribed before it published.
//   - after: sent as soon as the original's answer arrived. JetStream drops
//     it; the client reads the answer from the RESULTS stream, because it
//     was published before this send subscribed.
//   - late: sent LateAfter after the original's answer. Once LateAfter
//     exceeds the workers' dedupe window (DEDUPE_WINDOW, 2m by default; set
//     it to 1-2s on the workers for a quick run) JetStream accepts it, a
//     worker finds the stored outcome and replays it (replayed: true)
//     without running the operation again. Inside the window it is dropped
//     like an "after" duplicate.
//
// Two more sends exercise a client's mistakes and timeouts: with ReuseShare,
// a key is sent again after its outcome with another payload, which must be
// refused as idempotency_key_reused (by a worker after the dedupe window, by
// the client inside it) and never change the outcome; with RetryUnanswered,
// a command whose send got no answer is sent once more with the same key.
// OnSend sees every send, for a caller that audits the run itself (the
// chaos suite does).
//
// The [Summary] counts both: duplicates dropped by JetStream and duplicates
// replayed by workers. It also gives outcomes by status and code, latency
// percentiles from publish to answer, throughput, and the keys whose
// answers disagree (another status, code, data or processed_at among the
// answers to one key), which must be none. [CheckLedger] compares the
// outcomes with the simulated provider's ledger and the carts in Redis.
//
// A run is bounded in count (at most MaxCount commands) and in time
// (Timeout), and talks only to the NATS server the client is connected to.
package load
