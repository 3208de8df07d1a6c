// Package explore owns the fault explorer: a seeded search for answers
// that are not true. Each seed draws, from one PRNG, a deployment's
// settings (workers, tries, in-delivery retries) and a mix of faults (as
// TigerBeetle's VOPR draws a "swarm" of fault probabilities per seed), then
// a script per key: what the payment provider does on each call of the key
// (transient errors, an effect whose response is lost, a timeout before
// the request reached it, a decline, a call slower than the lock, a call
// frozen in flight that lands after the key's last try, lookups and voids
// that fail, then recovery), where a worker crashes or pauses on the key's
// deliveries (the engine's failpoints), and what the client does (re-sends
// inside and after the dedupe window, a re-send with another body, a
// re-drive after a dead letter, a refund racing its charge).
//
// Run plays a seed against the real engine - several processor.Processor
// sharing one durable consumer, in this process - on real NATS and Redis
// (testenv.Deployment), through the real client, with the provider
// wrapper of this package in front of pkg/sim. It then gives everything
// the clients were told, the provider's ledger and call log, the records
// and the streams to internal/ledger's Check. A seed's schedule is the
// same on every run (same keys, scripts, sends and times); the
// interleaving of the goroutines is not, so a replay re-creates the
// conditions of a finding, as Jepsen's do, rather than the exact trace.
//
// cmd/explore is its command line (make explore); TestExplore_Short runs
// a few seeds in `make test`.
package explore
