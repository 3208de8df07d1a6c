package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Effect is a counter update that is an operation's whole effect (cart.add's
// HINCRBY of a cart line). Its new value replaces Placeholder in the
// outcome's Data.
//
// It reaches Redis in one of two ways, chosen by the engine:
//
//   - in the commit script, with the record ([Store.Commit],
//     [Store.BeginAndCommit]): one script, so there is no moment where the
//     effect happened and the key is not completed. Only where the counter
//     and the record may share a script: a single Redis or Sentinel.
//   - on its own, before the commit ([Store.ApplyEffect]), idempotent by
//     itself: the script that increments also remembers, in Key's slot,
//     which idempotency key it applied and the value it produced, and a
//     second run returns that value and changes nothing. That is what a
//     Redis Cluster allows: Key and the record hash to different slots.
//     [Store.VoidEffect] is the provider void of such an effect (contract
//     v1.2): it finds the applied value, or makes sure the key never
//     applies it.
type Effect struct {
	// Key is the full Redis key of the hash, e.g. Namespace+"cart:{cart_7}".
	// It must carry a hash tag ({...}): the keys that remember applied
	// effects, AppliedKey(Key, ...), share it and so Key's Cluster slot.
	Key string
	// Field and By: HINCRBY Key Field By.
	Field string
	By    int64
	// TTL, if positive, is set on Key after every change (PEXPIRE): a cart
	// expires TTL after its last add. Zero: Key never expires.
	TTL time.Duration
}

// Placeholder is the JSON value in an outcome's Data that a commit with an
// Effect replaces by the counter's new value.
const Placeholder = `"$EFFECT$"`

// AppliedSuffix makes the name of the keys that remember the effects
// applied to an effect's key: <Key>:applied:<idempotency key>:<payload
// fingerprint> -> the counter's value right after that effect, or "void".
// Each expires on its own, a retention after it was written. (Before
// contract v1.2 one hash, <Key>:applied, held them all, and expired as a
// whole a retention after the last add: it grew with every add to a busy
// cart. The scripts still read it.)
const AppliedSuffix = ":applied"

// AppliedKey returns the key that remembers the effect of one command
// (idempotency key and payload fingerprint) on the counter hash key, in
// key's Cluster slot when key carries a hash tag.
func AppliedKey(key, idemKey, fingerprint string) string {
	return key + AppliedSuffix + ":" + appliedField(idemKey, fingerprint)
}

// appliedHashV1 is the hash of applied effects of records written before
// contract v1.2.
func appliedHashV1(key string) string { return key + AppliedSuffix }

// ErrNoHashTag means an Effect's Key carries no hash tag, so its applied
// keys could land in another Cluster slot.
var ErrNoHashTag = errors.New("dedupe: effect key has no hash tag ({...})")

// Validate checks that the effect can be applied on any deployment: its
// Key carries a non-empty hash tag.
func (e *Effect) Validate() error {
	if hashTag(e.Key) == "" {
		return fmt.Errorf("%w: %q", ErrNoHashTag, e.Key)
	}
	return nil
}

// hashTag returns the part of key Redis Cluster hashes when key has one:
// what lies between the first "{" and the first "}" after it, if not empty.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

// appliedLua reads what the applied keys remember of one command: its
// own key KEYS[2], or the v1 hash KEYS[3] field ARGV[1].
const appliedLua = `
local function applied()
  local v = redis.call("GET", KEYS[2])
  if v then return v end
  return redis.call("HGET", KEYS[3], ARGV[1])
end
`

// applyEffectScript applies an effect once per idempotency key and payload.
//
//	KEYS[1] the counter hash, KEYS[2] its applied key for this command,
//	KEYS[3] the v1 applied hash (same slot)
//	ARGV[1] "<idempotency key>:<fingerprint>", ARGV[2] field, ARGV[3] by,
//	ARGV[4] retention ms, ARGV[5] counter expiry ms (0: none)
//
// Returns the counter's value right after this key's effect, or "void"
// when the effect was voided.
var applyEffectScript = redis.NewScript(appliedLua + `
local done = applied()
if done then
  -- Every run for the command keeps its entry as long as its record
  -- (which every Begin extends): one that expired under a live record
  -- would let a later try apply the effect again.
  if redis.call("EXISTS", KEYS[2]) == 1 then
    redis.call("PEXPIRE", KEYS[2], ARGV[4])
  end
  return done
end
local n = redis.call("HINCRBY", KEYS[1], ARGV[2], ARGV[3])
if tonumber(ARGV[5]) > 0 then
  redis.call("PEXPIRE", KEYS[1], ARGV[5])
end
redis.call("SET", KEYS[2], n, "PX", ARGV[4])
return tostring(n)
`)

