package dedupe

import "github.com/redis/go-redis/v9"

// Every script that changes a key checks the caller's lock value first
// (the fence) and touches only the record, the lock and, for an effect, the
// effect's hash, so a script either runs whole or not at all, and Redis's
// AOF logs it as one unit.
//
// Record fields (hash <RecordPrefix>{<key>}):
//
//	state        in_progress | completed
//	command      the command's kind
//	fingerprint  the payload fingerprint, pinned by the first attempt
//	tries        attempts started since the key was last dead-lettered
//	running      set while an attempt runs the operation; still set at the
//	             next Begin means that attempt never reported back
//	unknown      set once an attempt may have taken effect without an outcome
//	dead_before  µs timestamp: deliveries of messages published at or before
//	             it belong to a dead-lettered command
//	dead_effect  none | unknown: what that dead letter told the client
//	status, code, message, data, attempts, processed_at: the outcome, once
//	             completed

// beginScript starts an attempt: the caller holds the lock, and learns
// whether to run the operation.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] kind, ARGV[3] fingerprint, ARGV[4] retention ms,
//	ARGV[5] the message's publish time in µs, ARGV[6] tries allowed
//
// Returns {"lost"}; {"run"} for a new key; or {status, field, value, ...}
// with status "completed" (its retention extended: a replay is an answer),
// "conflict" (another fingerprint; nothing written), "condemned" (the
// message was dead-lettered), "exhausted" (no tries left; not run) or "run"
// (tries incremented, running set).
var beginScript = redis.NewScript(commonLua + `
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return {"lost"}
end
if not redis.call("HGET", KEYS[1], "state") then
  redis.call("HSET", KEYS[1], "state", "in_progress", "command", ARGV[2], "fingerprint", ARGV[3],
    "tries", 1, "running", 1)
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
  return {"run"}
end
local settled = settled_by_record(ARGV[3], ARGV[5], ARGV[4])
if settled then
  return settled
end
if redis.call("HGET", KEYS[1], "running") then
  redis.call("HSET", KEYS[1], "unknown", 1)
end
local tries = tonumber(redis.call("HGET", KEYS[1], "tries") or "0")
if tries >= tonumber(ARGV[6]) then
  redis.call("HDEL", KEYS[1], "running")
  return record_reply("exhausted")
end
redis.call("HSET", KEYS[1], "tries", tries + 1, "running", 1)
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return record_reply("run")
`)

// commitScript stores an outcome: the fenced commit.
//
//	KEYS[1] record, KEYS[2] lock, KEYS[3] effect hash (optional)
//	ARGV[1] lock value, ARGV[2] fingerprint, ARGV[3] retention ms,
//	ARGV[4] status, ARGV[5] code, ARGV[6] message, ARGV[7] data,
//	ARGV[8] attempts, ARGV[9] processed_at,
//	ARGV[10] effect field, ARGV[11] effect increment, ARGV[12] placeholder
//
// A record already completed wins: it is returned unchanged and nothing is
// applied, which makes the script safe to run twice (go-redis retries a
// command whose connection broke, and so does the caller). Otherwise the
// caller must still hold the lock and the record must be in progress with
// the same fingerprint. The optional effect is HINCRBY KEYS[3] field by; its
// result replaces the first occurrence of the placeholder in data.
//
// Returns {"completed", field, value, ...} (stored earlier), {"lost"},
// {"conflict"} or {"committed", data, command}.
var commitScript = redis.NewScript(commonLua + `
local rec = redis.call("HMGET", KEYS[1], "state", "fingerprint", "command")
if rec[1] == "completed" then
  return record_reply("completed")
end
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return {"lost"}
end
if rec[2] ~= ARGV[2] then
  return {"conflict"}
end
local data = complete(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[3])
return {"committed", data, rec[3] or ""}
`)

// beginCommitScript is beginScript and commitScript in one round trip, for
// operations whose whole effect is the commit's counter update: there is
// nothing to run between them, so there is no attempt that could die
// half-way and tries are not counted.
//
//	KEYS[1] record, KEYS[2] lock, KEYS[3] effect hash (optional)
//	ARGV[1] lock value, ARGV[2] kind, ARGV[3] fingerprint, ARGV[4] retention ms,
//	ARGV[5] publish time µs, ARGV[6] status, ARGV[7] code, ARGV[8] message,
//	ARGV[9] data, ARGV[10] attempts, ARGV[11] processed_at,
//	ARGV[12] effect field, ARGV[13] effect increment, ARGV[14] placeholder
//
// Returns like beginScript, except that where beginScript says "run" it
// commits and returns {"committed", data, command}.
var beginCommitScript = redis.NewScript(commonLua + `
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return {"lost"}
end
if redis.call("HGET", KEYS[1], "state") then
  local settled = settled_by_record(ARGV[3], ARGV[5], ARGV[4])
  if settled then
    return settled
  end
else
  redis.call("HSET", KEYS[1], "command", ARGV[2], "fingerprint", ARGV[3])
end
local data = complete(ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[4])
return {"committed", data, ARGV[2]}
`)

