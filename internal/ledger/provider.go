package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// ReadProvider reads the simulated provider's whole ledger (sim:charges,
// sim:refunds, sim:refunded, sim:voided and sim:calls under the names sim
// gives, e.g. layout.Sim(prefix, false)). Give each run its own prefix:
// the checker takes every effect in it for the run's.
func ReadProvider(ctx context.Context, rdb redis.UniversalClient, sim layout.SimLedger) (Provider, error) {
	p := Provider{}
	var err error
	if p.Charges, err = readJSON[messages.ChargeData](ctx, rdb, sim.Charges); err != nil {
		return Provider{}, err
	}
	if p.Refunds, err = readJSON[messages.RefundData](ctx, rdb, sim.Refunds); err != nil {
		return Provider{}, err
	}
	if p.Refunded, err = ReadInts(ctx, rdb, sim.Refunded); err != nil {
		return Provider{}, err
	}
	if p.Calls, err = ReadInts(ctx, rdb, sim.Calls); err != nil {
		return Provider{}, err
	}
	if p.Voided, err = rdb.HGetAll(ctx, sim.Voided).Result(); err != nil {
		return Provider{}, fmt.Errorf("ledger: read %s: %w", sim.Voided, err)
	}
	return p, nil
}

func readJSON[T any](ctx context.Context, rdb redis.UniversalClient, hash string) (map[string]T, error) {
	raw, err := rdb.HGetAll(ctx, hash).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: read %s: %w", hash, err)
	}
	out := make(map[string]T, len(raw))
	for k, v := range raw {
		var t T
		if err := json.Unmarshal([]byte(v), &t); err != nil {
			return nil, fmt.Errorf("ledger: %s %s = %q: %w", hash, k, v, err)
		}
		out[k] = t
	}
	return out, nil
}

func ReadInts(ctx context.Context, rdb redis.UniversalClient, hash string) (map[string]int64, error) {
	raw, err := rdb.HGetAll(ctx, hash).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: read %s: %w", hash, err)
	}
	out := make(map[string]int64, len(raw))
	for k, v := range raw {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ledger: %s %s = %q: %w", hash, k, v, err)
		}
		out[k] = n
	}
	return out, nil
}

// ScanCarts reads every cart under keyPrefix on a single Redis (a SCAN):
// for a harness whose Redis holds only its own run.
func ScanCarts(ctx context.Context, rdb *redis.Client, keyPrefix string) (map[string]map[string]int64, error) {
	prefix, suffix := layout.Cart(keyPrefix, ""), "}"
	prefix = strings.TrimSuffix(prefix, suffix) // "<prefix>cart:{"
	carts := map[string]map[string]int64{}
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		cart := strings.TrimSuffix(strings.TrimPrefix(key, prefix), suffix)
		var err error
		if carts[cart], err = ReadInts(ctx, rdb, key); err != nil {
			return nil, err
		}
	}
	return carts, iter.Err()
}

// ReadCarts reads the named carts (the ones a run added to), so that other
// traffic on the same Redis does not disturb a check.
func ReadCarts(ctx context.Context, rdb redis.UniversalClient, keyPrefix string, ids []string) (map[string]map[string]int64, error) {
	carts := make(map[string]map[string]int64, len(ids))
	for _, id := range ids {
		lines, err := ReadInts(ctx, rdb, layout.Cart(keyPrefix, id))
		if err != nil {
			return nil, err
		}
		if len(lines) > 0 {
			carts[id] = lines
		}
	}
	return carts, nil
}
