package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
type Effect struct {
	// Key is the full Redis key of the hash, e.g. Namespace+"cart:{cart_7}".
	// It must carry a hash tag ({...}): the keys that remember applied
	// effects, AppliedKey(Key), share it and so Key's Cluster slot.
	Key string
	// Field and By: HINCRBY Key Field By.
	Field string
	By    int64
}

// Placeholder is the JSON value in an outcome's Data that a commit with an
// Effect replaces by the counter's new value.
const Placeholder = `"$EFFECT$"`

// AppliedSuffix makes the name of the hash that remembers the effects
// applied to an effect's key: <Key>:applied, idempotency key and payload
// fingerprint -> the counter's value right after that effect.
const AppliedSuffix = ":applied"

// AppliedKey returns the hash that remembers the effects applied to the
// counter hash key: key + ":applied", in key's Cluster slot when key carries
// a hash tag.
func AppliedKey(key string) string { return key + AppliedSuffix }

// ErrNoHashTag means an Effect's Key carries no hash tag, so its applied
// hash could land in another Cluster slot.
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

// applyEffectScript applies an effect once per idempotency key and payload.
//
//	KEYS[1] the counter hash, KEYS[2] its applied hash (same slot)
//	ARGV[1] "<idempotency key>:<fingerprint>", ARGV[2] field, ARGV[3] by,
//	ARGV[4] retention ms
//
// The applied hash expires as a whole, a retention after the last run on
// its counter (Redis 7.0 has no expiry per field), so an entry outlives
// every redelivery of its command, as the key's record does. Returns the counter's value right after this key's effect.
var applyEffectScript = redis.NewScript(`
local done = redis.call("HGET", KEYS[2], ARGV[1])
if done then
  redis.call("PEXPIRE", KEYS[2], ARGV[4])
  return tonumber(done)
end
local n = redis.call("HINCRBY", KEYS[1], ARGV[2], ARGV[3])
redis.call("HSET", KEYS[2], ARGV[1], n)
redis.call("PEXPIRE", KEYS[2], ARGV[4])
return n
`)

// ApplyEffect applies effect for key's command with fingerprint unless it
// was applied before, and returns the counter's value right after it: on a
// second run, the value the first produced, with nothing changed. It takes
// no lock and touches no record, so it is safe on a Redis Cluster; it is
// the operation of an effect-only command, run between Begin and Commit.
//
// An error leaves it unknown whether the effect was applied; running it
// again (or LookupEffect) tells.
func (s *Store) ApplyEffect(ctx context.Context, key, fingerprint string, effect *Effect) (int64, error) {
	if err := effect.Validate(); err != nil {
		return 0, err
	}
	n, err := applyEffectScript.Run(ctx, s.rdb, []string{effect.Key, AppliedKey(effect.Key)},
		appliedField(key, fingerprint), effect.Field, effect.By, s.cfg.Retention.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("dedupe: apply effect to %s: %w", effect.Key, err)
	}
	return n, nil
}

// LookupEffect reports whether ApplyEffect applied effect for key's command
// with fingerprint, and the value it produced; it writes nothing.
func (s *Store) LookupEffect(ctx context.Context, key, fingerprint string, effect *Effect) (n int64, found bool, err error) {
	if err := effect.Validate(); err != nil {
		return 0, false, err
	}
	v, err := s.rdb.HGet(ctx, AppliedKey(effect.Key), appliedField(key, fingerprint)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("dedupe: look up effect on %s: %w", effect.Key, err)
	}
	n, err = strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("dedupe: applied effect of %s on %s: %q is no integer", key, effect.Key, v)
	}
	return n, true, nil
}

// appliedField names one command's entry in an applied hash: its
// idempotency key and payload fingerprint. The fingerprint keeps a key
// reused with another payload after its record expired from reading the
// old command's value instead of applying its own.
func appliedField(key, fingerprint string) string { return key + ":" + fingerprint }
