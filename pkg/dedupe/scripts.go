package dedupe

import "github.com/redis/go-redis/v9"

// The scripts below are the only writers of a key's record: each is one
// transition of the state machine of docs/state-machine.md (record.go
// names the states). Every script that changes a key checks the caller's
// lock value first (the fence) and touches only the record, the lock and,
// for an effect, the effect's keys, so a script either runs whole or not at
// all, and Redis's AOF logs it as one unit.
//
// Every script replies in one shape, which parseReply reads:
//
//	{verdict, released, field, value, field, value, ...}
//
// verdict names what the script did or found; released is "1" when the
// script deleted the caller's lock (the end of its tenure), "0" otherwise;
// the pairs are the record as it stands after the script (none when there
// is no record).
//
// The lock key belongs to redsync (lock.go): Acquire creates it, the
// watchdog extends it, Release deletes it. A script may read it (the
// fence), and may delete it only as the last write of a transition that
// ends its holder's tenure (commit, settle, dead letter), and only when it
// holds the caller's value; the reply then says released, and the Store
// marks the Lease released from that reply alone.

// prelude is the Lua every script shares. On KEYS[1], the record, and
// KEYS[2], the lock:
//
//   - fenced(value): the lock holds the caller's value;
//   - load(max_tries): the record as a table (nil if none), upgraded in
//     place from the format of idempay before v1.2 (state in_progress with
//     running/unknown flags) to this one;
//   - reply(verdict, released): the reply shape above;
//   - settled(r, fingerprint, published_us, retention_ms): for an existing
//     record, the reply that ends a delivery before it runs anything -
//     "conflict" (another fingerprint), "completed" (retention extended: a
//     replay is an answer) or "dead_lettered" (a message published at or
//     before the key's last dead letter) - or nil to go on;
//   - look(names): the named fields of the record as a table (nil if
//     none), without reading the rest; a record that needs the upgrade, or
//     has no state, is loaded whole (load);
//   - complete(...): applies the optional effect (KEYS[3]) and writes the
//     outcome, dropping the try fields; returns the data as stored (the
//     effect's placeholder replaced);
//   - reply_completed(verdict, r, ...): the reply of a script that just
//     completed the record and released the lock, built from what it wrote
//     instead of read back: the record holds those fields and r's command
//     and fingerprint, and nothing else (complete drops every other field).
//
// A reply built from what the script wrote, not read back with HGETALL,
// saves Redis most of a script's cost (the record crosses from Redis to
// Lua and back once less); the tests check every such reply against the
// record as Redis holds it.
//
//nolint:dupword // Lua: "end end" closes two nested blocks
const prelude = `
local function fenced(value)
  return redis.call("GET", KEYS[2]) == value
end
local function load(max_tries)
  local flat = redis.call("HGETALL", KEYS[1])
  if #flat == 0 then return nil end
  local r = {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  if r.state == "in_progress" then
    local dead = tonumber(r.dead_before or "0") or 0
    local tries = tonumber(r.tries or "0") or 0
    if r.running then
      r.state = "running"
    elseif dead > 0 and tries == 0 then
      r.state = "dead"
    else
      r.state = "idle"
    end
    r.effect = "none"
    if r.unknown or r.dead_effect == "unknown" then
      r.effect = "unknown"
    end
    redis.call("HDEL", KEYS[1], "running", "unknown")
    redis.call("HSET", KEYS[1], "v", "2", "state", r.state, "effect", r.effect)
  end
  if r.state ~= "completed" and not r.max_tries and max_tries then
    r.max_tries = max_tries
    redis.call("HSET", KEYS[1], "max_tries", max_tries)
  end
  return r
end
local function reply(verdict, released)
  local out = redis.call("HGETALL", KEYS[1])
  table.insert(out, 1, released and "1" or "0")
  table.insert(out, 1, verdict)
  return out
end
local function look(names)
  local vals = redis.call("HMGET", KEYS[1], unpack(names))
  if not vals[1] or vals[1] == "in_progress" then
    return load(nil)
  end
  local r = {}
  for i, name in ipairs(names) do
    if vals[i] then r[name] = vals[i] end
  end
  return r
end
local function reply_completed(verdict, r, status, code, message, data, attempts, processed_at)
  return {verdict, "1", "v", "2", "state", "completed", "command", r.command or "", "fingerprint", r.fingerprint or "",
    "status", status, "code", code, "message", message, "data", data, "attempts", attempts,
    "processed_at", processed_at}
end
local function settled(r, fingerprint, published, retention)
  if r.fingerprint ~= fingerprint then
    return reply("conflict", false)
  end
  if r.state == "completed" then
    redis.call("PEXPIRE", KEYS[1], retention)
    return reply("completed", false)
  end
  local dead = tonumber(r.dead_before or "0") or 0
  if dead > 0 and tonumber(published) <= dead then
    return reply("dead_lettered", false)
  end
  return nil
end
local function complete(status, code, message, data, attempts, processed_at, field, by, placeholder, effect_ttl, retention)
  if KEYS[3] then
    local n = redis.call("HINCRBY", KEYS[3], field, by)
    if tonumber(effect_ttl) > 0 then
      redis.call("PEXPIRE", KEYS[3], effect_ttl)
    end
    local i, j = string.find(data, placeholder, 1, true)
    if i then
      data = string.sub(data, 1, i - 1) .. tostring(n) .. string.sub(data, j + 1)
    end
  end
  redis.call("HDEL", KEYS[1], "tries", "max_tries", "effect", "dead_before", "dead_effect", "dead_at",
    "voided", "body", "tenant", "apply", "running", "unknown")
  redis.call("HSET", KEYS[1], "v", "2", "state", "completed", "status", status, "code", code,
    "message", message, "data", data, "attempts", attempts, "processed_at", processed_at)
  redis.call("PEXPIRE", KEYS[1], retention)
  return data
end
`

