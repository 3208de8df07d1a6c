package admin

import (
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/layout"
)

// The Redis names of the idempotency store (pkg/dedupe's defaults, under
// the workers' key prefix, which the worker passes as the store's
// namespace). TestNames_AreTheStore's checks them against the store.
const (
	recordPrefix = "idem:rec:"
	lockPrefix   = "idem:lock:"
	resolveName  = "idem:resolve"
	// AuditName is the audit stream, under the key prefix: one entry per
	// eviction (and per bulk action of the console).
	AuditName = "idem:audit"
)

// RecordKey returns the Redis key of key's record.
func (a *Admin) RecordKey(key string) string { return a.cfg.KeyPrefix + recordPrefix + "{" + key + "}" }

// LockKey returns the Redis key of key's lock.
func (a *Admin) LockKey(key string) string { return a.cfg.KeyPrefix + lockPrefix + "{" + key + "}" }

// ResolveKey returns the Redis key of the resolution schedule.
func (a *Admin) ResolveKey() string { return a.cfg.KeyPrefix + resolveName }

// AuditKey returns the Redis key of the audit stream.
func (a *Admin) AuditKey() string { return a.cfg.KeyPrefix + AuditName }

// simLedger returns the simulated provider's ledger names for the Admin's
// client (a Redis Cluster's carry the {sim} hash tag).
func (a *Admin) simLedger() layout.SimLedger {
	_, cluster := a.rdb.(*redis.ClusterClient)
	return layout.Sim(a.cfg.KeyPrefix, cluster)
}
