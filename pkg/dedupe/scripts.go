package dedupe

import "github.com/redis/go-redis/v9"

// beginScript reads the record and, when it is absent, marks the key in
// progress with its command and fingerprint - only while the caller holds
// the lock.
//
//	KEYS[1] record, KEYS[2] lock
//	ARGV[1] lock value, ARGV[2] command, ARGV[3] fingerprint, ARGV[4] retention ms
//
// Returns {"lost"} or {"new"} or {"found", field, value, ...}.
var beginScript = redis.NewScript(`
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return {"lost"}
end
local rec = redis.call("HGETALL", KEYS[1])
if #rec == 0 then
  redis.call("HSET", KEYS[1], "state", "in_progress", "command", ARGV[2], "fingerprint", ARGV[3])
  redis.call("PEXPIRE", KEYS[1], ARGV[4])
  return {"new"}
end
table.insert(rec, 1, "found")
return rec
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
// command whose connection broke, and so does our own retry). Otherwise the
// caller must still hold the lock and the record must be in progress with
// the same fingerprint. The optional effect is HINCRBY KEYS[3] field by; its
// result replaces the first occurrence of the placeholder in data.
//
// Returns {"completed", field, value, ...} (already stored), {"lost"},
// {"conflict"} or {"committed", data, command}.
//
//nolint:dupword // Lua: "end end" closes two nested blocks
var commitScript = redis.NewScript(`
if redis.call("HGET", KEYS[1], "state") == "completed" then
  local rec = redis.call("HGETALL", KEYS[1])
  table.insert(rec, 1, "completed")
  return rec
end
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return {"lost"}
end
if redis.call("HGET", KEYS[1], "fingerprint") ~= ARGV[2] then
  return {"conflict"}
end
local data = ARGV[7]
if KEYS[3] then
  local n = redis.call("HINCRBY", KEYS[3], ARGV[10], ARGV[11])
  local i, j = string.find(data, ARGV[12], 1, true)
  if i then
    data = string.sub(data, 1, i - 1) .. tostring(n) .. string.sub(data, j + 1)
  end
end
redis.call("HSET", KEYS[1], "state", "completed", "status", ARGV[4], "code", ARGV[5],
  "message", ARGV[6], "data", data, "attempts", ARGV[8], "processed_at", ARGV[9])
redis.call("PEXPIRE", KEYS[1], ARGV[3])
redis.call("DEL", KEYS[2])
return {"committed", data, redis.call("HGET", KEYS[1], "command") or ""}
`)
