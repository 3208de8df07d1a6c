package admin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Eviction says whether a key's record may be evicted now and what that
// means. Evicting must never make a key's answers untrue, so only two
// kinds of record may go:
//
//   - completed: the outcome stays in RESULTS until its retention ends,
//     but a duplicate that reaches a worker afterwards runs the operation
//     again (a charge is returned by the provider's idempotency only
//     while the provider remembers the key; a cart.add adds again);
//   - idle with effect none and no dead letter behind it: no call for the
//     key can have taken effect; its tries start again.
//
// Every other record is refused: a held lock (a worker is on it), a
// running record (a try that never reported back may have reached the
// provider), effect unknown (forgetting it would let a later dead letter
// say "certainly not done"), a dead record, or one re-driven after a dead
// letter (the record is the fence that answers a late delivery of the
// dead-lettered message as that dead letter, as its client was told).
type Eviction struct {
	// Allowed: Evict would delete the record now.
	Allowed bool
	// Refused says why not, when not Allowed.
	Refused string
	// Means says what evicting does, when Allowed: the confirmation's text.
	Means string
}

// Reasons of a refusal, as evictScript names them.
const (
	refusedLocked  = "locked"
	refusedRunning = "running"
	refusedUnknown = "unknown"
	refusedDead    = "dead"
	refusedFenced  = "fenced"
	refusedFormat  = "format"
)

var refusals = map[string]string{
	refusedLocked:  "the key's lock is held: a worker is on it; try again once it is released",
	refusedRunning: "the record is running: a try began and never reported back, so a call may have reached the provider; the next delivery makes the key's effect unknown and asks the provider",
	refusedUnknown: "the key's effect is unknown (a call may have taken effect): evicting would forget it, and a later dead letter could then tell its client \"certainly not done\"; the provider, asked by key, settles it",
	refusedDead:    "the key is dead-lettered: its record is what answers a late delivery of the dead-lettered message as its client was told (and what the resolver works from); re-drive it with dlq replay instead",
	refusedFenced:  "the key was re-driven after a dead letter: its record is the fence that answers a late delivery of the dead-lettered message as that dead letter",
	refusedFormat:  "a record of the format before contract v1.2: a worker upgrades it the next time it touches the key",
}

const (
	meansCompleted = "The outcome is forgotten by the workers (RESULTS keeps it until its retention ends). " +
		"A duplicate of this key that reaches a worker afterwards RUNS THE OPERATION AGAIN: a charge or refund is " +
		"returned by the provider's idempotency only while the provider remembers the key, and a cart.add ADDS AGAIN."
	meansIdle = "No call for the key can have taken effect. The key's tries start again: its command, still " +
		"waiting for a delivery, gets MAX_DELIVER fresh tries."
)

// EvictionOf returns what Evict would do with rec while lock is as given
// (nil: not held). It is evictScript's rule, for showing before asking.
func EvictionOf(rec *Record, lock *Lock) Eviction {
	if rec == nil {
		return Eviction{Refused: "there is no record"}
	}
	var why string
	switch {
	case lock != nil:
		why = refusedLocked
	case rec.Format == 1:
		why = refusedFormat
	case rec.State == StateCompleted:
		return Eviction{Allowed: true, Means: meansCompleted}
	case rec.State == StateRunning:
		why = refusedRunning
	case rec.State == StateDead:
		why = refusedDead
	case rec.Unknown():
		why = refusedUnknown
	case !rec.DeadBefore.IsZero():
		why = refusedFenced
	default:
		return Eviction{Allowed: true, Means: meansIdle}
	}
	return Eviction{Refused: refusals[why]}
}

// Errors of Evict.
var (
	// ErrNoRecord: the key has no record.
	ErrNoRecord = errors.New("admin: the key has no record")
	// ErrLocked: the key's lock is held.
	ErrLocked = errors.New("admin: the key is locked")
	// ErrNotEvictable: the record is of a kind that must not be evicted
	// (Eviction).
	ErrNotEvictable = errors.New("admin: the record must not be evicted")
	// ErrChanged: the record is no longer what the operator confirmed.
	ErrChanged = errors.New("admin: the record changed since it was shown")
	// ErrAudit: the record was evicted, but the audit entry could not be
	// written: the error carries what the record held.
	ErrAudit = errors.New("admin: the record was evicted but the audit log could not be written")
)

