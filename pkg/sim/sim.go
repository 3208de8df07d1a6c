// Package sim owns the simulated payment provider that the demo, the tests
// and the benchmarks charge and refund against. It behaves like a real
// provider with idempotency keys (Stripe's Idempotency-Key): it takes the
// key with every call, never charges or refunds one key twice, never lets
// the refunds of a charge exceed it, and can void a key (contract v1.2):
// a voided key is never charged or refunded afterwards. It keeps its
// ledger in Redis (package layout names the keys): sim:charges, sim:calls,
// sim:refunds, sim:refunded, sim:voided; on a Redis Cluster the same names
// with the {sim} hash tag, so that each of its scripts touches keys of one
// slot.
package sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/layout"
	"github.com/idempay/idempay/pkg/messages"
	"github.com/idempay/idempay/pkg/ops/charge"
	"github.com/idempay/idempay/pkg/ops/refund"
	"github.com/idempay/idempay/pkg/processor"
)

// Config configures the simulated provider.
type Config struct {
	// KeyPrefix is put before the ledger keys. Defaults to "".
	KeyPrefix string
	// Latency is how long one call takes. Defaults to 0.
	Latency time.Duration
	// FailureRate is the share of calls (0-1) that fail transiently, before
	// anything is charged. Defaults to 0.
	FailureRate float64
	// AmbiguousRate is the share of calls (0-1) that take effect and then
	// answer with an ambiguous error, as a provider does whose response is
	// lost or that times out after committing. Defaults to 0.
	AmbiguousRate float64
}

// Provider is the simulated provider. It implements charge.Provider,
// charge.Lookup, charge.Voider, refund.Provider, refund.Lookup and
// refund.Voider.
type Provider struct {
	rdb  redis.UniversalClient
	cfg  Config
	keys layout.SimLedger
}

var (
	_ charge.Provider = (*Provider)(nil)
	_ charge.Lookup   = (*Provider)(nil)
	_ refund.Provider = (*Provider)(nil)
	_ refund.Lookup   = (*Provider)(nil)
	_ charge.Voider   = (*Provider)(nil)
	_ refund.Voider   = (*Provider)(nil)
)

