// Package dedupe owns idempay's idempotency state in Redis: the per-key
// record, the per-key redsync mutex and the scripts that move a key from
// "never seen" to "in progress" to "completed".
//
// # Layout
//
// With the default prefixes (all configurable, and all under Config.Namespace):
//
//	idem:rec:{<key>}   hash    state, command, fingerprint, and once completed
//	                           status, code, message, data, attempts, processed_at
//	idem:lock:{<key>}  string  the redsync mutex of the key
//
// Both keys carry the idempotency key as hash tag, so the two land in one
// slot and the scripts that touch both work on Redis Cluster.
//
// # Protocol
//
// One command costs three Redis round trips on the happy path:
//
//  1. [Store.Acquire] takes the mutex with a single SET NX PX (redsync with
//     one try): a key held elsewhere returns [ErrLocked] at once, so a
//     worker never blocks a slot waiting for it.
//  2. [Store.Begin], one script, reads the record and, when there is none,
//     marks it in progress with the payload fingerprint, only while the
//     caller still holds the mutex. A completed record is returned as is.
//  3. [Store.Commit], one script, writes the outcome only if the caller
//     still holds the mutex and the record is in progress with the same
//     fingerprint, applies an optional counter effect (HINCRBY) in the same
//     script, and deletes the mutex: a fenced commit. A worker that was
//     paused past its lock gets [ErrLockLost] and changes nothing.
//
// A key is never marked completed before its operation succeeded; "in
// progress" only pins the fingerprint, so a crashed attempt is resumed by the
// next delivery and a different payload under the same key is refused.
//
// While an operation runs, [Lease.KeepAlive] extends the mutex at a third of
// its TTL, like Redisson's lock watchdog, and cancels the work's context with
// [ErrLockLost] as cause when an extension fails.
package dedupe
