package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/idempay/idempay/pkg/messages"
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

// Effect on the dead letter of a key: what its client was told.
const (
	// EffectNone: the operation certainly did not take effect.
	EffectNone = "none"
	// EffectUnknown: an attempt may have taken effect; nothing confirmed it.
	EffectUnknown = "unknown"
)

// Record is the stored state of one key.
type Record struct {
	Key         string
	State       State
	Kind        string
	Fingerprint string
	// Tries counts the attempts started since the key was last
	// dead-lettered (in progress only).
	Tries int
	// Unknown is set once an attempt may have taken effect without leaving
	// an outcome: it died mid-operation, lost its lock, or got an ambiguous
	// error.
	Unknown bool
	// DeadBefore, when not zero, is the publish time of the last command of
	// this key that was dead-lettered; DeadEffect is what its client was
	// told (EffectNone or EffectUnknown).
	DeadBefore time.Time
	DeadEffect string
	// Result is the outcome once State is StateCompleted: an answer with
	// Replayed false.
	Result *messages.Result
}

// Answer returns the stored outcome as an answer: identical for every
// delivery but for replayed. It is the one place an outcome becomes an
// answer. Answer panics on a record that is not completed.
func (r *Record) Answer(replayed bool) messages.Result {
	res := *r.Result
	res.Replayed = replayed
	return res
}

// Attempt describes the delivery that begins an attempt on a key.
type Attempt struct {
	// Kind and Fingerprint identify the command; a key holding another
	// fingerprint is refused (BeginConflict).
	Kind        string
	Fingerprint string
	// Published is when the message was stored in the command stream; a
	// message published at or before the key's last dead letter is that
	// dead letter's (BeginCondemned).
	Published time.Time
	// MaxTries is how many attempts the key may start between dead letters.
	MaxTries int
}

// BeginStatus is what Begin decided.
type BeginStatus string

// What Begin returns.
const (
	// BeginRun: run the operation; the record counts this attempt.
	BeginRun BeginStatus = "run"
	// BeginCompleted: the outcome is stored; answer it (its retention was
	// extended).
	BeginCompleted BeginStatus = "completed"
	// BeginConflict: the key holds another fingerprint; nothing was written.
	BeginConflict BeginStatus = "conflict"
	// BeginCondemned: this message's command was dead-lettered.
	BeginCondemned BeginStatus = "condemned"
	// BeginExhausted: the key has no tries left; nothing was run.
	BeginExhausted BeginStatus = "exhausted"
	// BeginCommitted: BeginAndCommit stored the outcome.
	BeginCommitted BeginStatus = "committed"
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
// it; an in-progress one is a snapshot.
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
	flat, err := peekScript.Run(ctx, s.rdb, []string{s.RecordKey(key)}, s.cfg.Retention.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dedupe: peek record: %w", err)
	}
	if len(flat) == 0 {
		return nil, nil //nolint:nilnil // documented API: a nil record means "no record"
	}
	return parseRecord(key, pairs(flat))
}

// Begin starts an attempt on the key of lease: the record decides, holding
// the lock, whether this delivery runs the operation (see BeginStatus). A
// new key is marked in progress with a's kind and fingerprint. An attempt
// that began and never reported back (Settle or Commit) makes the next
// Begin mark the record Unknown. ErrLockLost means the lease had expired;
// nothing was written.
func (s *Store) Begin(ctx context.Context, lease *Lease, a Attempt) (Begun, error) {
	key := lease.key
	res, err := beginScript.Run(ctx, s.rdb, []string{s.RecordKey(key), s.LockKey(key)}, s.beginArgs(lease.Value(), a)...).StringSlice()
	return parseBegin(key, a, res, err)
}

// AcquireBegin is Acquire then Begin, in one round trip where the client
// auto-pipelines: the begin script goes out right behind the mutex's SET
// NX and finds the mutex its own only if the SET took it.
func (s *Store) AcquireBegin(ctx context.Context, key string, a Attempt) (*Lease, Begun, error) {
	keys := []string{s.RecordKey(key), s.LockKey(key)}
	lease, cmd, sent, err := s.acquireWith(ctx, key, func(value string) *redis.Cmd {
		return evalSha(ctx, beginScript, keys, s.beginArgs(value, a)...)
	})
	if err != nil {
		return nil, Begun{}, err
	}
	if !sent || isNoScript(cmd.Err()) {
		b, err := s.Begin(ctx, lease, a)
		return lease, b, err
	}
	res, err := cmd.StringSlice()
	b, err := parseBegin(key, a, res, err)
	return lease, b, err
}