// evictScript deletes a record, holding to Eviction's rule in the same
// script, so that nothing changes between the check and the delete.
//
//	KEYS[1] the record, KEYS[2] the lock
//	ARGV[1] the state the operator confirmed ("" for any), ARGV[2] its tries
//
// Returns {"evicted", fields...}, {"absent"}, {"locked", holder, pttl},
// {"refused", why, fields...} or {"changed", fields...}.
var evictScript = redis.NewScript(`
local holder = redis.call("GET", KEYS[2])
if holder then return {"locked", holder, tostring(redis.call("PTTL", KEYS[2]))} end
local f = redis.call("HGETALL", KEYS[1])
if #f == 0 then return {"absent"} end
local r = {}
for i = 1, #f, 2 do r[f[i]] = f[i + 1] end
if ARGV[1] ~= "" and (r["state"] ~= ARGV[1] or (r["tries"] or "") ~= ARGV[2]) then
  local out = {"changed"}
  for i = 1, #f do out[#out + 1] = f[i] end
  return out
end
local why = nil
local state = r["state"]
if state == "completed" then
elseif state == "in_progress" then why = "format"
elseif state == "running" then why = "running"
elseif state == "dead" then why = "dead"
elseif state ~= "idle" then why = "format"
elseif r["effect"] == "unknown" then why = "unknown"
elseif tonumber(r["dead_before"] or "0") > 0 then why = "fenced"
end
local out = {}
if why then out = {"refused", why} else out = {"evicted"} end
for i = 1, #f do out[#out + 1] = f[i] end
if not why then redis.call("DEL", KEYS[1]) end
return out
`)

// Expect is what the operator saw and confirmed: Evict refuses with
// ErrChanged when the record is no longer in that state with those tries.
type Expect struct {
	State string
	Tries int
}

// ExpectOf returns the expectation of a record as shown.
func ExpectOf(rec *Record) *Expect { return &Expect{State: rec.Fields["state"], Tries: rec.Tries} }

// Evict deletes key's record when Eviction allows it, in one script that
// checks the rule, the lock and expect (nil: any state), then writes the
// audit entry (who, when, what the record held). It returns the record
// as it was. ErrNoRecord, ErrLocked, ErrNotEvictable (with the reason)
// and ErrChanged leave everything as it was; ErrAudit means the record is
// gone and its audit entry is not written: the error says what it held.
func (a *Admin) Evict(ctx context.Context, key, who string, expect *Expect) (*Record, error) {
	if a.rdb == nil {
		return nil, ErrNoRedis
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	state, tries := "", ""
	if expect != nil {
		state, tries = expect.State, strconv.Itoa(expect.Tries)
		if expect.State == string(StateCompleted) {
			tries = "" // a completed record has no tries field
		}
	}
	res, err := evictScript.Run(ctx, a.rdb, []string{a.RecordKey(key), a.LockKey(key)}, state, tries).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("admin: evict %s: %w", key, err)
	}
	fields := func(flat []string) map[string]string {
		m := make(map[string]string, len(flat)/2)
		for i := 0; i+1 < len(flat); i += 2 {
			m[flat[i]] = flat[i+1]
		}
		return m
	}
	switch res[0] {
	case "absent":
		return nil, fmt.Errorf("%w: %s", ErrNoRecord, key)
	case "locked":
		ms, _ := strconv.ParseInt(res[2], 10, 64)
		return nil, fmt.Errorf("%w: held by %s for %v more; %s", ErrLocked, res[1], time.Duration(ms)*time.Millisecond, refusals[refusedLocked])
	case "changed":
		rec, _ := parseRecord(key, fields(res[1:]))
		now := "gone"
		if rec != nil {
			now = string(rec.State)
		}
		return rec, fmt.Errorf("%w: it is now %s; look again before evicting", ErrChanged, now)
	case "refused":
		rec, _ := parseRecord(key, fields(res[2:]))
		return rec, fmt.Errorf("%w: %s", ErrNotEvictable, refusals[res[1]])
	}
	f := fields(res[1:])
	rec, err := parseRecord(key, f)
	if err != nil {
		rec = &Record{Fields: f}
	}
	entry := AuditEntry{At: time.Now(), Who: who, Action: ActionEvict, Key: key, Record: rec.Fields,
		Detail: "evicted a " + string(rec.State) + " record"}
	if err := a.Audit(ctx, entry); err != nil {
		return rec, fmt.Errorf("%w (%w); the record held %v", ErrAudit, err, rec.Fields)
	}
	return rec, nil
}
