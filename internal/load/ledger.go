package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/internal/ledger"
	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// Ledger compares a run's outcomes with what the workers did in Redis: the
// simulated provider's sim:calls, sim:charges, sim:refunds and
// sim:refunded, judged by the one ledger checker (internal/ledger), and
// the carts.
type Ledger struct {
	// ChargeKeys is the number of answered payment.charge keys; Succeeded
	// and Failed split them by outcome.
	ChargeKeys int `json:"charge_keys"`
	Succeeded  int `json:"charges_succeeded"`
	Failed     int `json:"charges_failed"`
	// Charged is how many of those keys the provider holds a charge for;
	// it must equal Succeeded.
	Charged int `json:"provider_charges"`
	// Calls is the provider calls made for those keys. With a provider that
	// never fails transiently it equals ChargeKeys: once per key.
	Calls int64 `json:"provider_calls"`
	// CalledMoreThanOnce lists keys the provider was called for more than
	// once; the contract allows it only to retry a transient provider error
	// or recover a crashed worker, always with the same key.
	CalledMoreThanOnce []string `json:"called_more_than_once"`
	// CallsPerKey counts the charge keys by how often the provider was
	// called for them.
	CallsPerKey map[int64]int `json:"calls_per_charge_key"`
	// CartLines is the number of (cart, SKU) pairs checked, CartUnits the
	// units they hold, CartWant the units the succeeded adds sum to, and
	// CartLinesWrong the lines whose quantity differs.
	CartLines      int   `json:"cart_lines"`
	CartUnits      int64 `json:"cart_units"`
	CartWant       int64 `json:"cart_units_added"`
	CartLinesWrong int   `json:"cart_lines_wrong"`
	// DoubleCharges counts the keys that took effect twice or without a
	// client sending them (the checker's DoubleCharge).
	DoubleCharges int `json:"double_charges"`
	// RefundKeys is the number of answered payment.refund keys; Refunded
	// the ones that succeeded, each of which the provider must hold, and
	// whose amounts must add up, per charge, to what the provider says was
	// refunded of it (never more than the charge).
	RefundKeys int `json:"refund_keys"`
	Refunded   int `json:"refunds_succeeded"`
	// Mismatches lists every disagreement, "key: what"; it must be empty.
	Mismatches []string `json:"mismatches"`
}

// ErrNoLedger: none of a run's effects is where the ledger should be: the
// key prefix is not the workers' (REDIS_KEY_PREFIX), or their provider is
// not the simulated one. Comparing would report every key as a mismatch.
var ErrNoLedger = errors.New("load: no ledger here")

// OK reports whether the ledger agrees with the outcomes.
func (l *Ledger) OK() bool { return len(l.Mismatches) == 0 }

