// Package ledger owns the one ledger checker: it compares what clients
// were told, key by key and with the times they were told it, against the
// provider's state of record (the simulated provider's ledger in Redis and,
// when there is one, the log of every call made to it), the idempotency
// records and the streams, and reports every disagreement as a Violation of
// a named Invariant. It is the checker Jepsen's and TigerBeetle's VOPR
// harnesses have: the harness collects an Input, Check judges it, and
// nothing in it waits, sleeps or does I/O but its readers (ReadProvider,
// ScanCarts, ReadCarts).
//
// The fault explorer (internal/explore), the load test's ledger check
// (load.CheckLedger: cmd/producer, the demo's audit) and the chaos suite's
// auditor (its charge, refund, dead-letter-effect and cart rules) judge
// through it. It imports nothing of the worker (no pkg/processor, pkg/dedupe or
// pkg/sim), so the client side's load test may use it.
//
// The invariants, each a promise of the contract (v1.2):
//
//   - Claimed: nothing claimed that the ledger does not hold. A succeeded
//     answer names the provider's charge (or refund) for its key; a failed
//     one has none; a dead_lettered answer is never followed by an effect
//     made by a call that started before it (a re-drive after it may take
//     effect legitimately); outcome_unknown claims nothing.
//   - OneOutcome: every succeeded or failed answer of a key is the same
//     but for replayed, and the outcome of the key's own command; no client
//     takes an answer meant for another body (another message's refusal, or
//     an outcome with another fingerprint) as its own.
//   - Stranded: nothing stranded. Every command JetStream accepted ends
//     answered with its key's outcome, refused, or dead-lettered; COMMANDS
//     drains; and, when Input.RequireResolution is set, every
//     outcome_unknown ends resolved (an outcome or dead_lettered after it),
//     and an effect at the provider is answered succeeded.
//   - Refunds: refunds never above the charge, at the provider or in the
//     answers; a refund refused as exceeding the charge did exceed it.
//   - DoubleCharge: no key takes effect twice, and nothing takes effect
//     for a key no client sent as that command.
//   - Carts: every cart line holds the sum of its keys' distinct succeeded
//     adds (a key counts once, however often it was sent), and no cart
//     holds a line nobody added to (when Input.Carts was read).
package ledger
