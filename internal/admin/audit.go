package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Actions of the audit log.
const (
	ActionEvict     = "evict"
	ActionDLQReplay = "dlq.replay"
	ActionDLQPurge  = "dlq.purge"
)

// AuditEntry is one line of the audit log: who did what to which key,
// when, and what the record held before.
type AuditEntry struct {
	// ID is the entry's id in the audit stream (set when read).
	ID string `json:"id,omitempty"`
	// At is when it was done.
	At time.Time `json:"at"`
	// Who is the operator: the console's login (tenant and method), or
	// the producer's --operator.
	Who string `json:"who"`
	// Action is one of the Action* constants.
	Action string `json:"action"`
	// Key is the key acted on, if one.
	Key string `json:"key,omitempty"`
	// Detail says what was done, in words.
	Detail string `json:"detail,omitempty"`
	// Record is what the key's record held before (an eviction).
	Record map[string]string `json:"record,omitempty"`
}

// Audit appends e to the audit stream (<prefix>idem:audit), trimmed to
// about Config.AuditMaxLen entries.
func (a *Admin) Audit(ctx context.Context, e AuditEntry) error {
	if a.rdb == nil {
		return ErrNoRedis
	}
	rec, err := json.Marshal(e.Record)
	if err != nil {
		return err
	}
	err = a.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: a.AuditKey(), MaxLen: a.cfg.AuditMaxLen, Approx: true,
		Values: []any{"at", e.At.UTC().Format(time.RFC3339Nano), "who", e.Who, "action", e.Action, "key", e.Key,
			"detail", e.Detail, "record", string(rec)},
	}).Err()
	if err != nil {
		return fmt.Errorf("admin: write the audit log %s: %w", a.AuditKey(), err)
	}
	return nil
}

// AuditLog returns up to n entries of the audit log, newest first; with
// key set, only that key's (looked for among all the stream keeps).
func (a *Admin) AuditLog(ctx context.Context, n int, key string) ([]AuditEntry, error) {
	if a.rdb == nil {
		return nil, ErrNoRedis
	}
	count := int64(n)
	if key != "" {
		count = a.cfg.AuditMaxLen * 2 // approximate trimming keeps a little more
	}
	msgs, err := a.rdb.XRevRangeN(ctx, a.AuditKey(), "+", "-", count).Result()
	if err != nil {
		return nil, fmt.Errorf("admin: read the audit log %s: %w", a.AuditKey(), err)
	}
	var out []AuditEntry
	for _, m := range msgs {
		e := auditEntryOf(m)
		if key != "" && e.Key != key {
			continue
		}
		out = append(out, e)
		if len(out) == n {
			break
		}
	}
	return out, nil
}

func auditEntryOf(m redis.XMessage) AuditEntry {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	e := AuditEntry{ID: m.ID, Who: str("who"), Action: str("action"), Key: str("key"), Detail: str("detail")}
	e.At, _ = time.Parse(time.RFC3339Nano, str("at"))
	if e.At.IsZero() { // the stream id's milliseconds
		if ms, err := strconv.ParseInt(strings.SplitN(m.ID, "-", 2)[0], 10, 64); err == nil {
			e.At = time.UnixMilli(ms)
		}
	}
	_ = json.Unmarshal([]byte(str("record")), &e.Record)
	return e
}