// CheckLedger reads, for every answered key of s, the provider's ledger
// (layout.Sim(keyPrefix, cluster): sim:calls, sim:charges, sim:refunds and
// sim:refunded, {sim}:... on a Redis Cluster client) and the carts the run
// added to, and compares them with the outcomes through ledger.Check: a
// succeeded charge or refund is exactly the provider's, a failed one has
// none, a dead_lettered one took no effect, refunds stay within their
// charge; and each cart line holds the sum of the succeeded adds. It reads
// only the run's keys, so other traffic on the same Redis does not disturb
// it, but it is meaningful only for a complete run: an unanswered command
// may still take effect.
func CheckLedger(ctx context.Context, rdb redis.UniversalClient, keyPrefix string, s *Summary) (*Ledger, error) {
	l := &Ledger{}
	_, cluster := rdb.(*redis.ClusterClient)
	sim := layout.Sim(keyPrefix, cluster)
	var chargeKeys, refundKeys []string
	carts := map[[2]string]int64{} // (cart, sku) -> expected quantity
	in := &ledger.Input{Provider: ledger.Provider{Charges: map[string]messages.ChargeData{},
		Refunds: map[string]messages.RefundData{}, Refunded: map[string]int64{}}}
	for key, o := range s.Outcomes {
		res := o.Result
		in.Sends = append(in.Sends, ledger.Send{Key: key, Command: o.Command, Role: ledger.RoleFirst,
			Accepted: true, PublishAttempts: 1, Told: &res})
		switch cmd := o.Command.(type) {
		case messages.ChargeRequest:
			chargeKeys = append(chargeKeys, key)
		case messages.RefundRequest:
			refundKeys = append(refundKeys, key)
		case messages.CartAddRequest:
			line := [2]string{cmd.CartID, cmd.SKU}
			if _, ok := carts[line]; !ok {
				carts[line] = 0
			}
			if o.Result.Status == messages.StatusSucceeded {
				carts[line] += cmd.Quantity
			}
		}
	}
	sort.Strings(chargeKeys)
	sort.Slice(in.Sends, func(i, j int) bool { return in.Sends[i].Key < in.Sends[j].Key })
	l.ChargeKeys = len(chargeKeys)

	// expected counts the keys and cart lines whose effect must be in the
	// ledger (every answered charge was a provider call), found those that
	// are: none found of some expected is not a disagreement, it is the
	// wrong place.
	expected, found := 0, 0
	const batch = 1000
	for start := 0; start < len(chargeKeys); start += batch {
		keys := chargeKeys[start:min(start+batch, len(chargeKeys))]
		pipe := rdb.Pipeline()
		calls := pipe.HMGet(ctx, sim.Calls, keys...)
		charges := pipe.HMGet(ctx, sim.Charges, keys...)
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("load: read the provider ledger: %w", err)
		}
		for i, key := range keys {
			if st := s.Outcomes[key].Result.Status; st == messages.StatusSucceeded || st == messages.StatusFailed {
				expected++
				if calls.Val()[i] != nil || charges.Val()[i] != nil {
					found++
				}
			}
			if err := l.countCharge(key, s.Outcomes[key], calls.Val()[i], charges.Val()[i], in); err != nil {
				return nil, err
			}
		}
	}
	cartsExpected, cartsFound, err := readCarts(ctx, rdb, keyPrefix, carts, in)
	if err != nil {
		return nil, err
	}
	if expected += cartsExpected; expected > 0 && found+cartsFound == 0 {
		return nil, noLedger(ctx, rdb, keyPrefix, sim, expected)
	}
	if err := l.readRefunds(ctx, rdb, sim, s, refundKeys, in); err != nil {
		return nil, err
	}
	rep := ledger.Check(in)
	for _, v := range rep.Violations {
		l.Mismatches = append(l.Mismatches, v.Text)
	}
	l.CartLines, l.CartUnits, l.CartWant = rep.Stats.CartLines, rep.Stats.CartUnits, rep.Stats.CartWant
	l.CartLinesWrong, l.DoubleCharges = rep.Count(ledger.Carts), rep.Count(ledger.DoubleCharge)
	return l, nil
}

// readCarts reads the carts the run added to into in, and says how many
// of its lines must hold something and how many do.
func readCarts(ctx context.Context, rdb redis.UniversalClient, keyPrefix string, lines map[[2]string]int64, in *ledger.Input) (expected, found int, err error) {
	var ids []string
	for line, want := range lines {
		if !slices.Contains(ids, line[0]) {
			ids = append(ids, line[0])
		}
		if want > 0 {
			expected++
		}
	}
	sort.Strings(ids)
	if in.Carts, err = ledger.ReadCarts(ctx, rdb, keyPrefix, ids); err != nil {
		return 0, 0, fmt.Errorf("load: read the carts: %w", err)
	}
	for line := range lines {
		if in.Carts[line[0]][line[1]] != 0 {
			found++
		}
	}
	return expected, found, nil
}

// readRefunds reads the provider's refunds of the run's refund keys, and
// the refunded totals of their charges, into in.
func (l *Ledger) readRefunds(ctx context.Context, rdb redis.UniversalClient, sim layout.SimLedger, s *Summary, keys []string, in *ledger.Input) error {
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	l.RefundKeys = len(keys)
	held, err := rdb.HMGet(ctx, sim.Refunds, keys...).Result()
	if err != nil {
		return fmt.Errorf("load: read the provider's refunds: %w", err)
	}
	charges := map[string]bool{}
	for i, key := range keys {
		o := s.Outcomes[key]
		if o.Result.Status == messages.StatusSucceeded {
			l.Refunded++
		}
		if raw, ok := held[i].(string); ok {
			var r messages.RefundData
			if err := json.Unmarshal([]byte(raw), &r); err != nil {
				return fmt.Errorf("load: the provider's refund %s = %q: %w", key, raw, err)
			}
			in.Provider.Refunds[key] = r
		}
		// Totals only of charges the run answered: the checker knows them.
		if req, ok := o.Command.(messages.RefundRequest); ok {
			if co, ok := s.Outcomes[req.ChargeKey]; ok && co.Command.Kind() == messages.KindPaymentCharge {
				charges[req.ChargeKey] = true
			}
		}
	}
	names := make([]string, 0, len(charges))
	for c := range charges {
		names = append(names, c)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil
	}
	totals, err := rdb.HMGet(ctx, sim.Refunded, names...).Result()
	if err != nil {
		return fmt.Errorf("load: read the provider's refunded totals: %w", err)
	}
	for i, c := range names {
		if v, ok := totals[i].(string); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("load: the provider's refunded total of %s = %q: %w", c, v, err)
			}
			in.Provider.Refunded[c] = n
		}
	}
	return nil
}