// commonLua defines the functions the scripts share, on KEYS[1] the record
// and KEYS[2] the lock:
//
//   - record_reply(status): {status, field, value, ...} of the record;
//   - settled_by_record(fingerprint, published_us, retention_ms): for an
//     existing record, the reply that ends an attempt before it runs -
//     "conflict" (another fingerprint), "completed" (retention extended: a
//     replay is an answer) or "condemned" (a message published at or
//     before the key's last dead letter) - or nil to go on;
//   - complete(...): applies the optional effect (KEYS[3]) and writes the
//     outcome into the record, dropping the attempt fields and the lock;
//     it returns the stored data.
//
//nolint:dupword // Lua: "end end" closes two nested blocks
const commonLua = `
local function record_reply(status)
  local rec = redis.call("HGETALL", KEYS[1])
  table.insert(rec, 1, status)
  return rec
end
local function settled_by_record(fingerprint, published, retention)
  if redis.call("HGET", KEYS[1], "fingerprint") ~= fingerprint then
    return record_reply("conflict")
  end
  if redis.call("HGET", KEYS[1], "state") == "completed" then
    redis.call("PEXPIRE", KEYS[1], retention)
    return record_reply("completed")
  end
  local dead = redis.call("HGET", KEYS[1], "dead_before")
  if dead and tonumber(published) <= tonumber(dead) then
    return record_reply("condemned")
  end
  return nil
end
local function complete(status, code, message, data, attempts, processed_at, field, by, placeholder, retention)
  if KEYS[3] then
    local n = redis.call("HINCRBY", KEYS[3], field, by)
    local i, j = string.find(data, placeholder, 1, true)
    if i then
      data = string.sub(data, 1, i - 1) .. tostring(n) .. string.sub(data, j + 1)
    end
  end
  redis.call("HDEL", KEYS[1], "tries", "running", "unknown", "dead_before", "dead_effect")
  redis.call("HSET", KEYS[1], "state", "completed", "status", status, "code", code,
    "message", message, "data", data, "attempts", attempts, "processed_at", processed_at)
  redis.call("PEXPIRE", KEYS[1], retention)
  redis.call("DEL", KEYS[2])
  return data
end
`

// settleScript ends an attempt that produced no outcome and releases the
// lock. When the caller cannot be certain the attempt had no effect, the
// record remembers that an effect may exist.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] "1" when the attempt certainly had no effect,
//	ARGV[3] "1" to give the try back (the operation did not start)
//
// Returns "lost" (nothing written) or "ok".
var settleScript = redis.NewScript(`
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return "lost"
end
if redis.call("HGET", KEYS[1], "state") == "in_progress" then
  if ARGV[2] ~= "1" then
    redis.call("HSET", KEYS[1], "unknown", 1)
  end
  if ARGV[3] == "1" and tonumber(redis.call("HGET", KEYS[1], "tries") or "0") > 0 then
    redis.call("HINCRBY", KEYS[1], "tries", -1)
  end
  redis.call("HDEL", KEYS[1], "running")
end
redis.call("DEL", KEYS[2])
return "ok"
`)

// condemnScript records that the command published at ARGV[2] was
// dead-lettered, and releases the lock: every later delivery of a message
// of this key published at or before that moment ends as dead-lettered, and
// a re-drive (a later publish) starts with fresh tries.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] publish time µs, ARGV[3] effect (none|unknown),
//	ARGV[4] retention ms
//
// Returns {"lost"}, {"completed", field, value, ...} (nothing written: an
// outcome is stored, answer it instead) or {"condemned"}.
var condemnScript = redis.NewScript(`
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return {"lost"}
end
if redis.call("HGET", KEYS[1], "state") == "completed" then
  local rec = redis.call("HGETALL", KEYS[1])
  table.insert(rec, 1, "completed")
  return rec
end
local dead = tonumber(redis.call("HGET", KEYS[1], "dead_before") or "0")
local at = tonumber(ARGV[2])
if at > dead then
  dead = at
end
redis.call("HSET", KEYS[1], "dead_before", string.format("%.0f", dead), "dead_effect", ARGV[3], "tries", 0)
redis.call("HDEL", KEYS[1], "running")
redis.call("PEXPIRE", KEYS[1], ARGV[4])
redis.call("DEL", KEYS[2])
return {"condemned"}
`)

// peekScript reads a record without the lock, and extends the retention of
// a completed one: a duplicate answered from it is an answer of the outcome.
//
//	KEYS[1] record; ARGV[1] retention ms
var peekScript = redis.NewScript(`
local rec = redis.call("HGETALL", KEYS[1])
if redis.call("HGET", KEYS[1], "state") == "completed" then
  redis.call("PEXPIRE", KEYS[1], ARGV[1])
end
return rec
`)