// New returns a simulated provider on rdb.
func New(rdb redis.UniversalClient, cfg *Config) (*Provider, error) {
	if rdb == nil {
		return nil, errors.New("sim: nil Redis client")
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	for name, r := range map[string]float64{"FailureRate": c.FailureRate, "AmbiguousRate": c.AmbiguousRate} {
		if r < 0 || r > 1 {
			return nil, fmt.Errorf("sim: Config.%s must be within 0-1, got %v", name, r)
		}
	}
	if c.Latency < 0 {
		return nil, errors.New("sim: Config.Latency must not be negative")
	}
	_, cluster := rdb.(*redis.ClusterClient)
	return &Provider{rdb: rdb, cfg: c, keys: layout.Sim(c.KeyPrefix, cluster)}, nil
}

// Ledger returns the names of the provider's ledger hashes: the contract's
// sim:* on a single Redis or Sentinel, the {sim}-tagged ones on a Redis
// Cluster client.
func (s *Provider) Ledger() layout.SimLedger { return s.keys }

// chargeScript counts the call and returns the key's charge, making it if
// there is none; a declined account, or a voided key, is counted and
// charged nothing.
//
//	KEYS[1] sim:calls, KEYS[2] sim:charges, KEYS[3] sim:voided
//	ARGV[1] key, ARGV[2] new charge JSON, ARGV[3] "1" to decline
//
// Returns {"ok", charge JSON}, {"declined"} or {"voided"}.
var chargeScript = redis.NewScript(`
redis.call("HINCRBY", KEYS[1], ARGV[1], 1)
local c = redis.call("HGET", KEYS[2], ARGV[1])
if c then return {"ok", c} end
if redis.call("HEXISTS", KEYS[3], ARGV[1]) == 1 then return {"voided"} end
if ARGV[3] == "1" then return {"declined"} end
redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])
return {"ok", ARGV[2]}
`)

// voidScript returns the effect recorded for a key in KEYS[1], or, when
// there is none, voids the key: a charge or refund script finding it in
// KEYS[2] afterwards makes nothing. Voiding twice keeps the first time.
//
//	KEYS[1] sim:charges or sim:refunds, KEYS[2] sim:voided
//	ARGV[1] key, ARGV[2] the time, RFC 3339
//
// Returns {"found", JSON} or {"voided"}.
var voidScript = redis.NewScript(`
local c = redis.call("HGET", KEYS[1], ARGV[1])
if c then return {"found", c} end
redis.call("HSETNX", KEYS[2], ARGV[1], ARGV[2])
return {"voided"}
`)

// Charge implements charge.Provider: one Redis round trip.
func (s *Provider) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	if err := s.wait(ctx); err != nil {
		return messages.ChargeData{}, err
	}
	if s.roll(s.cfg.FailureRate) {
		// The call reached the provider (counted) and was refused before
		// anything was charged.
		if err := s.rdb.HIncrBy(ctx, s.keys.Calls, key, 1).Err(); err != nil {
			return messages.ChargeData{}, processor.TransientError(fmt.Errorf("sim: count call: %w", err))
		}
		return messages.ChargeData{}, processor.TransientError(errors.New("sim: provider temporarily unavailable"))
	}
	decline := "0"
	if strings.HasPrefix(req.AccountID, layout.SimDeclinePrefix) {
		decline = "1"
	}
	made := messages.ChargeData{ChargeID: "ch_" + randomID(), AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency}
	fresh := made.AppendJSON(nil)
	res, err := chargeScript.Run(ctx, s.rdb, []string{s.keys.Calls, s.keys.Charges, s.keys.Voided},
		key, fresh, decline).StringSlice()
	switch {
	case err != nil:
		// The script may have run: the outcome is unknown.
		return messages.ChargeData{}, processor.AmbiguousError(fmt.Errorf("sim: charge: %w", err))
	case res[0] == "declined":
		return messages.ChargeData{}, charge.Declined(messages.CodeCardDeclined, "the card was declined")
	case res[0] == "voided":
		return messages.ChargeData{}, fmt.Errorf("sim: charge %s: %w", key, processor.ErrKeyVoided)
	}
	stored := res[1]
	c := made
	if stored != string(fresh) { // charged before, by an earlier call with this key
		if err := json.Unmarshal([]byte(stored), &c); err != nil {
			return messages.ChargeData{}, processor.AmbiguousError(fmt.Errorf("sim: stored charge: %w", err))
		}
	}
	if s.roll(s.cfg.AmbiguousRate) {
		return messages.ChargeData{}, processor.AmbiguousError(errors.New("sim: charged, then the response was lost"))
	}
	return c, nil
}

// LookupCharge implements charge.Lookup.
func (s *Provider) LookupCharge(ctx context.Context, key string, _ messages.ChargeRequest) (messages.ChargeData, bool, error) {
	var c messages.ChargeData
	found, err := s.lookup(ctx, s.keys.Charges, key, &c)
	return c, found, err
}

// VoidCharge implements charge.Voider: one script, so a charge call that
// comes after it (one frozen in flight) finds the key voided.
func (s *Provider) VoidCharge(ctx context.Context, key string, _ messages.ChargeRequest) (messages.ChargeData, bool, error) {
	var c messages.ChargeData
	found, err := s.void(ctx, s.keys.Charges, key, &c)
	return c, found, err
}

// void runs voidScript on hash for key, decoding a found effect into dst.
func (s *Provider) void(ctx context.Context, hash, key string, dst any) (bool, error) {
	res, err := voidScript.Run(ctx, s.rdb, []string{hash, s.keys.Voided}, key, time.Now().UTC().Format(time.RFC3339Nano)).StringSlice()
	if err != nil {
		return false, fmt.Errorf("sim: void %s: %w", key, err)
	}
	if res[0] != "found" {
		return false, nil
	}
	if err := json.Unmarshal([]byte(res[1]), dst); err != nil {
		return false, fmt.Errorf("sim: stored %s of %s: %w", hash, key, err)
	}
	return true, nil
}