// beginScript starts a try (transitions new/idle/dead -> running), or says
// why this delivery runs nothing.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] kind, ARGV[3] fingerprint, ARGV[4] retention ms,
//	ARGV[5] the message's publish time in µs, ARGV[6] tries a new key gets,
//	ARGV[7] "separate" when the key's effect is applied apart from the commit
//
// Verdicts: lost (nothing written), run, completed, conflict,
// dead_lettered (this message was), voided (the key was voided at the
// provider: nothing can take effect for it), exhausted (no tries left; the
// caller holds the lock and must dead-letter the key or settle its
// outcome).
var beginScript = redis.NewScript(prelude + `
if not fenced(ARGV[1]) then
  return {"lost", "0"}
end
local r = load(ARGV[6])
if not r then
  redis.call("HSET", KEYS[1], "v", "2", "state", "running", "command", ARGV[2], "fingerprint", ARGV[3],
    "max_tries", ARGV[6], "tries", 1, "effect", "none")
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
  local out = {"run", "0", "v", "2", "state", "running", "command", ARGV[2], "fingerprint", ARGV[3],
    "max_tries", ARGV[6], "tries", "1", "effect", "none"}
  if ARGV[7] == "separate" then
    redis.call("HSET", KEYS[1], "apply", "separate")
    table.insert(out, "apply")
    table.insert(out, "separate")
  end
  return out
end
local done = settled(r, ARGV[3], ARGV[5], ARGV[4])
if done then
  return done
end
if r.state == "dead" then
  if r.voided == "1" then
    return reply("voided", false)
  end
  r.tries = "0" -- a re-drive: fresh tries; what may have happened before stays known
end
if r.state == "running" then
  r.effect = "unknown" -- the try before never reported back: it may have taken effect
end
if ARGV[7] == "separate" then
  redis.call("HSET", KEYS[1], "apply", "separate")
end
local tries = tonumber(r.tries or "0") or 0
if tries >= tonumber(r.max_tries) then
  redis.call("HSET", KEYS[1], "state", "idle", "tries", tries, "effect", r.effect)
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
  return reply("exhausted", false)
end
redis.call("HSET", KEYS[1], "state", "running", "tries", tries + 1, "effect", r.effect)
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return reply("run", false)
`)

