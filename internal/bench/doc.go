// Package bench is the harness behind `make bench` and `make soak`: it
// measures idempay's real worker binary against the bare JetStream ceiling
// on the same machine, in one run, so that the ratio between the two says
// how much of the broker's capacity the pipeline gets.
//
// It owns the whole run: it starts its own nats-server (the version go.mod
// pins, as a child process) and redis-server, builds ./cmd/worker and runs
// it as a black box through its environment variables, preloads commands,
// and reads what it needs from outside the worker: answers on result.>,
// CPU time and RSS from /proc, Redis counters from INFO. Every scenario
// gets fresh streams, subjects and Redis keys, removed afterwards, so the
// scenarios do not disturb each other.
//
// The scenarios ([Run]):
//
//   - ceiling: a bare JetStream pull consumer (batched Fetch of the free
//     slots, plain Ack, 64 in flight) draining a preloaded stream with the
//     same configuration as the worker's command stream.
//   - floor: the least work per charge of this design, in this process,
//     on the ceiling's loop: a fenced begin, the simulated provider, a
//     fenced commit, the RESULTS publish with its PubAck, the ack (floor.go
//     says what it leaves out). The worker's distance to it is its own
//     cost; the floor's distance to the ceiling is the design's.
//   - drain: one worker process (or two) draining the same preload at
//     CONCURRENCY 1, 16 and 64, for payment.charge and cart.add.
//   - e2e: commands sent through pkg/client by internal/load, answered by
//     one worker; at the peak rate, at half of it, and with 20% duplicates.
//
// The ceiling, the floor and payment.charge at the headline's in-flight
// limit are repeated for several rounds, because a shared machine is
// noisy; the median of payment.charge over the same round's ceiling is the
// headline, and over the same round's floor the worker's own share.
// Nothing here asserts speed: it measures and prints.
//
// [Soak] runs an end-to-end load at a steady rate for minutes and samples
// the worker's RSS and goroutines, to show drift.
package bench
