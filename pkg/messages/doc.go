// Package messages owns idempay's wire contract (../shared/CONTRACT.md, v1):
// the command and result types, the subjects and headers they travel on, the
// validation rules with their rejection codes, the 64 KiB body limit and the
// canonical payload fingerprint.
//
// Everything that crosses NATS is defined here, so the worker, the client
// library and the producer CLI cannot disagree about it. The package does no
// I/O.
//
// # Keys
//
// An idempotency key is a UUID (RFC 9562, any version) in canonical form: 36
// characters, lower-case hex, hyphens at 8-4-4-4-12. [ValidKey] checks it; it
// travels in the Nats-Msg-Id header so that JetStream's duplicate window
// drops re-publishes before they reach a worker.
//
// # Fingerprints
//
// [Fingerprint] is the hex SHA-256 of the command type, a newline and the
// canonical JSON of the validated body: the struct's fields in declaration
// order, no white space, optional empty fields omitted. Field order and
// white space in what the client sent do not change it; a different amount
// does. A key stored with one fingerprint refuses every other fingerprint
// with [CodeKeyReused].
package messages