// countCharge counts one charge key and puts the provider's charge, if
// any, into in; a succeeded charge the provider was never called for is a
// mismatch of its own.
func (l *Ledger) countCharge(key string, o Answered, rawCalls, rawCharge any, in *ledger.Input) error {
	var calls int64
	if s, ok := rawCalls.(string); ok {
		calls, _ = strconv.ParseInt(s, 10, 64)
	}
	l.Calls += calls
	if l.CallsPerKey == nil {
		l.CallsPerKey = map[int64]int{}
	}
	l.CallsPerKey[calls]++
	if calls > 1 {
		l.CalledMoreThanOnce = append(l.CalledMoreThanOnce, key)
	}
	if raw, charged := rawCharge.(string); charged {
		l.Charged++
		var c messages.ChargeData
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			return fmt.Errorf("load: the provider's charge %s = %q: %w", key, raw, err)
		}
		in.Provider.Charges[key] = c
	}
	switch o.Result.Status {
	case messages.StatusSucceeded:
		l.Succeeded++
		if calls == 0 {
			l.Mismatches = append(l.Mismatches, key+": succeeded without a provider call")
		}
	case messages.StatusFailed:
		l.Failed++
	case messages.StatusRejected: // dead_lettered, outcome_unknown: ledger.Check judges them
	}
	return nil
}

// noLedger is ErrNoLedger, saying where it looked and, on a single Redis,
// under which prefixes a simulated provider's ledger does exist (a bounded
// SCAN: at most 100 batches).
func noLedger(ctx context.Context, rdb redis.UniversalClient, prefix string, sim layout.SimLedger, expected int) error {
	err := fmt.Errorf("%w: none of the run's %d answered charges and cart lines is in the simulated provider's ledger (%s) or the carts under the key prefix %q; check the prefix: it must be the workers' REDIS_KEY_PREFIX (and the workers' provider the simulated one)",
		ErrNoLedger, expected, sim.Calls, prefix)
	single, ok := rdb.(*redis.Client)
	if !ok {
		return err
	}
	suffix := strings.TrimPrefix(sim.Calls, prefix)
	var found []string
	var cursor uint64
	for range 100 {
		keys, next, serr := single.Scan(ctx, cursor, "*"+suffix, 1000).Result()
		if serr != nil {
			return err
		}
		for _, k := range keys {
			if p := strings.TrimSuffix(k, suffix); !slices.Contains(found, strconv.Quote(p)) && len(found) < 5 {
				found = append(found, strconv.Quote(p))
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("%w; ledgers exist under %s", err, strings.Join(found, ", "))
	}
	return err
}

// CheckCarts is CheckLedger's cart half alone, for a run whose provider
// keeps no ledger here (Stripe's is its Dashboard; stripe-mock keeps
// none): every cart line the run added to holds the sum of its succeeded
// adds, judged by the one ledger checker.
func CheckCarts(ctx context.Context, rdb redis.UniversalClient, keyPrefix string, s *Summary) (*Ledger, error) {
	l := &Ledger{}
	in := &ledger.Input{Provider: ledger.Provider{Charges: map[string]messages.ChargeData{}}}
	lines := map[[2]string]int64{}
	for key, o := range s.Outcomes {
		add, ok := o.Command.(messages.CartAddRequest)
		if !ok {
			continue
		}
		res := o.Result
		in.Sends = append(in.Sends, ledger.Send{Key: key, Command: o.Command, Role: ledger.RoleFirst,
			Accepted: true, PublishAttempts: 1, Told: &res})
		line := [2]string{add.CartID, add.SKU}
		if res.Status == messages.StatusSucceeded {
			lines[line] += add.Quantity
		} else if _, ok := lines[line]; !ok {
			lines[line] = 0
		}
	}
	sort.Slice(in.Sends, func(i, j int) bool { return in.Sends[i].Key < in.Sends[j].Key })
	if _, _, err := readCarts(ctx, rdb, keyPrefix, lines, in); err != nil {
		return nil, err
	}
	rep := ledger.Check(in)
	for _, v := range rep.Violations {
		l.Mismatches = append(l.Mismatches, v.Text)
	}
	l.CartLines, l.CartUnits, l.CartWant, l.CartLinesWrong = rep.Stats.CartLines, rep.Stats.CartUnits, rep.Stats.CartWant, rep.Count(ledger.Carts)
	return l, nil
}
