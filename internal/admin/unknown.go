package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// UnknownKey is a key on the resolution schedule: one told
// outcome_unknown, which the workers' resolver asks the provider about
// until it answers.
type UnknownKey struct {
	Key string
	// Next is when the resolver asks next (a claimed key is pushed a hold
	// ahead while a resolver works on it).
	Next time.Time
	// Record is what the key's record says now; nil when it has none
	// (expired, or evicted: the resolver drops the entry).
	Record *Record
}

// Says is one line on where the key's resolution stands.
func (u *UnknownKey) Says() string {
	r := u.Record
	switch {
	case r == nil:
		return "no record: expired or evicted; the resolver drops the entry"
	case r.State == StateCompleted:
		return "resolved: the provider held the effect; the outcome is stored (the resolver publishes it and drops the entry)"
	case r.State == StateDead && r.Voided:
		return "resolved: nothing took effect; the key is voided and its client told dead_lettered"
	case r.State == StateDead && r.Unknown():
		return "waiting: the provider has not answered yet"
	case r.State == StateDead:
		return "dead_lettered, certainly without effect; the resolver drops the entry"
	}
	return "re-driven (" + string(r.State) + "): its deliveries own it now; the resolver drops the entry"
}

// UnknownKeys returns up to n keys of the resolution schedule, the soonest
// ask first, with what each one's record says now (one pipelined round
// trip), and how many are scheduled in all.
func (a *Admin) UnknownKeys(ctx context.Context, n int64) ([]UnknownKey, int64, error) {
	if a.rdb == nil {
		return nil, 0, ErrNoRedis
	}
	pipe := a.rdb.Pipeline()
	card := pipe.ZCard(ctx, a.ResolveKey())
	rng := pipe.ZRangeWithScores(ctx, a.ResolveKey(), 0, n-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("admin: read the resolution schedule %s: %w", a.ResolveKey(), err)
	}
	out := make([]UnknownKey, 0, len(rng.Val()))
	pipe = a.rdb.Pipeline()
	recs := make([]*redis.MapStringStringCmd, 0, len(rng.Val()))
	for _, z := range rng.Val() {
		key, _ := z.Member.(string)
		out = append(out, UnknownKey{Key: key, Next: time.UnixMilli(int64(z.Score))})
		recs = append(recs, pipe.HGetAll(ctx, a.RecordKey(key)))
	}
	if len(out) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, 0, fmt.Errorf("admin: read the scheduled keys' records: %w", err)
		}
	}
	for i := range out {
		if f := recs[i].Val(); len(f) > 0 {
			out[i].Record, _ = parseRecord(out[i].Key, f)
		}
	}
	return out, card.Val(), nil
}