// refundScript returns the refund of a key, making it if there is none and
// the charge has enough left; every refund of a charge goes through it, so
// racing refunds never exceed the charge.
//
//	KEYS[1] sim:refunds, KEYS[2] sim:refunded, KEYS[3] sim:charges, KEYS[4] sim:voided
//	ARGV[1] refund key, ARGV[2] charge key, ARGV[3] amount, ARGV[4] refund id
//
// Returns {"ok", refund JSON}, {"no_charge"}, {"voided"} or {"exceeds",
// refunded total}.
var refundScript = redis.NewScript(`
local r = redis.call("HGET", KEYS[1], ARGV[1])
if r then return {"ok", r} end
if redis.call("HEXISTS", KEYS[4], ARGV[1]) == 1 then return {"voided"} end
local c = redis.call("HGET", KEYS[3], ARGV[2])
if not c then return {"no_charge"} end
local charge = cjson.decode(c)
local amount = tonumber(ARGV[3])
local total = tonumber(redis.call("HGET", KEYS[2], ARGV[2]) or "0")
if total + amount > charge.amount then return {"exceeds", tostring(total)} end
total = redis.call("HINCRBY", KEYS[2], ARGV[2], amount)
r = cjson.encode({refund_id = ARGV[4], charge_id = charge.charge_id, amount = amount,
  currency = charge.currency, refunded_total = total})
redis.call("HSET", KEYS[1], ARGV[1], r)
return {"ok", r}
`)

// Refund implements refund.Provider: one Redis round trip.
func (s *Provider) Refund(ctx context.Context, key string, req refund.Request) (messages.RefundData, error) {
	if err := s.wait(ctx); err != nil {
		return messages.RefundData{}, err
	}
	if s.roll(s.cfg.FailureRate) {
		return messages.RefundData{}, processor.TransientError(errors.New("sim: provider temporarily unavailable"))
	}
	res, err := refundScript.Run(ctx, s.rdb, []string{s.keys.Refunds, s.keys.Refunded, s.keys.Charges, s.keys.Voided},
		key, req.ChargeKey, req.Amount, "re_"+randomID()).StringSlice()
	if err != nil {
		return messages.RefundData{}, processor.AmbiguousError(fmt.Errorf("sim: refund: %w", err))
	}
	switch res[0] {
	case "no_charge":
		// The store says the charge succeeded; the provider never made it.
		// Not this refund's fault, and nothing was refunded: retry.
		return messages.RefundData{}, processor.TransientError(fmt.Errorf("sim: no charge for key %s", req.ChargeKey))
	case "voided":
		return messages.RefundData{}, fmt.Errorf("sim: refund %s: %w", key, processor.ErrKeyVoided)
	case "exceeds":
		total, _ := strconv.ParseInt(res[1], 10, 64)
		return messages.RefundData{}, &refund.ExceedsError{RefundedTotal: total}
	}
	var r messages.RefundData
	if err := json.Unmarshal([]byte(res[1]), &r); err != nil {
		return messages.RefundData{}, processor.AmbiguousError(fmt.Errorf("sim: stored refund: %w", err))
	}
	if s.roll(s.cfg.AmbiguousRate) {
		return messages.RefundData{}, processor.AmbiguousError(errors.New("sim: refunded, then the response was lost"))
	}
	return r, nil
}

// LookupRefund implements refund.Lookup.
func (s *Provider) LookupRefund(ctx context.Context, key string, _ refund.Request) (messages.RefundData, bool, error) {
	var r messages.RefundData
	found, err := s.lookup(ctx, s.keys.Refunds, key, &r)
	return r, found, err
}

// VoidRefund implements refund.Voider.
func (s *Provider) VoidRefund(ctx context.Context, key string, _ refund.Request) (messages.RefundData, bool, error) {
	var r messages.RefundData
	found, err := s.void(ctx, s.keys.Refunds, key, &r)
	return r, found, err
}

func (s *Provider) lookup(ctx context.Context, hash, key string, dst any) (bool, error) {
	raw, err := s.rdb.HGet(ctx, hash, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sim: look up %s: %w", key, err)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return false, fmt.Errorf("sim: stored %s of %s: %w", hash, key, err)
	}
	return true, nil
}

// wait is the call's latency. A call cancelled during it (the lock lost,
// the worker stopping) never reached the provider.
func (s *Provider) wait(ctx context.Context) error {
	if s.cfg.Latency <= 0 {
		return nil
	}
	t := time.NewTimer(s.cfg.Latency)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return processor.TransientError(context.Cause(ctx))
	case <-t.C:
		return nil
	}
}

func (s *Provider) roll(rate float64) bool { return rate > 0 && mathrand.Float64() < rate }

func randomID() string {
	var id [12]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(id[:])
}