// voidEffectScript is the void of an effect applied apart: the value the
// command's effect produced, or, if it was never applied, a tombstone that
// keeps it from ever being applied (for the retention).
//
//	KEYS as applyEffectScript; ARGV[1] "<key>:<fingerprint>", ARGV[2] retention ms
//
// Returns the value, or "void".
var voidEffectScript = redis.NewScript(appliedLua + `
local done = applied()
if done then
  return done
end
redis.call("SET", KEYS[2], "void", "PX", ARGV[2])
return "void"
`)

// ErrEffectVoided means the effect of this command was voided (VoidEffect):
// it is never applied.
var ErrEffectVoided = errors.New("dedupe: the effect was voided")

func (s *Store) effectScriptKeys(key, fingerprint string, effect *Effect) []string {
	return []string{effect.Key, AppliedKey(effect.Key, key, fingerprint), appliedHashV1(effect.Key)}
}

// ApplyEffect applies effect for key's command with fingerprint unless it
// was applied before, and returns the counter's value right after it: on a
// second run, the value the first produced, with nothing changed. It takes
// no lock and touches no record, so it is safe on a Redis Cluster; it is
// the operation of an effect-only command, run between Begin and Commit.
// ErrEffectVoided: the effect was voided and is not applied.
//
// An error leaves it unknown whether the effect was applied; running it
// again (or LookupEffect) tells.
func (s *Store) ApplyEffect(ctx context.Context, key, fingerprint string, effect *Effect) (int64, error) {
	if err := effect.Validate(); err != nil {
		return 0, err
	}
	v, err := applyEffectScript.Run(ctx, s.rdb, s.effectScriptKeys(key, fingerprint, effect),
		appliedField(key, fingerprint), effect.Field, effect.By, s.cfg.Retention.Milliseconds(),
		effect.TTL.Milliseconds()).Text()
	if err != nil {
		return 0, fmt.Errorf("dedupe: apply effect to %s: %w", effect.Key, err)
	}
	return appliedValue(key, effect, v)
}

// VoidEffect returns the value ApplyEffect produced for key's command with
// fingerprint (found), or, when it never ran, makes sure it never will
// (found false): a paused worker that resumes later applies nothing.
func (s *Store) VoidEffect(ctx context.Context, key, fingerprint string, effect *Effect) (n int64, found bool, err error) {
	if err := effect.Validate(); err != nil {
		return 0, false, err
	}
	v, err := voidEffectScript.Run(ctx, s.rdb, s.effectScriptKeys(key, fingerprint, effect),
		appliedField(key, fingerprint), s.cfg.Retention.Milliseconds()).Text()
	if err != nil {
		return 0, false, fmt.Errorf("dedupe: void effect on %s: %w", effect.Key, err)
	}
	n, err = appliedValue(key, effect, v)
	if errors.Is(err, ErrEffectVoided) {
		return 0, false, nil
	}
	return n, err == nil, err
}

// LookupEffect reports whether ApplyEffect applied effect for key's command
// with fingerprint, and the value it produced; it writes nothing.
func (s *Store) LookupEffect(ctx context.Context, key, fingerprint string, effect *Effect) (n int64, found bool, err error) {
	if err := effect.Validate(); err != nil {
		return 0, false, err
	}
	v, err := s.rdb.Get(ctx, AppliedKey(effect.Key, key, fingerprint)).Result()
	if errors.Is(err, redis.Nil) {
		v, err = s.rdb.HGet(ctx, appliedHashV1(effect.Key), appliedField(key, fingerprint)).Result()
	}
	switch {
	case errors.Is(err, redis.Nil):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("dedupe: look up effect on %s: %w", effect.Key, err)
	}
	n, err = appliedValue(key, effect, v)
	if errors.Is(err, ErrEffectVoided) {
		return 0, false, nil
	}
	return n, err == nil, err
}

func appliedValue(key string, effect *Effect, v string) (int64, error) {
	if v == "void" {
		return 0, ErrEffectVoided
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("dedupe: applied effect of %s on %s: %q is no integer", key, effect.Key, v)
	}
	return n, nil
}

// appliedField names one command's entry: its idempotency key and payload
// fingerprint. The fingerprint keeps a key reused with another payload
// after its record expired from reading the old command's value instead of
// applying its own.
func appliedField(key, fingerprint string) string { return key + ":" + fingerprint }
