package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
)

// Try describes the delivery that begins a try on a key.
type Try struct {
	// Kind and Fingerprint identify the command; a key holding another
	// fingerprint is refused (BeginConflict).
	Kind        string
	Fingerprint string
	// Published is when the message was stored in the command stream; a
	// message published at or before the key's last dead letter is that
	// dead letter's (BeginDeadLettered).
	Published time.Time
	// MaxTries is how many tries a key gets between dead letters, when this
	// delivery creates its record; an existing record keeps its own.
	MaxTries int
	// SeparateEffect: this worker applies the key's counter effect apart
	// from the commit; the record remembers it (Record.SeparateEffect).
	SeparateEffect bool
}

// BeginStatus is what Begin decided.
type BeginStatus string

// What Begin returns.
const (
	// BeginRun: run the operation; the record counts this try.
	BeginRun BeginStatus = "run"
	// BeginCompleted: the outcome is stored; answer it (its retention was
	// extended).
	BeginCompleted BeginStatus = "completed"
	// BeginConflict: the key holds another fingerprint; nothing was written.
	BeginConflict BeginStatus = "conflict"
	// BeginDeadLettered: this message's command was dead-lettered earlier;
	// answer it as that dead letter (Record.DeadEffect).
	BeginDeadLettered BeginStatus = "dead_lettered"
	// BeginVoided: the key was voided at the provider: nothing took effect
	// and nothing can, so a re-drive is answered dead_lettered.
	BeginVoided BeginStatus = "voided"
	// BeginExhausted: the key has no tries left; nothing was run. The
	// caller holds the lock and must dead-letter the key, or store the
	// outcome the provider holds for it.
	BeginExhausted BeginStatus = "exhausted"
	// BeginCommitted: BeginAndCommit stored the outcome.
	BeginCommitted BeginStatus = "committed"
	// BeginSeparate: BeginAndCommit found a key whose effect is applied
	// apart from the commit; nothing was written, and the caller must take
	// that path (Begin, ApplyEffect, Commit).
	BeginSeparate BeginStatus = "separate"
)

// Begun is Begin's answer: its decision and the record as it stands after.
type Begun struct {
	Status BeginStatus
	Record *Record
}

