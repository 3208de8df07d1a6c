package dedupe

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The resolution schedule (contract v1.2, "Resolution"): a sorted set of
// the keys whose outcome is unknown, scored by when a resolver should next
// ask the provider about them (Unix ms). It is an index, not the truth: the
// key's record says whether it is still dead with its outcome unknown, and
// a resolver that finds it otherwise drops the entry. A key is scheduled
// before its record becomes dead-unknown, so a crash between the two
// leaves at worst an entry the resolver drops.
//
//	<Namespace>idem:resolve   zset   key -> next ask, Unix ms

// ResolveKey returns the Redis key of the resolution schedule.
func (s *Store) ResolveKey() string { return s.cfg.Namespace + ResolveKeyDefault }

// ResolveKeyDefault names the resolution schedule under the namespace.
const ResolveKeyDefault = "idem:resolve"

// Schedule puts key on the resolution schedule at at, or moves it earlier.
func (s *Store) Schedule(ctx context.Context, key string, at time.Time) error {
	err := s.rdb.ZAddLT(ctx, s.ResolveKey(), redis.Z{Score: float64(at.UnixMilli()), Member: key}).Err()
	if err != nil {
		return fmt.Errorf("dedupe: schedule resolution of %s: %w", key, err)
	}
	return nil
}

// Reschedule moves a scheduled key to at (and does nothing for a key no
// longer scheduled).
func (s *Store) Reschedule(ctx context.Context, key string, at time.Time) error {
	err := s.rdb.ZAddXX(ctx, s.ResolveKey(), redis.Z{Score: float64(at.UnixMilli()), Member: key}).Err()
	if err != nil {
		return fmt.Errorf("dedupe: reschedule resolution of %s: %w", key, err)
	}
	return nil
}

// Unschedule takes key off the resolution schedule.
func (s *Store) Unschedule(ctx context.Context, key string) error {
	if err := s.rdb.ZRem(ctx, s.ResolveKey(), key).Err(); err != nil {
		return fmt.Errorf("dedupe: unschedule resolution of %s: %w", key, err)
	}
	return nil
}

// claimScript hands out up to ARGV[3] keys due at ARGV[1] and pushes each to
// ARGV[2], so that no other resolver takes them while this one works.
var claimScript = redis.NewScript(`
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, ARGV[3])
for _, k in ipairs(due) do
  redis.call("ZADD", KEYS[1], "XX", ARGV[2], k)
end
return due
`)

// ClaimDue returns up to n keys whose resolution is due at now, each moved
// to now+hold so that other resolvers leave it alone meanwhile: the caller
// unschedules or reschedules every key it got, or it comes back after hold.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, hold time.Duration, n int) ([]string, error) {
	keys, err := claimScript.Run(ctx, s.rdb, []string{s.ResolveKey()},
		now.UnixMilli(), now.Add(hold).UnixMilli(), n).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dedupe: claim due resolutions: %w", err)
	}
	return keys, nil
}

// Scheduled is one key on the resolution schedule.
type Scheduled struct {
	Key  string
	Next time.Time
}

// ListScheduled returns up to n scheduled keys, the soonest first, and how
// many there are in all.
func (s *Store) ListScheduled(ctx context.Context, n int64) ([]Scheduled, int64, error) {
	pipe := s.rdb.Pipeline()
	card := pipe.ZCard(ctx, s.ResolveKey())
	rng := pipe.ZRangeWithScores(ctx, s.ResolveKey(), 0, n-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("dedupe: list scheduled resolutions: %w", err)
	}
	out := make([]Scheduled, 0, len(rng.Val()))
	for _, z := range rng.Val() {
		key, _ := z.Member.(string)
		out = append(out, Scheduled{Key: key, Next: time.UnixMilli(int64(z.Score))})
	}
	return out, card.Val(), nil
}

// ScheduledCount returns how many keys wait for resolution.
func (s *Store) ScheduledCount(ctx context.Context) (int64, error) {
	n, err := s.rdb.ZCard(ctx, s.ResolveKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("dedupe: count scheduled resolutions: %w", err)
	}
	return n, nil
}
