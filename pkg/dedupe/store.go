package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// State is where a key stands.
type State string

const (
	// StateInProgress: an attempt began; the fingerprint is pinned, no
	// outcome is known. The next delivery resumes the operation.
	StateInProgress State = "in_progress"
	// StateCompleted: the outcome is stored and final.
	StateCompleted State = "completed"
)

// Outcome is the definitive result of a key, as stored.
type Outcome struct {
	Status      string
	Code        string
	Message     string
	Data        json.RawMessage
	Attempts    int
	ProcessedAt time.Time
}

// Record is the stored state of one key.
type Record struct {
	Key         string
	State       State
	Command     string
	Fingerprint string
	// Outcome is set when State is StateCompleted.
	Outcome *Outcome
}

// Effect is a counter update applied in the same script as the commit, so
// there is no moment where the effect happened and the key is not completed.
// The counter's new value replaces Placeholder in the outcome's Data.
type Effect struct {
	// Key is the full Redis key of the hash, e.g. Namespace+"cart:{cart_7}".
	Key string
	// Field and By: HINCRBY Key Field By.
	Field string
	By    int64
}

// Placeholder is the JSON value in Outcome.Data that a commit with an Effect
// replaces by the counter's new value.
const Placeholder = `"$EFFECT$"`

// Store is the Redis idempotency store. It is safe for concurrent use.
type Store struct {
	rdb redis.UniversalClient
	rs  *redsync.Redsync
	cfg *Config
}

// New returns a Store on rdb, which may be a single node, Sentinel or Cluster
// client.
func New(rdb redis.UniversalClient, cfg *Config) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("dedupe: nil Redis client")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, rs: redsync.New(goredis.NewPool(rdb)), cfg: cfg}, nil
}

// Config returns the store's effective configuration.
func (s *Store) Config() Config { return *s.cfg }

// RecordKey returns the Redis key of key's record.
func (s *Store) RecordKey(key string) string {
	return s.cfg.Namespace + s.cfg.RecordPrefix + "{" + key + "}"
}

// LockKey returns the Redis key of key's mutex.
func (s *Store) LockKey(key string) string {
	return s.cfg.Namespace + s.cfg.LockPrefix + "{" + key + "}"
}

// Get returns key's record, or nil when there is none. It takes no lock: a
// completed record never changes, so a reader can trust it.
func (s *Store) Get(ctx context.Context, key string) (*Record, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	fields, err := s.rdb.HGetAll(ctx, s.RecordKey(key)).Result()
	if err != nil {
		return nil, fmt.Errorf("dedupe: get record: %w", err)
	}
	if len(fields) == 0 {
		return nil, nil //nolint:nilnil // documented API: a nil record means "no record"
	}
	return parseRecord(key, fields)
}

// Locked reports whether key's mutex is held by anyone.
func (s *Store) Locked(ctx context.Context, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	n, err := s.rdb.Exists(ctx, s.LockKey(key)).Result()
	if err != nil {
		return false, fmt.Errorf("dedupe: lock exists: %w", err)
	}
	return n == 1, nil
}

// Begin starts an attempt on key under lease. When the key has no record it
// is marked in progress with command and fingerprint and Begin returns that
// new record; otherwise it returns the stored record unchanged, completed or
// in progress, with whatever fingerprint it holds: comparing is the caller's
// decision. ErrLockLost means the lease had expired; nothing was written.
func (s *Store) Begin(ctx context.Context, lease *Lease, command, fingerprint string) (*Record, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	key := lease.key
	res, err := beginScript.Run(ctx, s.rdb,
		[]string{s.RecordKey(key), s.LockKey(key)},
		lease.Value(), command, fingerprint, s.cfg.Retention.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dedupe: begin: %w", err)
	}
	switch res[0] {
	case "lost":
		return nil, ErrLockLost
	case "new":
		return &Record{Key: key, State: StateInProgress, Command: command, Fingerprint: fingerprint}, nil
	default:
		return parseRecord(key, pairs(res[1:]))
	}
}

// Commit stores outcome as key's final result: the fenced commit. It writes
// only while lease is still held and the record is in progress with
// fingerprint; it applies effect (if not nil) in the same script, and
// releases the lease. It returns the record as stored.
//
// If the record was already completed - by this worker in a call whose reply
// was lost, or by another worker after this one lost its lock - Commit writes
// nothing and returns that stored record: callers must publish what Commit
// returns, never what they computed. ErrLockLost and ErrFingerprintMismatch
// mean nothing was written.
func (s *Store) Commit(ctx context.Context, lease *Lease, fingerprint string, outcome Outcome, effect *Effect) (*Record, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	key := lease.key
	keys := []string{s.RecordKey(key), s.LockKey(key)}
	field, by := "", int64(0)
	if effect != nil {
		keys = append(keys, effect.Key)
		field, by = effect.Field, effect.By
	}
	data := outcome.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	res, err := commitScript.Run(ctx, s.rdb, keys,
		lease.Value(), fingerprint, s.cfg.Retention.Milliseconds(),
		outcome.Status, outcome.Code, outcome.Message, string(data),
		outcome.Attempts, formatTime(outcome.ProcessedAt),
		field, by, Placeholder).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dedupe: commit: %w", err)
	}
	switch res[0] {
	case "lost":
		return nil, ErrLockLost
	case "conflict":
		return nil, ErrFingerprintMismatch
	case "committed":
		lease.released()
		o := outcome
		o.Data = json.RawMessage(res[1])
		o.ProcessedAt = parseTime(formatTime(outcome.ProcessedAt))
		return &Record{Key: key, State: StateCompleted, Command: res[2], Fingerprint: fingerprint, Outcome: &o}, nil
	default: // "completed": stored earlier
		return parseRecord(key, pairs(res[1:]))
	}
}

func pairs(flat []string) map[string]string {
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		m[flat[i]] = flat[i+1]
	}
	return m
}

func parseRecord(key string, f map[string]string) (*Record, error) {
	r := &Record{Key: key, State: State(f["state"]), Command: f["command"], Fingerprint: f["fingerprint"]}
	switch r.State {
	case StateInProgress:
		return r, nil
	case StateCompleted:
		attempts, err := strconv.Atoi(f["attempts"])
		if err != nil {
			return nil, fmt.Errorf("dedupe: record %s: bad attempts %q", key, f["attempts"])
		}
		r.Outcome = &Outcome{
			Status:      f["status"],
			Code:        f["code"],
			Message:     f["message"],
			Data:        json.RawMessage(f["data"]),
			Attempts:    attempts,
			ProcessedAt: parseTime(f["processed_at"]),
		}
		return r, nil
	default:
		return nil, fmt.Errorf("dedupe: record %s: unknown state %q", key, r.State)
	}
}

// Times are stored with millisecond precision in UTC, so an outcome read
// back is identical to the one published when it was stored.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeLayout, s)
	return t
}
