// Package admin owns what an operator does to idempay by hand, for the
// operators' console (cmd/console) and the producer's key and dlq
// commands alike, so that the two never disagree:
//
//   - inspecting one key (Admin.Inspect): its record, its lock, the
//     outcome RESULTS holds, its dead-letter copies, its entry on the
//     resolution schedule, the simulated provider's ledger of it and the
//     audit log's entries about it, merged into one timeline;
//   - the dead letters (Admin.DeadLetters): filtered by kind, age, reason
//     and Dlq-Effect, each with what its key's record says now (through
//     the workers' lookup service), so that a replayed one is never shown
//     as pending; replayed (Admin.Replay) and purged (Admin.Purge) in bulk;
//   - the keys told outcome_unknown and where their resolution stands
//     (Admin.UnknownKeys);
//   - evicting a key's record (Admin.Evict), refused while the key is
//     locked or whenever forgetting the record could make the key's
//     answers untrue, and written to the audit log (a capped Redis stream,
//     <prefix>idem:audit) with who, when and what the record held.
//
// It reads Redis directly but links neither the worker's engine nor its
// store (the client side's import rule, .golangci.yaml): the record's
// fields are read here as pkg/dedupe writes them, which
// TestRecord_ReadsWhatTheStoreWrites checks against the store itself.
// Nothing here writes a record but Evict, whose one script deletes it.
package admin
