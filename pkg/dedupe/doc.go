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
// An [Effect] (a counter an operation only describes, like cart.add's
// cart:{<cart_id>}) hashes to its own slot. On a single Redis it is applied
// by the commit script; where no script may span two slots it is applied
// by [Store.ApplyEffect] between Begin and Commit, idempotent by itself: it
// remembers "<key>:<fingerprint>" -> the counter's new value in
// <counter>:applied, a hash in the counter's slot.
//
// # Protocol
//
// One command costs two Redis round trips on the happy path on an
// auto-pipelining client (internal/autopipe, the worker's), one for an
// operation whose whole effect is a counter; without pipelining, one more:
//
//  1. [Store.Acquire] takes the mutex with a single SET NX PX (redsync with
//     one try): a key held elsewhere returns [ErrLocked] at once, so a
//     worker never blocks a slot waiting for it.
//  2. [Store.Begin], one script, holding the mutex, decides whether this
//     delivery runs the operation ([BeginStatus]): a new key is marked in
//     progress with the payload fingerprint; a completed key is answered
//     (its retention extended); another fingerprint is a conflict; a
//     command that was dead-lettered stays so; a key that has used its
//     tries runs nothing. Begin counts the key's tries, and marks the
//     record Unknown when the previous attempt never reported back.
//  3. [Store.Commit], one script, writes the outcome only if the caller
//     still holds the mutex and the record is in progress with the same
//     fingerprint, applies an optional counter effect (HINCRBY) in the same
//     script, and deletes the mutex: a fenced commit. A worker that was
//     paused past its lock gets [ErrLockLost] and changes nothing.
//     [Store.BeginAndCommit] does 2 and 3 in one script. On a Redis
//     Cluster an effect goes apart instead, between 2 and 3
//     ([Store.ApplyEffect]): one round trip more.
//
// [Store.AcquireBegin] and [Store.AcquireBeginAndCommit] are 1 and 2 (or 1
// and 2+3) in one round trip: the script goes out right behind the SET NX,
// in the same pipeline, and, checking the mutex first as every script
// does, writes nothing when the SET did not take it.
//
// An attempt that produced no outcome ends with [Store.Settle], which
// records whether it may have taken effect; a command that has used its
// tries ends with [Store.Condemn], which fences every later delivery of it.
//
// A key is never marked completed before its operation succeeded; "in
// progress" only pins the fingerprint, so a crashed attempt is resumed by the
// next delivery and a different payload under the same key is refused.
//
// While an operation runs, [Lease.KeepAlive] extends the mutex at a third of
// its TTL, like Redisson's lock watchdog, and cancels the work's context with
// [ErrLockLost] as cause when an extension fails.
package dedupe