// Store is the Redis idempotency store. It is safe for concurrent use.
type Store struct {
	rdb redis.UniversalClient
	rs  *redsync.Redsync
	cfg *Config
	// verifyReplies makes every transition read the record back and
	// compare it with the one its script replied (a test's check of the
	// replies scripts build instead of reading back).
	verifyReplies bool
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

// Get returns key's record, or nil when there is none. It takes no lock and
// writes nothing: a completed record never changes, so a reader can trust
// it; any other is a snapshot.
func (s *Store) Get(ctx context.Context, key string) (*Record, error) {
	fields, err := s.rdb.HGetAll(ctx, s.RecordKey(key)).Result()
	if err != nil {
		return nil, fmt.Errorf("dedupe: get record: %w", err)
	}
	if len(fields) == 0 {
		return nil, nil //nolint:nilnil // documented API: a nil record means "no record"
	}
	return parseRecord(key, fields)
}

// Peek is Get for a delivery that will answer from the record without the
// lock: a completed record's retention is extended, as every answer of an
// outcome must extend it.
func (s *Store) Peek(ctx context.Context, key string) (*Record, error) {
	res, err := peekScript.Run(ctx, s.rdb, []string{s.RecordKey(key)}, s.cfg.Retention.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dedupe: peek record: %w", err)
	}
	r, err := parseReply(key, res)
	return r.record, err
}

// Begin starts a try on the key of lease: the record decides, holding the
// lock, whether this delivery runs the operation (see BeginStatus). A new
// key is marked running with t's kind, fingerprint and tries. A try that
// began and never reported back (Settle or Commit) makes the next Begin
// mark the key's effect unknown. ErrLockLost means the lease had expired;
// nothing was written.
func (s *Store) Begin(ctx context.Context, lease *Lease, t Try) (Begun, error) {
	key := lease.key
	res, err := beginScript.Run(ctx, s.rdb, []string{s.RecordKey(key), s.LockKey(key)}, s.beginArgs(lease.Value(), t)...).StringSlice()
	return s.parseBegin(ctx, lease, "begin", res, err)
}

// AcquireBegin is Acquire then Begin, in one round trip where the client
// auto-pipelines: the begin script goes out right behind the mutex's SET
// NX and finds the mutex its own only if the SET took it.
func (s *Store) AcquireBegin(ctx context.Context, key string, t Try) (*Lease, Begun, error) {
	keys := []string{s.RecordKey(key), s.LockKey(key)}
	lease, cmd, sent, err := s.acquireWith(ctx, key, func(value string) *redis.Cmd {
		return evalSha(ctx, beginScript, keys, s.beginArgs(value, t)...)
	})
	if err != nil {
		return nil, Begun{}, err
	}
	if !sent || isNoScript(cmd.Err()) {
		b, err := s.Begin(ctx, lease, t)
		return lease, b, err
	}
	res, err := cmd.StringSlice()
	b, err := s.parseBegin(ctx, lease, "begin", res, err)
	return lease, b, err
}

func (s *Store) beginArgs(value string, t Try) []any {
	apply := ""
	if t.SeparateEffect {
		apply = "separate"
	}
	return []any{value, t.Kind, t.Fingerprint, s.cfg.Retention.Milliseconds(), t.Published.UnixMicro(), max(t.MaxTries, 1), apply}
}

// evalSha is an unexecuted EVALSHA of script, to go out behind a lock.
func evalSha(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, "evalsha", script.Hash(), len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	return redis.NewCmd(ctx, append(cmdArgs, args...)...)
}

// isNoScript reports a script not loaded yet (a new or restarted server):
// the caller runs it again through Script.Run, which loads it.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// run is every transition's tail: the one parse of a script's reply, the
// lease marked released when the script released it, ErrLockLost when the
// fence refused.
func (s *Store) run(ctx context.Context, lease *Lease, name string, res []string, err error) (reply, error) {
	if err != nil {
		return reply{}, fmt.Errorf("dedupe: %s: %w", name, err)
	}
	r, err := parseReply(lease.key, res)
	if err != nil {
		return reply{}, err
	}
	if r.released {
		lease.released()
	}
	if s.verifyReplies && r.record != nil {
		if err := s.verifyReply(ctx, name, r.record); err != nil {
			return reply{}, err
		}
	}
	switch r.verdict {
	case "lost":
		return r, ErrLockLost
	case "missing":
		return r, ErrRecordLost
	}
	return r, nil
}

// verifyReply compares a script's reply with the record Redis holds.
func (s *Store) verifyReply(ctx context.Context, name string, replied *Record) error {
	stored, err := s.Get(ctx, replied.Key)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(replied, stored) {
		return fmt.Errorf("dedupe: %s replied %+v but Redis holds %+v", name, replied, stored)
	}
	return nil
}

func (s *Store) parseBegin(ctx context.Context, lease *Lease, name string, res []string, err error) (Begun, error) {
	r, err := s.run(ctx, lease, name, res, err)
	if err != nil {
		return Begun{}, err
	}
	switch st := BeginStatus(r.verdict); st {
	case BeginRun, BeginCompleted, BeginConflict, BeginDeadLettered, BeginVoided, BeginExhausted, BeginCommitted, BeginSeparate:
		return Begun{Status: st, Record: r.record}, nil
	default:
		return Begun{}, errVerdict(name, r.verdict)
	}
}

// Commit stores result as the key's outcome: the fenced commit. It writes
// only while lease is still held and the record holds fingerprint (in any
// state but completed: the outcome of a running try, or an effect a
// lookup found for a key out of tries or dead-lettered); it applies effect
// (if not nil) in the same script, and releases the lease. Of result it
// stores Status, Code, Message, Data, Attempts and ProcessedAt (at
// millisecond precision). It returns the record as stored.
//
// If the record was already completed - by this worker in a call whose reply
// was lost, or by another worker after this one lost its lock - Commit writes
// nothing and returns that stored record: callers must publish what Commit
// returns, never what they computed. ErrLockLost, ErrRecordLost and
// ErrFingerprintMismatch mean nothing was written.
func (s *Store) Commit(ctx context.Context, lease *Lease, fingerprint string, result messages.Result, effect *Effect) (*Record, error) {
	key := lease.key
	keys, field, by, ttl := s.effectKeys(key, effect)
	res, err := commitScript.Run(ctx, s.rdb, keys,
		lease.Value(), fingerprint, s.cfg.Retention.Milliseconds(),
		string(result.Status), result.Code, result.Message, string(dataOf(result)),
		result.Attempts, formatTime(result.ProcessedAt),
		field, by, Placeholder, ttl).StringSlice()
	r, err := s.run(ctx, lease, "commit", res, err)
	switch {
	case err != nil:
		return nil, err
	case r.verdict == "conflict":
		return nil, ErrFingerprintMismatch
	case r.verdict == "committed" || r.verdict == "completed":
		return r.record, nil
	}
	return nil, errVerdict("commit", r.verdict)
}

// BeginAndCommit is Begin and Commit in one script, for an operation whose
// whole effect is the commit's effect (nothing runs in between). Where
// Begin would say BeginRun it stores result and returns BeginCommitted with
// the stored record, releasing the lease; every other status is Begin's,
// with nothing written, or BeginSeparate.
func (s *Store) BeginAndCommit(ctx context.Context, lease *Lease, t Try, result messages.Result, effect *Effect) (Begun, error) {
	keys, args := s.beginCommitArgs(lease.key, lease.Value(), t, result, effect)
	res, err := beginCommitScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	return s.parseBegin(ctx, lease, "begin and commit", res, err)
}

// AcquireBeginAndCommit is Acquire then BeginAndCommit, in one round trip
// where the client auto-pipelines, as AcquireBegin.
func (s *Store) AcquireBeginAndCommit(ctx context.Context, key string, t Try, result messages.Result, effect *Effect) (*Lease, Begun, error) {
	lease, cmd, sent, err := s.acquireWith(ctx, key, func(value string) *redis.Cmd {
		keys, args := s.beginCommitArgs(key, value, t, result, effect)
		return evalSha(ctx, beginCommitScript, keys, args...)
	})
	if err != nil {
		return nil, Begun{}, err
	}
	if !sent || isNoScript(cmd.Err()) {
		b, err := s.BeginAndCommit(ctx, lease, t, result, effect)
		return lease, b, err
	}
	res, err := cmd.StringSlice()
	b, err := s.parseBegin(ctx, lease, "begin and commit", res, err)
	return lease, b, err
}

func (s *Store) beginCommitArgs(key, value string, t Try, result messages.Result, effect *Effect) ([]string, []any) {
	keys, field, by, ttl := s.effectKeys(key, effect)
	return keys, []any{value, t.Kind, t.Fingerprint, s.cfg.Retention.Milliseconds(), t.Published.UnixMicro(),
		string(result.Status), result.Code, result.Message, string(dataOf(result)),
		result.Attempts, formatTime(result.ProcessedAt),
		field, by, Placeholder, ttl}
}

// Settle ends a try that produced no outcome and releases the lease.
// effect is what the try may have done: EffectUnknown makes the key's
// effect unknown for good (until the provider settles it); EffectNone
// leaves the key's history as it was. untry gives the try back: the
// operation did not start (it was deferred). ErrLockLost means the lease
// had expired and nothing was written: the next Begin then marks the key
// unknown itself.
func (s *Store) Settle(ctx context.Context, lease *Lease, effect string, untry bool) error {
	key := lease.key
	back := "0"
	if untry {
		back = "1"
	}
	res, err := settleScript.Run(ctx, s.rdb, []string{s.RecordKey(key), s.LockKey(key)}, lease.Value(), effect, back).StringSlice()
	_, err = s.run(ctx, lease, "settle", res, err)
	return err
}

// DeadLetter is what a dead letter records: what its client is told, and
// what the resolver needs.
type DeadLetter struct {
	// Published is the publish time of the dead-lettered message: every
	// delivery of a message of the key published at or before it ends as
	// this dead letter. Zero keeps the key's fence (the resolver).
	Published time.Time
	// Effect is EffectNone (dead_lettered) or EffectUnknown (outcome_unknown).
	Effect string
	// Voided: the key was voided at the provider.
	Voided bool
	// Body is the command's body, kept while the effect is unknown, and
	// Tenant the tenant it was sent for: what the resolver needs to ask the
	// provider.
	Body   []byte
	Tenant string
	// Kind and Fingerprint rebuild a record Redis lost.
	Kind, Fingerprint string
}

// DeadLetter records that a command of the key was dead-lettered (see
// DeadLetter), resets the key's tries for a re-drive, and releases the
// lease. It returns nil and the record if an outcome is stored instead
// (nothing written; answer that outcome), ErrLockLost if the lease had
// expired.
func (s *Store) DeadLetter(ctx context.Context, lease *Lease, d DeadLetter) (*Record, error) {
	key := lease.key
	voided := "0"
	if d.Voided {
		voided = "1"
	}
	var published int64
	if !d.Published.IsZero() {
		published = d.Published.UnixMicro()
	}
	res, err := deadLetterScript.Run(ctx, s.rdb, []string{s.RecordKey(key), s.LockKey(key)},
		lease.Value(), published, d.Effect, voided, string(d.Body), time.Now().UnixMilli(),
		s.cfg.Retention.Milliseconds(), d.Kind, d.Fingerprint, d.Tenant).StringSlice()
	r, err := s.run(ctx, lease, "dead letter", res, err)
	switch {
	case err != nil:
		return nil, err
	case r.verdict == "completed":
		return r.record, nil
	case r.verdict == "dead":
		return nil, nil //nolint:nilnil // documented API: nil record, nil error means dead-lettered
	}
	return nil, errVerdict("dead letter", r.verdict)
}

func (s *Store) effectKeys(key string, effect *Effect) (keys []string, field string, by, ttl int64) {
	keys = []string{s.RecordKey(key), s.LockKey(key)}
	if effect != nil {
		keys = append(keys, effect.Key)
		field, by, ttl = effect.Field, effect.By, effect.TTL.Milliseconds()
	}
	return keys, field, by, ttl
}

func dataOf(r messages.Result) json.RawMessage {
	if len(r.Data) == 0 {
		return json.RawMessage("null")
	}
	return r.Data
}