// commitScript stores an outcome: the fenced commit (running, idle or
// dead -> completed). The effect of an operation found by a lookup or a
// void is committed the same way.
//
//	KEYS[1] record, KEYS[2] lock, KEYS[3] effect hash (optional)
//	ARGV[1] lock value, ARGV[2] fingerprint, ARGV[3] retention ms,
//	ARGV[4] status, ARGV[5] code, ARGV[6] message, ARGV[7] data,
//	ARGV[8] attempts, ARGV[9] processed_at,
//	ARGV[10] effect field, ARGV[11] effect increment, ARGV[12] placeholder,
//	ARGV[13] effect expiry ms (0: none)
//
// A record already completed wins: it is returned unchanged and nothing is
// applied, which makes the script safe to run twice (go-redis retries a
// command whose connection broke, and so does the caller). Otherwise the
// caller must still hold the lock and the record must hold the same
// fingerprint; the optional effect is HINCRBY KEYS[3] field by, whose
// result replaces the first occurrence of the placeholder in data.
//
// Verdicts: completed (stored earlier), lost, missing (no record: Redis
// lost it), conflict, committed (released).
var commitScript = redis.NewScript(prelude + `
local r = look({"state", "fingerprint", "command"})
if r and r.state == "completed" then
  return reply("completed", false)
end
if not fenced(ARGV[1]) then
  return {"lost", "0"}
end
if not r then
  return {"missing", "0"}
end
if r.fingerprint ~= ARGV[2] then
  return reply("conflict", false)
end
local data = complete(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[3])
redis.call("DEL", KEYS[2])
return reply_completed("committed", r, ARGV[4], ARGV[5], ARGV[6], data, ARGV[8], ARGV[9])
`)

// beginCommitScript is beginScript and commitScript in one round trip
// (new, idle or re-driven dead -> completed), for operations whose whole
// effect is the commit's counter update: there is nothing to run between
// them, so no try can die half-way and none is counted.
//
//	KEYS[1] record, KEYS[2] lock, KEYS[3] effect hash (optional)
//	ARGV[1] lock value, ARGV[2] kind, ARGV[3] fingerprint, ARGV[4] retention ms,
//	ARGV[5] publish time µs, ARGV[6] status, ARGV[7] code, ARGV[8] message,
//	ARGV[9] data, ARGV[10] attempts, ARGV[11] processed_at,
//	ARGV[12] effect field, ARGV[13] effect increment, ARGV[14] placeholder,
//	ARGV[15] effect expiry ms (0: none)
//
// Verdicts: like beginScript's, except that where beginScript says run it
// commits (committed, released); and separate when a worker that applies
// effects apart began this key (the caller must go that way too, or it
// could apply an effect a second time).
var beginCommitScript = redis.NewScript(prelude + `
if not fenced(ARGV[1]) then
  return {"lost", "0"}
end
local r = look({"state", "fingerprint", "command", "dead_before", "apply", "voided"})
if r then
  local done = settled(r, ARGV[3], ARGV[5], ARGV[4])
  if done then
    return done
  end
  if r.apply == "separate" or r.state == "running" then
    return reply("separate", false)
  end
  if r.state == "dead" and r.voided == "1" then
    return reply("voided", false)
  end
else
  redis.call("HSET", KEYS[1], "command", ARGV[2], "fingerprint", ARGV[3])
  r = {command = ARGV[2], fingerprint = ARGV[3]}
end
local data = complete(ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[4])
redis.call("DEL", KEYS[2])
return reply_completed("committed", r, ARGV[6], ARGV[7], ARGV[8], data, ARGV[10], ARGV[11])
`)

