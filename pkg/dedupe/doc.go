// Package dedupe owns idempay's idempotency state in Redis: the per-key
// record, the per-key redsync mutex and the scripts that move a key from
// "never seen" to "in progress" to "completed".
//
// The record is one state machine (running, idle, completed, dead), drawn
// in docs/state-machine.md with every transition and the script that makes
// it; record.go names the states and scripts.go holds the scripts, the only
// writers of a record.
//
// # Layout
//
// With the default prefixes (all configurable, and all under Config.Namespace):
//
//	idem:rec:{<key>}   hash    the record: state, command, fingerprint, the
//	                           key's tries and history (effect none|unknown)
//	                           until it completes, then the outcome
//	idem:lock:{<key>}  string  the redsync mutex of the key
//	idem:resolve       zset    keys whose outcome is unknown, by next ask
//
// The record and lock carry the idempotency key as hash tag, so the two
// land in one slot and the scripts that touch both work on Redis Cluster.
//
// An [Effect] (a counter an operation only describes, like cart.add's
// cart:{<cart_id>}) hashes to its own slot. On a single Redis it is applied
// by the commit script; where no script may span two slots it is applied
// by [Store.ApplyEffect] between Begin and Commit, idempotent by itself: it
// remembers the counter's new value in <counter>:applied:<key>:<fingerprint>,
// a key of its own in the counter's slot that lives as long as the record.
//
// # Protocol
//
// One command costs two Redis round trips on the happy path on an
// auto-pipelining client (internal/autopipe, the worker's), one for an
// operation whose whole effect is a counter; without pipelining, one more:
//
//  1. [Store.Acquire] takes the mutex with a single SET NX PX (redsync with
//     one try): a key held elsewhere returns [ErrLocked] at once.
//  2. [Store.Begin], one script, holding the mutex, decides whether this
//     delivery runs the operation ([BeginStatus]) and counts the key's try.
//  3. [Store.Commit], one script, writes the outcome only if the caller
//     still holds the mutex and the record holds the same fingerprint,
//     applies an optional counter effect in the same script, and deletes
//     the mutex: a fenced commit. [Store.BeginAndCommit] does 2 and 3 in one
//     script.
//
// A try that produced no outcome ends with [Store.Settle], which records
// whether it may have taken effect (the key's history only ever moves from
// certain to unknown); a key out of tries ends with [Store.DeadLetter],
// which fences every later delivery of its command. A key whose history is
// unknown is dead-lettered as dead_lettered only once the provider, asked by
// key, voided it; otherwise it goes on the resolution schedule.
//
// While an operation runs, [Lease.KeepAlive] extends the mutex at a third of
// its TTL and cancels the work's context with [ErrLockLost] as cause when an
// extension fails.
package dedupe