func (s *Store) beginArgs(value string, a Attempt) []any {
	return []any{value, a.Kind, a.Fingerprint, s.cfg.Retention.Milliseconds(), a.Published.UnixMicro(), a.MaxTries}
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

func parseBegin(key string, a Attempt, res []string, err error) (Begun, error) {
	if err != nil {
		return Begun{}, fmt.Errorf("dedupe: begin: %w", err)
	}
	switch status := BeginStatus(res[0]); {
	case res[0] == "lost":
		return Begun{}, ErrLockLost
	case len(res) == 1 && status == BeginRun:
		return Begun{Status: BeginRun, Record: &Record{Key: key, State: StateInProgress, Kind: a.Kind,
			Fingerprint: a.Fingerprint, Tries: 1}}, nil
	default:
		rec, err := parseRecord(key, pairs(res[1:]))
		return Begun{Status: status, Record: rec}, err
	}
}

// Commit stores result as the key's outcome: the fenced commit. It writes
// only while lease is still held and the record is in progress with
// fingerprint; it applies effect (if not nil) in the same script, and
// releases the lease. Of result it stores Status, Code, Message, Data,
// Attempts and ProcessedAt (at millisecond precision). It returns the
// record as stored.
//
// If the record was already completed - by this worker in a call whose reply
// was lost, or by another worker after this one lost its lock - Commit writes
// nothing and returns that stored record: callers must publish what Commit
// returns, never what they computed. ErrLockLost and ErrFingerprintMismatch
// mean nothing was written.
func (s *Store) Commit(ctx context.Context, lease *Lease, fingerprint string, result messages.Result, effect *Effect) (*Record, error) {
	key := lease.key
	keys, field, by := s.effectKeys(key, effect)
	res, err := commitScript.Run(ctx, s.rdb, keys,
		lease.Value(), fingerprint, s.cfg.Retention.Milliseconds(),
		string(result.Status), result.Code, result.Message, string(dataOf(result)),
		result.Attempts, formatTime(result.ProcessedAt),
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
		return committed(key, res[2], fingerprint, result, res[1]), nil
	default: // "completed": stored earlier
		return parseRecord(key, pairs(res[1:]))
	}
}

// BeginAndCommit is Begin and Commit in one script, for an operation whose
// whole effect is the commit's effect (nothing runs in between). Where
// Begin would say BeginRun it stores result and returns BeginCommitted with
// the stored record, releasing the lease; every other status is Begin's,
// with nothing written.
func (s *Store) BeginAndCommit(ctx context.Context, lease *Lease, a Attempt, result messages.Result, effect *Effect) (Begun, error) {
	keys, args := s.beginCommitArgs(lease.key, lease.Value(), a, result, effect)
	res, err := beginCommitScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	return parseBeginCommit(lease, a, result, res, err)
}

// AcquireBeginAndCommit is Acquire then BeginAndCommit, in one round trip
// where the client auto-pipelines, as AcquireBegin.
func (s *Store) AcquireBeginAndCommit(ctx context.Context, key string, a Attempt, result messages.Result, effect *Effect) (*Lease, Begun, error) {
	lease, cmd, sent, err := s.acquireWith(ctx, key, func(value string) *redis.Cmd {
		keys, args := s.beginCommitArgs(key, value, a, result, effect)
		return evalSha(ctx, beginCommitScript, keys, args...)
	})
	if err != nil {
		return nil, Begun{}, err
	}
	if !sent || isNoScript(cmd.Err()) {
		b, err := s.BeginAndCommit(ctx, lease, a, result, effect)
		return lease, b, err
	}
	res, err := cmd.StringSlice()
	b, err := parseBeginCommit(lease, a, result, res, err)
	return lease, b, err
}

func (s *Store) beginCommitArgs(key, value string, a Attempt, result messages.Result, effect *Effect) ([]string, []any) {
	keys, field, by := s.effectKeys(key, effect)
	return keys, []any{value, a.Kind, a.Fingerprint, s.cfg.Retention.Milliseconds(), a.Published.UnixMicro(),
		string(result.Status), result.Code, result.Message, string(dataOf(result)),
		result.Attempts, formatTime(result.ProcessedAt),
		field, by, Placeholder}
}

func parseBeginCommit(lease *Lease, a Attempt, result messages.Result, res []string, err error) (Begun, error) {
	key := lease.key
	if err != nil {
		return Begun{}, fmt.Errorf("dedupe: begin and commit: %w", err)
	}
	switch res[0] {
	case "lost":
		return Begun{}, ErrLockLost
	case "committed":
		lease.released()
		return Begun{Status: BeginCommitted, Record: committed(key, res[2], a.Fingerprint, result, res[1])}, nil
	default:
		rec, err := parseRecord(key, pairs(res[1:]))
		return Begun{Status: BeginStatus(res[0]), Record: rec}, err
	}
}

// Settle ends an attempt that produced no outcome and releases the lease.
// certain says the attempt certainly had no effect; otherwise the record
// remembers that an effect may exist (Record.Unknown). untry gives the try
// back: the operation did not start (it was deferred). ErrLockLost means
// the lease had expired and nothing was written: the next Begin then marks
// the record Unknown itself.
func (s *Store) Settle(ctx context.Context, lease *Lease, certain, untry bool) error {
	key := lease.key
	flag, back := "0", "0"
	if certain {
		flag = "1"
	}
	if untry {
		back = "1"
	}
	res, err := settleScript.Run(ctx, s.rdb, []string{s.RecordKey(key), s.LockKey(key)}, lease.Value(), flag, back).Text()
	if err != nil {
		return fmt.Errorf("dedupe: settle: %w", err)
	}
	lease.released()
	if res == "lost" {
		return ErrLockLost
	}
	return nil
}

// Condemn records that the command of this key published at published was
// dead-lettered, with effect (EffectNone or EffectUnknown) as what its
// client is told, resets the key's tries for a re-drive, and releases the
// lease. It returns nil and the record if an outcome is stored instead
// (nothing written; answer that outcome), ErrLockLost if the lease had
// expired.
func (s *Store) Condemn(ctx context.Context, lease *Lease, published time.Time, effect string) (*Record, error) {
	key := lease.key
	res, err := condemnScript.Run(ctx, s.rdb, []string{s.RecordKey(key), s.LockKey(key)},
		lease.Value(), published.UnixMicro(), effect, s.cfg.Retention.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("dedupe: condemn: %w", err)
	}
	switch res[0] {
	case "lost":
		return nil, ErrLockLost
	case "completed":
		return parseRecord(key, pairs(res[1:]))
	default:
		lease.released()
		return nil, nil //nolint:nilnil // documented API: nil record, nil error means condemned
	}
}

func (s *Store) effectKeys(key string, effect *Effect) (keys []string, field string, by int64) {
	keys = []string{s.RecordKey(key), s.LockKey(key)}
	if effect != nil {
		keys = append(keys, effect.Key)
		field, by = effect.Field, effect.By
	}
	return keys, field, by
}

func dataOf(r messages.Result) json.RawMessage {
	if len(r.Data) == 0 {
		return json.RawMessage("null")
	}
	return r.Data
}

// committed is the record a commit just wrote, as parseRecord would read it
// back.
func committed(key, kind, fingerprint string, result messages.Result, data string) *Record {
	res := messages.Result{
		Key: key, Kind: kind, Status: result.Status, Code: result.Code, Message: result.Message,
		Data: json.RawMessage(data), Attempts: result.Attempts, ProcessedAt: parseTime(formatTime(result.ProcessedAt)),
		Fingerprint: fingerprint,
	}
	return &Record{Key: key, State: StateCompleted, Kind: kind, Fingerprint: fingerprint, Result: &res}
}

func pairs(flat []string) map[string]string {
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		m[flat[i]] = flat[i+1]
	}
	return m
}

func parseRecord(key string, f map[string]string) (*Record, error) {
	r := &Record{Key: key, State: State(f["state"]), Kind: f["command"], Fingerprint: f["fingerprint"]}
	switch r.State {
	case StateInProgress:
		r.Tries, _ = strconv.Atoi(f["tries"]) // absent in records of older versions: 0
		r.Unknown = f["unknown"] != ""
		if us, err := strconv.ParseInt(f["dead_before"], 10, 64); err == nil && us > 0 {
			r.DeadBefore = time.UnixMicro(us)
			r.DeadEffect = f["dead_effect"]
		}
		return r, nil
	case StateCompleted:
		attempts, err := strconv.Atoi(f["attempts"])
		if err != nil {
			return nil, fmt.Errorf("dedupe: record %s: bad attempts %q", key, f["attempts"])
		}
		r.Result = &messages.Result{
			Key: key, Kind: r.Kind, Status: messages.Status(f["status"]), Code: f["code"], Message: f["message"],
			Data: json.RawMessage(f["data"]), Attempts: attempts, ProcessedAt: parseTime(f["processed_at"]),
			Fingerprint: r.Fingerprint,
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
