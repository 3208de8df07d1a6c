package dedupe

import (
	"cmp"
	"errors"
	"time"
)

// Defaults of Config.
const (
	RecordPrefixDefault = "idem:rec:"
	LockPrefixDefault   = "idem:lock:"
	RetentionDefault    = 24 * time.Hour
	LockTTLDefault      = 10 * time.Second
	CallTimeoutDefault  = 5 * time.Second
)

// Config configures a Store. The zero value is usable: every field has a
// default.
type Config struct {
	// Namespace is prepended to every Redis key, so several deployments or
	// tests can share one Redis. Defaults to "" (the contract's layout).
	Namespace string
	// RecordPrefix prefixes the record hash: <Namespace><RecordPrefix>{<key>}.
	// Defaults to "idem:rec:".
	RecordPrefix string
	// LockPrefix prefixes the redsync mutex: <Namespace><LockPrefix>{<key>}.
	// Defaults to "idem:lock:".
	LockPrefix string
	// Retention is how long a record lives after it was last written, in
	// progress or completed (the contract's RESULT_TTL). Defaults to 24h.
	Retention time.Duration
	// LockTTL is the mutex expiry. The watchdog extends it every LockTTL/3
	// while an operation runs, so it only bounds how long a crashed worker
	// keeps a key locked. Defaults to 10s.
	LockTTL time.Duration
	// CallTimeout bounds each extension and release of a lock, which the
	// watchdog must not wait on for long. The store's other calls, on every
	// command's path, are bounded by the Redis client's own read and write
	// timeouts (go-redis: 3s by default), without a timer each. Defaults to
	// 5s.
	CallTimeout time.Duration
}

// WithDefaults returns a copy with every zero field set to its default.
func (c *Config) WithDefaults() *Config {
	if c == nil {
		c = &Config{}
	}
	return &Config{
		Namespace:    c.Namespace,
		RecordPrefix: cmp.Or(c.RecordPrefix, RecordPrefixDefault),
		LockPrefix:   cmp.Or(c.LockPrefix, LockPrefixDefault),
		Retention:    cmp.Or(c.Retention, RetentionDefault),
		LockTTL:      cmp.Or(c.LockTTL, LockTTLDefault),
		CallTimeout:  cmp.Or(c.CallTimeout, CallTimeoutDefault),
	}
}

func (c *Config) validate() error {
	switch {
	case c.Retention < time.Second:
		return errors.New("dedupe: Retention must be at least 1s")
	case c.LockTTL < 30*time.Millisecond:
		return errors.New("dedupe: LockTTL must be at least 30ms")
	case c.CallTimeout <= 0:
		return errors.New("dedupe: CallTimeout must be positive")
	case c.RecordPrefix == c.LockPrefix:
		return errors.New("dedupe: RecordPrefix and LockPrefix must differ")
	}
	return nil
}
