package processor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
)

// SimConfig configures the simulated payment provider.
type SimConfig struct {
	// KeyPrefix is put before the ledger keys sim:charges and sim:calls.
	// Defaults to "".
	KeyPrefix string
	// Latency is how long one charge takes. Defaults to 0.
	Latency time.Duration
	// FailureRate is the share of calls (0-1) that fail transiently, before
	// any charge is made. Defaults to 0.
	FailureRate float64
}

// SimDeclinePrefix: the simulated provider declines every account whose id
// starts with it, with code card_declined.
const SimDeclinePrefix = "decline"

// SimProvider is the simulated payment provider of the demo, the tests and
// the benchmarks. It keeps its ledger in Redis: sim:calls counts the Charge
// calls per idempotency key, sim:charges holds one charge per key. Like a
// real provider it never charges one key twice.
type SimProvider struct {
	rdb redis.UniversalClient
	cfg SimConfig
}

// NewSimProvider returns a simulated provider on rdb.
func NewSimProvider(rdb redis.UniversalClient, cfg *SimConfig) (*SimProvider, error) {
	if rdb == nil {
		return nil, errors.New("processor: nil Redis client for the simulated provider")
	}
	c := SimConfig{}
	if cfg != nil {
		c = *cfg
	}
	if c.FailureRate < 0 || c.FailureRate > 1 {
		return nil, fmt.Errorf("processor: SimConfig.FailureRate must be within 0-1, got %v", c.FailureRate)
	}
	if c.Latency < 0 {
		return nil, errors.New("processor: SimConfig.Latency must not be negative")
	}
	return &SimProvider{rdb: rdb, cfg: c}, nil
}

// ChargesKey is the Redis hash of charges: idempotency key -> charge JSON.
func (s *SimProvider) ChargesKey() string { return s.cfg.KeyPrefix + "sim:charges" }

// CallsKey is the Redis hash of call counts: idempotency key -> calls.
func (s *SimProvider) CallsKey() string { return s.cfg.KeyPrefix + "sim:calls" }

// simChargeScript returns the key's charge, creating it if there is none.
// KEYS[1] charges; ARGV[1] key, ARGV[2] new charge JSON.
var simChargeScript = redis.NewScript(`
local c = redis.call("HGET", KEYS[1], ARGV[1])
if c then return c end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
`)

// Charge implements Provider.
func (s *SimProvider) Charge(ctx context.Context, key string, req messages.ChargeRequest) (messages.ChargeData, error) {
	// Count the call first: the counter shows every time a worker reached
	// the provider, whatever happened next.
	if err := s.rdb.HIncrBy(ctx, s.CallsKey(), key, 1).Err(); err != nil {
		return messages.ChargeData{}, TransientError(fmt.Errorf("sim: count call: %w", err))
	}
	if s.cfg.Latency > 0 {
		t := time.NewTimer(s.cfg.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return messages.ChargeData{}, TransientError(context.Cause(ctx))
		case <-t.C:
		}
	}
	if s.cfg.FailureRate > 0 && mathrand.Float64() < s.cfg.FailureRate {
		return messages.ChargeData{}, TransientError(errors.New("sim: provider temporarily unavailable"))
	}
	if strings.HasPrefix(req.AccountID, SimDeclinePrefix) {
		return messages.ChargeData{}, DeclinedError(messages.CodeCardDeclined, "the card was declined")
	}
	var id [12]byte
	rand.Read(id[:])
	fresh, err := json.Marshal(messages.ChargeData{
		ChargeID: "ch_" + hex.EncodeToString(id[:]), AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency,
	})
	if err != nil {
		// Cannot happen for a plain struct; if it did, nothing was charged.
		return messages.ChargeData{}, TransientError(fmt.Errorf("sim: encode charge: %w", err))
	}
	stored, err := simChargeScript.Run(ctx, s.rdb, []string{s.ChargesKey()}, key, fresh).Text()
	if err != nil {
		// The script may have run: the outcome is unknown.
		return messages.ChargeData{}, AmbiguousError(fmt.Errorf("sim: charge: %w", err))
	}
	var c messages.ChargeData
	if err := json.Unmarshal([]byte(stored), &c); err != nil {
		return messages.ChargeData{}, AmbiguousError(fmt.Errorf("sim: stored charge: %w", err))
	}
	return c, nil
}