// settleScript ends a try that produced no outcome (running -> idle) and
// releases the lock. The record's effect only moves from none to unknown
// here: a try that may have taken effect makes the key unknown until the
// provider, asked by key, settles it.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] none | unknown: what the try may have done,
//	ARGV[3] "1" to give the try back (the operation did not start)
//
// Verdicts: lost (nothing written), settled (released).
var settleScript = redis.NewScript(prelude + `
if not fenced(ARGV[1]) then
  return {"lost", "0"}
end
local r = load(nil)
if r and r.state == "running" then
  local effect = r.effect or "none"
  if ARGV[2] == "unknown" then
    effect = "unknown"
  end
  local tries = tonumber(r.tries or "0") or 0
  if ARGV[3] == "1" and tries > 0 then
    tries = tries - 1
  end
  redis.call("HSET", KEYS[1], "state", "idle", "effect", effect, "tries", tries)
end
redis.call("DEL", KEYS[2])
return reply("settled", true)
`)

// deadLetterScript records that the command published at ARGV[2] was
// dead-lettered (running or idle or dead -> dead), and releases the lock:
// every later delivery of a message of this key published at or before
// that moment ends as that dead letter, and a re-drive (a later publish)
// starts with fresh tries. Run by the resolver on a dead key (published
// 0), it settles the key's effect.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] publish time µs, ARGV[3] none | unknown: what
//	the dead letter tells its client, ARGV[4] "1" when the key was voided at
//	the provider, ARGV[5] the command's body (kept while unknown, for the
//	resolver), ARGV[6] now in ms, ARGV[7] retention ms, ARGV[8] kind,
//	ARGV[9] fingerprint (for a record Redis lost), ARGV[10] the tenant the
//	command was sent for (kept with the body)
//
// Verdicts: lost, completed (nothing written: an outcome is stored, answer
// it instead), dead (released).
var deadLetterScript = redis.NewScript(prelude + `
if not fenced(ARGV[1]) then
  return {"lost", "0"}
end
local r = load(nil)
if r and r.state == "completed" then
  return reply("completed", false)
end
if not r then
  redis.call("HSET", KEYS[1], "v", "2", "command", ARGV[8], "fingerprint", ARGV[9])
  r = {}
end
local dead = tonumber(r.dead_before or "0") or 0
local at = tonumber(ARGV[2])
if at > dead then
  dead = at
end
redis.call("HSET", KEYS[1], "state", "dead", "dead_before", string.format("%.0f", dead),
  "dead_effect", ARGV[3], "effect", ARGV[3], "tries", 0)
if r.state ~= "dead" or not r.dead_at then
  redis.call("HSET", KEYS[1], "dead_at", ARGV[6])
end
if ARGV[3] == "unknown" then
  redis.call("HSET", KEYS[1], "body", ARGV[5])
  if ARGV[10] and ARGV[10] ~= "" then
    redis.call("HSET", KEYS[1], "tenant", ARGV[10])
  end
else
  redis.call("HDEL", KEYS[1], "body", "tenant")
end
if ARGV[4] == "1" then
  redis.call("HSET", KEYS[1], "voided", "1")
end
redis.call("PEXPIRE", KEYS[1], ARGV[7])
redis.call("DEL", KEYS[2])
return reply("dead", true)
`)

// peekScript reads a record without the lock, and extends the retention of
// a completed one: a duplicate answered from it is an answer of the
// outcome.
//
//	KEYS[1] record; ARGV[1] retention ms
//
// Verdict: peek.
var peekScript = redis.NewScript(prelude + `
local r = load(nil)
if r and r.state == "completed" then
  redis.call("PEXPIRE", KEYS[1], ARGV[1])
end
return reply("peek", false)
`)
