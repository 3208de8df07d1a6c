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

	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
)

// Ledger compares a run's outcomes with what the workers did in Redis: the
// simulated provider's sim:calls and sim:charges, and the carts.
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
	// CartLines is the number of (cart, SKU) pairs checked.
	CartLines int `json:"cart_lines"`
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
// (layout.Sim(keyPrefix, cluster): sim:calls and sim:charges, {sim}:... on a
// Redis Cluster client) and the carts the run
// added to, and compares them with the outcomes: a succeeded charge has
// exactly the provider charge its answer names, a failed one has none, no
// key is called but not answered, and each cart line holds the sum of the
// succeeded adds. It reads only the run's keys, so other traffic on the
// same Redis does not disturb it, but it is meaningful only for a complete
// run: an unanswered command may still take effect.
func CheckLedger(ctx context.Context, rdb redis.UniversalClient, keyPrefix string, s *Summary) (*Ledger, error) {
	l := &Ledger{}
	_, cluster := rdb.(*redis.ClusterClient)
	sim := layout.Sim(keyPrefix, cluster)
	var chargeKeys, refundKeys []string
	carts := map[[2]string]int64{} // (cart, sku) -> expected quantity
	for key, o := range s.Outcomes {
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
			l.checkCharge(key, s.Outcomes[key], calls.Val()[i], charges.Val()[i])
		}
	}

	lines := make([][2]string, 0, len(carts))
	for line := range carts {
		lines = append(lines, line)
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][0]+"\x00"+lines[i][1] < lines[j][0]+"\x00"+lines[j][1] })
	pipe := rdb.Pipeline()
	got := make([]*redis.StringCmd, len(lines))
	for i, line := range lines {
		got[i] = pipe.HGet(ctx, layout.Cart(keyPrefix, line[0]), line[1])
	}
	_, _ = pipe.Exec(ctx) // each command's error is checked below
	for i, line := range lines {
		var have int64
		v, err := got[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, fmt.Errorf("load: read cart %s: %w", line[0], err)
		default:
			have, _ = strconv.ParseInt(v, 10, 64)
			found++
		}
		if carts[line] > 0 {
			expected++
		}
		if want := carts[line]; have != want {
			l.Mismatches = append(l.Mismatches, fmt.Sprintf("cart %s sku %s: holds %d, the succeeded adds sum to %d", line[0], line[1], have, want))
		}
	}
	l.CartLines = len(lines)
	if expected > 0 && found == 0 {
		return nil, noLedger(ctx, rdb, keyPrefix, sim, expected)
	}
	if err := l.checkRefunds(ctx, rdb, sim, s, refundKeys); err != nil {
		return nil, err
	}
	return l, nil
}

// checkRefunds compares the succeeded refunds with the provider's ledger:
// each is held under its key with the data its answer named, none other is,
// and per charge they add up to sim:refunded, within the charge's amount.
func (l *Ledger) checkRefunds(ctx context.Context, rdb redis.UniversalClient, sim layout.SimLedger, s *Summary, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	l.RefundKeys = len(keys)
	held, err := rdb.HMGet(ctx, sim.Refunds, keys...).Result()
	if err != nil {
		return fmt.Errorf("load: read the provider's refunds: %w", err)
	}
	perCharge := map[string]int64{}
	for i, key := range keys {
		o := s.Outcomes[key]
		req, _ := o.Command.(messages.RefundRequest)
		raw, isHeld := held[i].(string)
		switch o.Result.Status {
		case messages.StatusSucceeded:
			l.Refunded++
			var want, have messages.RefundData
			if json.Unmarshal(o.Result.Data, &want) != nil || !isHeld || json.Unmarshal([]byte(raw), &have) != nil || want != have {
				l.Mismatches = append(l.Mismatches, fmt.Sprintf("refund %s: answered %s, the provider holds %v", key, o.Result.Data, held[i]))
			}
			perCharge[req.ChargeKey] += req.Amount
		default:
			if isHeld {
				l.Mismatches = append(l.Mismatches, "refund "+key+": "+string(o.Result.Status)+", but the provider refunded it")
			}
		}
	}
	charges := make([]string, 0, len(perCharge))
	for c := range perCharge {
		charges = append(charges, c)
	}
	sort.Strings(charges)
	totals, err := rdb.HMGet(ctx, sim.Refunded, charges...).Result()
	if err != nil {
		return fmt.Errorf("load: read the provider's refunded totals: %w", err)
	}
	for i, c := range charges {
		have, _ := strconv.ParseInt(fmt.Sprint(totals[i]), 10, 64)
		if have != perCharge[c] {
			l.Mismatches = append(l.Mismatches, fmt.Sprintf("charge %s: refunds add up to %d, the provider refunded %d", c, perCharge[c], have))
		}
		if co, ok := s.Outcomes[c]; ok {
			if cr, ok := co.Command.(messages.ChargeRequest); ok && have > cr.Amount {
				l.Mismatches = append(l.Mismatches, fmt.Sprintf("charge %s: %d refunded of %d", c, have, cr.Amount))
			}
		}
	}
	return nil
}

func (l *Ledger) checkCharge(key string, o Answered, rawCalls, rawCharge any) {
	var calls int64
	if s, ok := rawCalls.(string); ok {
		calls, _ = strconv.ParseInt(s, 10, 64)
	}
	l.Calls += calls
	if calls > 1 {
		l.CalledMoreThanOnce = append(l.CalledMoreThanOnce, key)
	}
	charge, charged := rawCharge.(string)
	if charged {
		l.Charged++
	}
	switch o.Result.Status {
	case messages.StatusSucceeded:
		l.Succeeded++
		var want, have messages.ChargeData
		if err := json.Unmarshal(o.Result.Data, &want); err != nil {
			l.Mismatches = append(l.Mismatches, key+": succeeded answer without charge data")
			return
		}
		switch {
		case !charged:
			l.Mismatches = append(l.Mismatches, key+": succeeded, but the provider holds no charge")
		case json.Unmarshal([]byte(charge), &have) != nil:
			l.Mismatches = append(l.Mismatches, key+": the provider's charge is not JSON")
		case have != want:
			l.Mismatches = append(l.Mismatches, fmt.Sprintf("%s: answered %+v, the provider holds %+v", key, want, have))
		}
		if calls == 0 {
			l.Mismatches = append(l.Mismatches, key+": succeeded without a provider call")
		}
	case messages.StatusFailed:
		l.Failed++
		if charged {
			l.Mismatches = append(l.Mismatches, key+": failed, but the provider charged it")
		}
	case messages.StatusRejected: // nothing may have happened
		if charged || calls > 0 {
			l.Mismatches = append(l.Mismatches, key+": rejected, but the provider was called")
		}
	}
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
