package dedupe

import (
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/messages"
)

// The state machine of a key's record, drawn in docs/state-machine.md, is
// driven here edge by edge against the real Redis: each transition is one
// subtest of TestStore_StateMachine, named in the document's tables (which
// TestStore_StateMachineDocumented checks). Each subtest builds the state it
// starts from through the Store, runs one script, and checks the verdict,
// the record as Redis holds it (HGETALL), and that the lease is marked
// released exactly when the script deleted the lock.

// machine is a testBundle for one key and the helpers that put it in a state.
type machine struct {
	*testBundle
	t0 time.Time // publish time of the key's first command
}

const smRetention = time.Hour

func newMachine(t *testing.T) *machine {
	t.Helper()
	b := setup(t, &Config{Retention: smRetention})
	// Every script's reply is checked against the record Redis holds:
	// the scripts build some replies from what they wrote.
	b.store.verifyReplies = true
	return &machine{testBundle: b, t0: time.Now().Add(-time.Hour).Truncate(time.Microsecond)}
}

// smBody is the command's body a dead letter keeps while its effect is unknown.
var smBody = []byte(`{"account_id":"acct_42","amount":1999,"currency":"EUR"}`)

// try is a delivery of the key's command published at published by a worker
// whose MAX_DELIVER is 3.
func (m *machine) try(published time.Time) Try {
	return Try{Kind: "payment.charge", Fingerprint: fpA, Published: published, MaxTries: 3}
}

func (m *machine) outcome() messages.Result {
	return messages.Result{Status: messages.StatusSucceeded, Data: json.RawMessage(`{"charge_id":"ch_1"}`),
		Attempts: 2, ProcessedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}
}

// dl is the dead letter of the command published at published.
func (m *machine) dl(published time.Time, effect string) DeadLetter {
	d := DeadLetter{Published: published, Effect: effect, Kind: "payment.charge", Fingerprint: fpA}
	if effect == EffectUnknown {
		d.Body = smBody
	}
	return d
}

// lease acquires the key; the test's end releases it if a script did not.
func (m *machine) lease(t *testing.T) *Lease {
	t.Helper()
	return m.acquire(t)
}

// leaseReleased reports whether the Store marked the lease released.
func leaseReleased(l *Lease) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// requireReleased checks a script's released flag against the lock: the
// lease is marked released exactly when the lock is gone, and otherwise the
// lock is still the lease's own.
func (m *machine) requireReleased(t *testing.T, lease *Lease, want bool) {
	t.Helper()
	require.Equal(t, want, leaseReleased(lease), "the lease marked released")
	if want {
		require.Empty(t, m.lockValue(t), "the script deleted the lock")
		require.ErrorIs(t, lease.Extend(m.ctx), ErrLockLost)
	} else {
		require.Equal(t, lease.Value(), m.lockValue(t), "the lock is still the caller's")
	}
}

// fields is the raw record of the key in a state that is not completed:
// the fields every such record holds, and kv.
func (m *machine) fields(kv ...string) map[string]string {
	f := map[string]string{"v": "2", "command": "payment.charge", "fingerprint": fpA, "max_tries": "3"}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = kv[i+1]
	}
	return f
}

// completedFields is the raw record of the key completed with m.outcome().
func (m *machine) completedFields() map[string]string {
	return map[string]string{"v": "2", "state": "completed", "command": "payment.charge", "fingerprint": fpA,
		"status": "succeeded", "code": "", "message": "", "data": `{"charge_id":"ch_1"}`, "attempts": "2",
		"processed_at": "2026-12-06T10:00:00.000Z"}
}

func us(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

// requireRaw checks the record as Redis holds it. A dead_at of "*" in want
// stands for any time of the last minute; the value found is returned.
func (m *machine) requireRaw(t *testing.T, want map[string]string) (deadAt string) {
	t.Helper()
	got := m.raw(t)
	if want["dead_at"] == "*" {
		deadAt = got["dead_at"]
		ms, err := strconv.ParseInt(deadAt, 10, 64)
		require.NoError(t, err, "dead_at %q", deadAt)
		require.WithinDuration(t, time.Now(), time.UnixMilli(ms), time.Minute)
		want = cloneMap(want)
		want["dead_at"] = deadAt
	}
	require.Equal(t, want, got)
	return deadAt
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	maps.Copy(c, m)
	return c
}

// running begins the key's first try (new -> running) and returns the
// holder's lease.
func (m *machine) running(t *testing.T) *Lease {
	t.Helper()
	lease := m.lease(t)
	got, err := m.store.Begin(m.ctx, lease, m.try(m.t0))
	require.NoError(t, err)
	require.Equal(t, BeginRun, got.Status)
	return lease
}

// idle leaves the key between tries after one try that may have done effect.
func (m *machine) idle(t *testing.T, effect string) {
	t.Helper()
	require.NoError(t, m.store.Settle(m.ctx, m.running(t), effect, false))
}

// dead dead-letters the command published at t0 after one try, telling its
// client effect, and returns the record's dead_at.
func (m *machine) dead(t *testing.T, effect string) string {
	t.Helper()
	rec, err := m.store.DeadLetter(m.ctx, m.running(t), m.dl(m.t0, effect))
	require.NoError(t, err)
	require.Nil(t, rec)
	return m.raw(t)["dead_at"]
}

// voided is dead with its outcome unknown, then voided by the resolver.
func (m *machine) voided(t *testing.T) {
	t.Helper()
	m.dead(t, EffectUnknown)
	_, err := m.store.DeadLetter(m.ctx, m.lease(t), DeadLetter{Effect: EffectNone, Voided: true,
		Kind: "payment.charge", Fingerprint: fpA})
	require.NoError(t, err)
}

// completed commits the key's first try.
func (m *machine) completed(t *testing.T) *Record {
	t.Helper()
	rec, err := m.store.Commit(m.ctx, m.running(t), fpA, m.outcome(), nil)
	require.NoError(t, err)
	return rec
}

// shortTTL sets the record's expiry to a minute, so that a later check can
// tell whether a script extended it.
func (m *machine) shortTTL(t *testing.T) {
	t.Helper()
	require.NoError(t, m.rdb.PExpire(m.ctx, m.store.RecordKey(m.key), time.Minute).Err())
}

// requireNotExtended checks that nothing pushed the expiry shortTTL set back.
func (m *machine) requireNotExtended(t *testing.T) {
	t.Helper()
	ttl, err := m.rdb.PTTL(m.ctx, m.store.RecordKey(m.key)).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, time.Minute)
}

// begin runs Begin of the command published at published on a new lease.
func (m *machine) begin(t *testing.T, published time.Time) (*Lease, Begun) {
	t.Helper()
	lease := m.lease(t)
	got, err := m.store.Begin(m.ctx, lease, m.try(published))
	require.NoError(t, err)
	return lease, got
}

// v1 writes a record of the format before contract v1.2 (workers of
// 1ac193c and earlier), as those workers wrote it.
func (m *machine) v1(t *testing.T, kv ...string) {
	t.Helper()
	args := make([]any, 0, 4+len(kv))
	args = append(args, "command", "payment.charge", "fingerprint", fpA)
	for _, s := range kv {
		args = append(args, s)
	}
	require.NoError(t, m.rdb.HSet(m.ctx, m.store.RecordKey(m.key), args...).Err())
	require.NoError(t, m.rdb.PExpire(m.ctx, m.store.RecordKey(m.key), smRetention).Err())
}

// requireV1Reads checks that Get reads the v1 record as want, and that the
// scripts' upgrade in place (Peek's, which adds nothing else) stores the
// same record.
func (m *machine) requireV1Reads(t *testing.T, want *Record) {
	t.Helper()
	got, err := m.store.Get(m.ctx, m.key)
	require.NoError(t, err)
	require.Equal(t, want, got, "parseRecord of the v1 record")
	peeked, err := m.store.Peek(m.ctx, m.key)
	require.NoError(t, err)
	require.Equal(t, want, peeked, "the record upgraded in place")
	raw := m.raw(t)
	require.NotContains(t, raw, "running")
	require.NotContains(t, raw, "unknown")
	if want.State != StateCompleted {
		require.Equal(t, "2", raw["v"])
		require.Equal(t, string(want.State), raw["state"])
		require.Equal(t, want.Effect, raw["effect"])
	}
	again, err := m.store.Get(m.ctx, m.key)
	require.NoError(t, err)
	require.Equal(t, want, again, "parseRecord of the upgraded record")
}

// transition is one edge of the state machine, or one reading of a record of
// the previous format: a subtest of TestStore_StateMachine, named in
// docs/state-machine.md.
type transition struct {
	name string
	run  func(t *testing.T, m *machine)
}

func TestStore_StateMachine(t *testing.T) {
	t.Parallel()
	for _, tr := range transitions {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			tr.run(t, newMachine(t))
		})
	}
}

// transitions is every edge of the machine. Names: <state the key is in>/<what happens>.
//
//nolint:thelper // each func is a subtest's body, not a helper: failures point into it
var transitions = []transition{
	{"New/Begin", func(t *testing.T, m *machine) {
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.Equal(t, &Record{Key: m.key, State: StateRunning, Kind: "payment.charge", Fingerprint: fpA,
			MaxTries: 3, Tries: 1, Effect: EffectNone}, got.Record)
		m.requireRaw(t, m.fields("state", "running", "tries", "1", "effect", "none"))
		requireTTL(t, m.testBundle, m.store.RecordKey(m.key), smRetention)
		m.requireReleased(t, lease, false)
	}},
	{"New/BeginSeparateEffect", func(t *testing.T, m *machine) {
		tr := m.try(m.t0)
		tr.SeparateEffect = true
		_, got, err := m.store.AcquireBegin(m.ctx, m.key, tr)
		require.NoError(t, err)
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.SeparateEffect)
		m.requireRaw(t, m.fields("state", "running", "tries", "1", "effect", "none", "apply", "separate"))
	}},
	{"Running/Commit", func(t *testing.T, m *machine) {
		lease := m.running(t)
		rec, err := m.store.Commit(m.ctx, lease, fpA, m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, StateCompleted, rec.State)
		m.requireRaw(t, m.completedFields())
		requireTTL(t, m.testBundle, m.store.RecordKey(m.key), smRetention)
		m.requireReleased(t, lease, true)
	}},
	{"Running/SettleNone", func(t *testing.T, m *machine) {
		lease := m.running(t)
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, false))
		m.requireRaw(t, m.fields("state", "idle", "tries", "1", "effect", "none"))
		m.requireReleased(t, lease, true)
	}},
	{"Running/SettleUnknown", func(t *testing.T, m *machine) {
		lease := m.running(t)
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectUnknown, false))
		m.requireRaw(t, m.fields("state", "idle", "tries", "1", "effect", "unknown"))
		m.requireReleased(t, lease, true)
	}},
	{"Running/SettleUntry", func(t *testing.T, m *machine) {
		lease := m.running(t)
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, true))
		m.requireRaw(t, m.fields("state", "idle", "tries", "0", "effect", "none"))
		m.requireReleased(t, lease, true)
		// The try given back is counted again by the next Begin.
		_, got := m.begin(t, m.t0)
		require.Equal(t, 1, got.Record.Tries)
	}},
	{"Running/SettleNoneKeepsUnknown", func(t *testing.T, m *machine) {
		// A key's effect goes from unknown back to none only when the
		// provider settles it, never because a later try was certain.
		m.idle(t, EffectUnknown)
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, false))
		m.requireRaw(t, m.fields("state", "idle", "tries", "2", "effect", "unknown"))
		m.requireReleased(t, lease, true)
	}},
	{"Idle/Begin", func(t *testing.T, m *machine) {
		m.idle(t, EffectUnknown)
		m.shortTTL(t)
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.Equal(t, 2, got.Record.Tries, "the next Begin counts the try")
		require.True(t, got.Record.Unknown(), "the history stays")
		m.requireRaw(t, m.fields("state", "running", "tries", "2", "effect", "unknown"))
		requireTTL(t, m.testBundle, m.store.RecordKey(m.key), smRetention)
		m.requireReleased(t, lease, false)
	}},
	{"Running/BeginAfterHolderDied", func(t *testing.T, m *machine) {
		// The holder never reported back: its lock expired.
		require.NoError(t, m.running(t).Release(m.ctx))
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown(), "the try that never reported back may have taken effect")
		m.requireRaw(t, m.fields("state", "running", "tries", "2", "effect", "unknown"))
		m.requireReleased(t, lease, false)
	}},
	{"Idle/BeginExhausted", func(t *testing.T, m *machine) {
		for range 3 {
			lease, got := m.begin(t, m.t0)
			require.Equal(t, BeginRun, got.Status)
			require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, false))
		}
		// A worker with another MAX_DELIVER counts this key's tries as the
		// one that created it did.
		lease := m.lease(t)
		tr := m.try(m.t0)
		tr.MaxTries = 10
		got, err := m.store.Begin(m.ctx, lease, tr)
		require.NoError(t, err)
		require.Equal(t, BeginExhausted, got.Status)
		require.Equal(t, 3, got.Record.MaxTries)
		require.False(t, got.Record.Unknown())
		m.requireRaw(t, m.fields("state", "idle", "tries", "3", "effect", "none"))
		m.requireReleased(t, lease, false) // the caller dead-letters the key, holding the lock
	}},
	{"Idle/BeginMaxTriesOfCreator", func(t *testing.T, m *machine) {
		m.idle(t, EffectNone)
		lease := m.lease(t)
		tr := m.try(m.t0)
		tr.MaxTries = 1 // would be out of tries by its own count
		got, err := m.store.Begin(m.ctx, lease, tr)
		require.NoError(t, err)
		require.Equal(t, BeginRun, got.Status)
		m.requireRaw(t, m.fields("state", "running", "tries", "2", "effect", "none"))
	}},
	{"Running/BeginExhausted", func(t *testing.T, m *machine) {
		for range 2 {
			lease, _ := m.begin(t, m.t0)
			require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, false))
		}
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.NoError(t, lease.Release(m.ctx)) // the last try's holder died
		lease, got = m.begin(t, m.t0)
		require.Equal(t, BeginExhausted, got.Status)
		require.True(t, got.Record.Unknown())
		m.requireRaw(t, m.fields("state", "idle", "tries", "3", "effect", "unknown"))
		m.requireReleased(t, lease, false)
	}},
	{"Idle/CommitFound", func(t *testing.T, m *machine) {
		// A key out of tries whose effect is unknown: the delivery asks the
		// provider by key, finds the effect, and stores it.
		for range 3 {
			lease, _ := m.begin(t, m.t0)
			require.NoError(t, m.store.Settle(m.ctx, lease, EffectUnknown, false))
		}
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginExhausted, got.Status)
		rec, err := m.store.Commit(m.ctx, lease, fpA, m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, StateCompleted, rec.State)
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, true)
	}},
	{"Idle/DeadLetterNone", func(t *testing.T, m *machine) {
		m.idle(t, EffectNone)
		lease := m.lease(t)
		m.shortTTL(t)
		rec, err := m.store.DeadLetter(m.ctx, lease, m.dl(m.t0, EffectNone))
		require.NoError(t, err)
		require.Nil(t, rec)
		m.requireRaw(t, m.fields("state", "dead", "tries", "0", "effect", "none",
			"dead_before", us(m.t0), "dead_effect", "none", "dead_at", "*"))
		requireTTL(t, m.testBundle, m.store.RecordKey(m.key), smRetention)
		m.requireReleased(t, lease, true)
	}},
	{"Idle/DeadLetterUnknown", func(t *testing.T, m *machine) {
		m.idle(t, EffectUnknown)
		lease := m.lease(t)
		_, err := m.store.DeadLetter(m.ctx, lease, m.dl(m.t0, EffectUnknown))
		require.NoError(t, err)
		m.requireRaw(t, m.fields("state", "dead", "tries", "0", "effect", "unknown",
			"dead_before", us(m.t0), "dead_effect", "unknown", "dead_at", "*", "body", string(smBody)))
		m.requireReleased(t, lease, true)
		rec, err := m.store.Get(m.ctx, m.key)
		require.NoError(t, err)
		require.Equal(t, smBody, rec.Body)
		require.Equal(t, m.t0, rec.DeadBefore)
	}},
	{"Running/DeadLetterNone", func(t *testing.T, m *machine) {
		lease := m.running(t)
		_, err := m.store.DeadLetter(m.ctx, lease, m.dl(m.t0, EffectNone))
		require.NoError(t, err)
		m.requireRaw(t, m.fields("state", "dead", "tries", "0", "effect", "none",
			"dead_before", us(m.t0), "dead_effect", "none", "dead_at", "*"))
		m.requireReleased(t, lease, true)
	}},
	{"Running/DeadLetterUnknown", func(t *testing.T, m *machine) {
		lease := m.running(t)
		_, err := m.store.DeadLetter(m.ctx, lease, m.dl(m.t0, EffectUnknown))
		require.NoError(t, err)
		m.requireRaw(t, m.fields("state", "dead", "tries", "0", "effect", "unknown",
			"dead_before", us(m.t0), "dead_effect", "unknown", "dead_at", "*", "body", string(smBody)))
		m.requireReleased(t, lease, true)
	}},
	{"DeadUnknown/Commit", func(t *testing.T, m *machine) {
		// The resolver found the effect at the provider and stores it.
		m.dead(t, EffectUnknown)
		lease := m.lease(t)
		rec, err := m.store.Commit(m.ctx, lease, fpA, m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, StateCompleted, rec.State)
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, true)
	}},
	{"DeadUnknown/ResolverVoids", func(t *testing.T, m *machine) {
		deadAt := m.dead(t, EffectUnknown)
		lease := m.lease(t)
		rec, err := m.store.DeadLetter(m.ctx, lease, DeadLetter{Effect: EffectNone, Voided: true,
			Kind: "payment.charge", Fingerprint: fpA})
		require.NoError(t, err)
		require.Nil(t, rec)
		// Published zero keeps the fence; dead_at is the first dead letter's;
		// the body is no longer needed.
		m.requireRaw(t, m.fields("state", "dead", "tries", "0", "effect", "none", "voided", "1",
			"dead_before", us(m.t0), "dead_effect", "none", "dead_at", deadAt))
		m.requireReleased(t, lease, true)
	}},
	{"Dead/DeadLetterKeepsDeadAt", func(t *testing.T, m *machine) {
		deadAt := m.dead(t, EffectUnknown)
		// The resolver could not tell (a lookup failed): it records the dead
		// letter again as it stands. dead_at stays the first one's: the
		// resolver's delays grow with it.
		require.NoError(t, m.rdb.HSet(m.ctx, m.store.RecordKey(m.key), "dead_at", "1").Err())
		lease := m.lease(t)
		_, err := m.store.DeadLetter(m.ctx, lease, DeadLetter{Effect: EffectUnknown, Body: smBody})
		require.NoError(t, err)
		require.Equal(t, "1", m.raw(t)["dead_at"], "set once, not at each dead letter of a dead key (was %s)", deadAt)
		m.requireReleased(t, lease, true)
	}},
	{"Dead/BeginRedrive", func(t *testing.T, m *machine) {
		m.dead(t, EffectUnknown)
		lease, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status)
		require.Equal(t, 1, got.Record.Tries, "fresh tries")
		require.True(t, got.Record.Unknown(), "what may have happened before stays known")
		m.requireRaw(t, m.fields("state", "running", "tries", "1", "effect", "unknown",
			"dead_before", us(m.t0), "dead_effect", "unknown", "dead_at", "*", "body", string(smBody)))
		m.requireReleased(t, lease, false)
	}},
	{"DeadNone/BeginRedrive", func(t *testing.T, m *machine) {
		m.dead(t, EffectNone)
		_, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status)
		require.False(t, got.Record.Unknown())
		m.requireRaw(t, m.fields("state", "running", "tries", "1", "effect", "none",
			"dead_before", us(m.t0), "dead_effect", "none", "dead_at", "*"))
	}},
	{"Redriven/DeadLetterAgain", func(t *testing.T, m *machine) {
		first := m.dead(t, EffectNone)
		require.NoError(t, m.rdb.HSet(m.ctx, m.store.RecordKey(m.key), "dead_at", "1").Err())
		later := m.t0.Add(time.Second)
		lease, _ := m.begin(t, later)
		_, err := m.store.DeadLetter(m.ctx, lease, m.dl(later, EffectNone))
		require.NoError(t, err)
		// A new dead letter of a re-driven key: a new fence and a new dead_at.
		deadAt := m.requireRaw(t, m.fields("state", "dead", "tries", "0", "effect", "none",
			"dead_before", us(later), "dead_effect", "none", "dead_at", "*"))
		require.NotEqual(t, "1", deadAt, "(the first was %s)", first)
		m.requireReleased(t, lease, true)
	}},
	{"DeadVoided/BeginLater", func(t *testing.T, m *machine) {
		m.voided(t)
		before := m.raw(t)
		m.shortTTL(t)
		lease, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginVoided, got.Status)
		require.True(t, got.Record.Voided)
		require.Equal(t, before, m.raw(t), "nothing written")
		m.requireNotExtended(t)
		m.requireReleased(t, lease, false)
	}},
	{"Dead/BeginOldMessage", func(t *testing.T, m *machine) {
		m.dead(t, EffectUnknown)
		before := m.raw(t)
		for _, at := range []time.Time{m.t0, m.t0.Add(-time.Second)} {
			lease, got := m.begin(t, at)
			require.Equal(t, BeginDeadLettered, got.Status)
			require.Equal(t, EffectUnknown, got.Record.DeadEffect)
			require.Equal(t, before, m.raw(t), "nothing written")
			require.NoError(t, lease.Release(m.ctx))
		}
	}},
	{"Redriven/BeginOldMessage", func(t *testing.T, m *machine) {
		m.dead(t, EffectNone)
		lease, _ := m.begin(t, m.t0.Add(time.Second))
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectUnknown, false))
		before := m.raw(t)
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginDeadLettered, got.Status, "a late delivery of the dead-lettered message")
		require.Equal(t, EffectNone, got.Record.DeadEffect, "what that dead letter told its client")
		require.Equal(t, before, m.raw(t))
		m.requireReleased(t, lease, false)
	}},
	{"Completed/BeginOldMessage", func(t *testing.T, m *machine) {
		m.dead(t, EffectNone)
		lease, _ := m.begin(t, m.t0.Add(time.Second))
		_, err := m.store.Commit(m.ctx, lease, fpA, m.outcome(), nil)
		require.NoError(t, err)
		_, got := m.begin(t, m.t0)
		require.Equal(t, BeginCompleted, got.Status, "the outcome wins over the dead letter before it")
		m.requireRaw(t, m.completedFields())
	}},
	{"Running/Conflict", func(t *testing.T, m *machine) {
		require.NoError(t, m.running(t).Release(m.ctx))
		m.requireConflict(t)
	}},
	{"Idle/Conflict", func(t *testing.T, m *machine) {
		m.idle(t, EffectUnknown)
		m.requireConflict(t)
	}},
	{"Dead/Conflict", func(t *testing.T, m *machine) {
		m.dead(t, EffectUnknown)
		m.requireConflict(t)
	}},
	{"DeadVoided/Conflict", func(t *testing.T, m *machine) {
		m.voided(t)
		m.requireConflict(t)
	}},
	{"Completed/Conflict", func(t *testing.T, m *machine) {
		m.completed(t)
		m.requireConflict(t)
	}},
	{"Completed/Final", func(t *testing.T, m *machine) {
		stored := m.completed(t)
		before := m.raw(t)
		other := messages.Result{Status: messages.StatusFailed, Code: "card_declined", Attempts: 1, ProcessedAt: time.Now()}

		lease := m.lease(t)
		rec, err := m.store.Commit(m.ctx, lease, fpA, other, nil)
		require.NoError(t, err)
		require.Equal(t, stored, rec, "commit: the stored outcome wins")
		m.requireReleased(t, lease, false)

		rec, err = m.store.DeadLetter(m.ctx, lease, m.dl(m.t0.Add(time.Second), EffectUnknown))
		require.NoError(t, err)
		require.Equal(t, stored, rec, "dead letter: the stored outcome is answered instead")
		m.requireReleased(t, lease, false)

		require.NoError(t, m.store.Settle(m.ctx, lease, EffectUnknown, false))
		m.requireReleased(t, lease, true) // settle ends the tenure whatever it finds
		require.Equal(t, before, m.raw(t), "nothing changed")
	}},
	{"Completed/Begin", func(t *testing.T, m *machine) {
		stored := m.completed(t)
		m.shortTTL(t)
		lease, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginCompleted, got.Status)
		require.Equal(t, stored, got.Record)
		requireTTL(t, m.testBundle, m.store.RecordKey(m.key), smRetention) // a replay is an answer
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, false)
	}},
	{"New/BeginCommit", func(t *testing.T, m *machine) {
		lease := m.lease(t)
		got, err := m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0), m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, BeginCommitted, got.Status)
		m.requireRaw(t, m.completedFields())
		requireTTL(t, m.testBundle, m.store.RecordKey(m.key), smRetention)
		m.requireReleased(t, lease, true)
	}},
	{"Idle/BeginCommit", func(t *testing.T, m *machine) {
		m.idle(t, EffectNone)
		lease := m.lease(t)
		got, err := m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0), m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, BeginCommitted, got.Status)
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, true)
	}},
	{"Dead/BeginCommitRedrive", func(t *testing.T, m *machine) {
		m.dead(t, EffectNone)
		lease := m.lease(t)
		got, err := m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0), m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, BeginDeadLettered, got.Status, "the dead-lettered message itself")
		m.requireReleased(t, lease, false)
		got, err = m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0.Add(time.Second)), m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, BeginCommitted, got.Status, "a re-drive")
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, true)
	}},
	{"Separate/BeginCommit", func(t *testing.T, m *machine) {
		tr := m.try(m.t0)
		tr.SeparateEffect = true
		lease, _, err := m.store.AcquireBegin(m.ctx, m.key, tr)
		require.NoError(t, err)
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, false))
		m.requireSeparate(t)
	}},
	{"Running/BeginCommit", func(t *testing.T, m *machine) {
		require.NoError(t, m.running(t).Release(m.ctx))
		m.requireSeparate(t)
	}},
	{"DeadVoided/BeginCommit", func(t *testing.T, m *machine) {
		m.voided(t)
		before := m.raw(t)
		lease := m.lease(t)
		got, err := m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0.Add(time.Second)), m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, BeginVoided, got.Status)
		require.Equal(t, before, m.raw(t))
		m.requireReleased(t, lease, false)
	}},
	{"Missing/Commit", func(t *testing.T, m *machine) {
		lease := m.running(t)
		require.NoError(t, m.rdb.Del(m.ctx, m.store.RecordKey(m.key)).Err()) // Redis lost it
		_, err := m.store.Commit(m.ctx, lease, fpA, m.outcome(), nil)
		require.ErrorIs(t, err, ErrRecordLost)
		require.Empty(t, m.raw(t), "nothing written")
		m.requireReleased(t, lease, false)
	}},
	{"Missing/DeadLetter", func(t *testing.T, m *machine) {
		lease := m.running(t)
		require.NoError(t, m.rdb.Del(m.ctx, m.store.RecordKey(m.key)).Err())
		_, err := m.store.DeadLetter(m.ctx, lease, m.dl(m.t0, EffectUnknown))
		require.NoError(t, err)
		// Rebuilt from the dead letter: the fence holds, and the resolver
		// finds the body. (No max_tries: the next Begin sets its own.)
		want := m.fields("state", "dead", "tries", "0", "effect", "unknown",
			"dead_before", us(m.t0), "dead_effect", "unknown", "dead_at", "*", "body", string(smBody))
		delete(want, "max_tries")
		m.requireRaw(t, want)
		m.requireReleased(t, lease, true)
	}},
	{"Missing/Settle", func(t *testing.T, m *machine) {
		lease := m.running(t)
		require.NoError(t, m.rdb.Del(m.ctx, m.store.RecordKey(m.key)).Err())
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectUnknown, false))
		require.Empty(t, m.raw(t), "nothing re-created")
		m.requireReleased(t, lease, true)
	}},
	{"Any/LockLost", func(t *testing.T, m *machine) {
		// Every script that changes a key is fenced: a caller whose lock is
		// gone writes nothing and is not marked released.
		m.idle(t, EffectUnknown)
		before := m.raw(t)
		calls := map[string]func(*Lease) error{
			"begin": func(l *Lease) error { _, err := m.store.Begin(m.ctx, l, m.try(m.t0)); return err },
			"beginCommit": func(l *Lease) error {
				_, err := m.store.BeginAndCommit(m.ctx, l, m.try(m.t0), m.outcome(), nil)
				return err
			},
			"commit": func(l *Lease) error { _, err := m.store.Commit(m.ctx, l, fpA, m.outcome(), nil); return err },
			"settle": func(l *Lease) error { return m.store.Settle(m.ctx, l, EffectUnknown, false) },
			"deadLetter": func(l *Lease) error {
				_, err := m.store.DeadLetter(m.ctx, l, m.dl(m.t0, EffectNone))
				return err
			},
		}
		for name, call := range calls {
			lease := m.lease(t)
			require.NoError(t, m.rdb.Set(m.ctx, m.store.LockKey(m.key), "other-worker", time.Minute).Err())
			require.ErrorIs(t, call(lease), ErrLockLost, name)
			require.Equal(t, before, m.raw(t), name)
			require.False(t, leaseReleased(lease), name)
			require.Equal(t, "other-worker", m.lockValue(t), name)
			require.NoError(t, m.rdb.Del(m.ctx, m.store.LockKey(m.key)).Err())
		}
	}},

	// Records of the previous format (before contract v1.2), as workers of
	// 1ac193c wrote them: state in_progress with flags.
	{"V1/InProgressRunning", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "1", "running", "1")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateRunning, Kind: "payment.charge", Fingerprint: fpA,
			Tries: 1, Effect: EffectNone})
		// The v1 worker's try never reported back: unknown, as for a new record.
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown())
		require.Equal(t, 2, got.Record.Tries)
		m.requireRaw(t, m.fields("state", "running", "tries", "2", "effect", "unknown"))
		m.requireReleased(t, lease, false)
	}},
	{"V1/InProgressRunningBeginNoPeek", func(t *testing.T, m *machine) {
		// The same, upgraded by Begin itself; max_tries comes from this Try.
		m.v1(t, "state", "in_progress", "tries", "1", "running", "1")
		_, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown())
		m.requireRaw(t, m.fields("state", "running", "tries", "2", "effect", "unknown"))
	}},
	{"V1/InProgressRunningSettle", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "1", "running", "1")
		lease := m.lease(t)
		require.NoError(t, m.store.Settle(m.ctx, lease, EffectNone, false))
		want := m.fields("state", "idle", "tries", "1", "effect", "none")
		delete(want, "max_tries")
		m.requireRaw(t, want)
		m.requireReleased(t, lease, true)
	}},
	{"V1/InProgressRunningCommit", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "2", "running", "1", "unknown", "1")
		lease := m.lease(t)
		_, err := m.store.Commit(m.ctx, lease, fpA, m.outcome(), nil)
		require.NoError(t, err)
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, true)
	}},
	{"V1/InProgressRunningBeginCommit", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "1", "running", "1")
		m.requireSeparate(t)
	}},
	{"V1/InProgressUnknown", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "1", "unknown", "1")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateIdle, Kind: "payment.charge", Fingerprint: fpA,
			Tries: 1, Effect: EffectUnknown})
		_, got := m.begin(t, m.t0)
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown())
		m.requireRaw(t, m.fields("state", "running", "tries", "2", "effect", "unknown"))
	}},
	{"V1/InProgressIdleDeadLetter", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "3")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateIdle, Kind: "payment.charge", Fingerprint: fpA,
			Tries: 3, Effect: EffectNone})
		lease := m.lease(t)
		_, err := m.store.DeadLetter(m.ctx, lease, m.dl(m.t0, EffectNone))
		require.NoError(t, err)
		want := m.fields("state", "dead", "tries", "0", "effect", "none",
			"dead_before", us(m.t0), "dead_effect", "none", "dead_at", "*")
		delete(want, "max_tries")
		m.requireRaw(t, want)
		m.requireReleased(t, lease, true)
	}},
	{"V1/InProgressIdleBeginCommit", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "1")
		lease := m.lease(t)
		got, err := m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0), m.outcome(), nil)
		require.NoError(t, err)
		require.Equal(t, BeginCommitted, got.Status)
		m.requireRaw(t, m.completedFields())
		m.requireReleased(t, lease, true)
	}},
	{"V1/DeadNone", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "0", "dead_before", us(m.t0), "dead_effect", "none")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateDead, Kind: "payment.charge", Fingerprint: fpA,
			Effect: EffectNone, DeadBefore: m.t0, DeadEffect: EffectNone})
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginDeadLettered, got.Status)
		require.Equal(t, EffectNone, got.Record.DeadEffect)
		require.NoError(t, lease.Release(m.ctx))
		_, got = m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status, "a re-drive")
		require.False(t, got.Record.Unknown())
		m.requireRaw(t, m.fields("state", "running", "tries", "1", "effect", "none",
			"dead_before", us(m.t0), "dead_effect", "none"))
	}},
	{"V1/DeadUnknown", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "0", "dead_before", us(m.t0), "dead_effect", "unknown")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateDead, Kind: "payment.charge", Fingerprint: fpA,
			Effect: EffectUnknown, DeadBefore: m.t0, DeadEffect: EffectUnknown})
		_, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown(), "the re-drive keeps the dead letter's unknown effect")
		m.requireRaw(t, m.fields("state", "running", "tries", "1", "effect", "unknown",
			"dead_before", us(m.t0), "dead_effect", "unknown"))
	}},
	{"V1/DeadNoneButUnknown", func(t *testing.T, m *machine) {
		// A v1 worker dead-lettered as none a key one of whose tries was
		// unknown (issue 17's lie): the history wins.
		m.v1(t, "state", "in_progress", "tries", "0", "unknown", "1", "dead_before", us(m.t0), "dead_effect", "none")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateDead, Kind: "payment.charge", Fingerprint: fpA,
			Effect: EffectUnknown, DeadBefore: m.t0, DeadEffect: EffectNone})
		_, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown())
	}},
	{"V1/DeadUnknownResolverVoids", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "0", "dead_before", us(m.t0), "dead_effect", "unknown")
		lease := m.lease(t)
		_, err := m.store.DeadLetter(m.ctx, lease, DeadLetter{Effect: EffectNone, Voided: true,
			Kind: "payment.charge", Fingerprint: fpA})
		require.NoError(t, err)
		want := m.fields("state", "dead", "tries", "0", "effect", "none", "voided", "1",
			"dead_before", us(m.t0), "dead_effect", "none", "dead_at", "*")
		delete(want, "max_tries")
		m.requireRaw(t, want)
		m.requireReleased(t, lease, true)
	}},
	{"V1/Redriven", func(t *testing.T, m *machine) {
		m.v1(t, "state", "in_progress", "tries", "1", "dead_before", us(m.t0), "dead_effect", "none")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateIdle, Kind: "payment.charge", Fingerprint: fpA,
			Tries: 1, Effect: EffectNone, DeadBefore: m.t0, DeadEffect: EffectNone})
		lease, got := m.begin(t, m.t0)
		require.Equal(t, BeginDeadLettered, got.Status, "the dead-lettered message stays so")
		require.NoError(t, lease.Release(m.ctx))
		_, got = m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status)
		require.Equal(t, 2, got.Record.Tries)
	}},
	{"V1/RedrivenAfterDeadUnknown", func(t *testing.T, m *machine) {
		// A v1 worker dead-lettered the key as outcome_unknown (its last
		// try's error was ambiguous: v1 set no unknown flag for that), then
		// re-drove it. The key's history is unknown: an earlier call may
		// have taken effect, and the re-drive does not change that.
		m.v1(t, "state", "in_progress", "tries", "1", "dead_before", us(m.t0), "dead_effect", "unknown")
		m.requireV1Reads(t, &Record{Key: m.key, State: StateIdle, Kind: "payment.charge", Fingerprint: fpA,
			Tries: 1, Effect: EffectUnknown, DeadBefore: m.t0, DeadEffect: EffectUnknown})
		_, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginRun, got.Status)
		require.True(t, got.Record.Unknown(), "a later dead letter of this key must not say none")
	}},
	{"V1/Completed", func(t *testing.T, m *machine) {
		m.v1(t, "state", "completed", "status", "succeeded", "code", "", "message", "",
			"data", `{"charge_id":"ch_1"}`, "attempts", "2", "processed_at", "2026-12-06T10:00:00.000Z")
		res := m.outcome()
		res.Key, res.Kind, res.Fingerprint = m.key, "payment.charge", fpA
		want := &Record{Key: m.key, State: StateCompleted, Kind: "payment.charge", Fingerprint: fpA, Result: &res}
		m.requireV1Reads(t, want)
		before := m.raw(t)
		lease, got := m.begin(t, m.t0.Add(time.Second))
		require.Equal(t, BeginCompleted, got.Status)
		require.Equal(t, want, got.Record)
		rec, err := m.store.Commit(m.ctx, lease, fpA, messages.Result{Status: messages.StatusFailed}, nil)
		require.NoError(t, err)
		require.Equal(t, want, rec)
		require.Equal(t, before, m.raw(t), "a v1 completed record is read as it is")
	}},
}

// requireConflict checks that another fingerprint is refused by every
// script, with nothing written.
func (m *machine) requireConflict(t *testing.T) {
	t.Helper()
	before := m.raw(t)
	m.shortTTL(t)
	completed := before["state"] == "completed"
	other := Try{Kind: "payment.charge", Fingerprint: fpB, Published: m.t0.Add(time.Minute), MaxTries: 3}
	lease := m.lease(t)

	got, err := m.store.Begin(m.ctx, lease, other)
	require.NoError(t, err)
	require.Equal(t, BeginConflict, got.Status, "begin")
	require.Equal(t, fpA, got.Record.Fingerprint)

	got, err = m.store.BeginAndCommit(m.ctx, lease, other, m.outcome(), nil)
	require.NoError(t, err)
	require.Equal(t, BeginConflict, got.Status, "begin and commit")

	rec, err := m.store.Commit(m.ctx, lease, fpB, m.outcome(), nil)
	if completed {
		require.NoError(t, err, "commit: a completed record is answered whatever the fingerprint")
		require.Equal(t, fpA, rec.Fingerprint)
	} else {
		require.ErrorIs(t, err, ErrFingerprintMismatch, "commit")
	}
	require.Equal(t, before, m.raw(t), "nothing written")
	m.requireNotExtended(t)
	m.requireReleased(t, lease, false)
}

// requireSeparate checks that BeginAndCommit sends a key begun apart (or
// running) that way, with nothing written and no effect applied.
func (m *machine) requireSeparate(t *testing.T) {
	t.Helper()
	before, err := m.store.Get(m.ctx, m.key)
	require.NoError(t, err)
	beforeRaw := m.raw(t)
	cart := m.store.Config().Namespace + "cart:{c}"
	lease := m.lease(t)
	got, err := m.store.BeginAndCommit(m.ctx, lease, m.try(m.t0), m.outcome(), &Effect{Key: cart, Field: "SKU", By: 1})
	require.NoError(t, err)
	require.Equal(t, BeginSeparate, got.Status)
	after, err := m.store.Get(m.ctx, m.key)
	require.NoError(t, err)
	require.Equal(t, before, after, "the record reads the same")
	if beforeRaw["v"] == "2" {
		require.Equal(t, beforeRaw, m.raw(t), "nothing written")
	} // else: upgraded in place, and nothing more (V1/ tests check the upgrade)
	require.Zero(t, m.rdb.Exists(m.ctx, cart).Val(), "no effect applied")
	m.requireReleased(t, lease, false)
}

// TestStore_StateMachineDocumented ties docs/state-machine.md to the test:
// every transition the document names is a subtest of
// TestStore_StateMachine, and every subtest is named in the document.
func TestStore_StateMachineDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/state-machine.md")
	require.NoError(t, err)
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`TestStore_StateMachine/([A-Za-z0-9/]+)`").FindAllSubmatch(doc, -1) {
		named[string(m[1])] = true
	}
	names := make([]string, 0, len(transitions))
	for _, tr := range transitions {
		require.NotContains(t, names, tr.name, "subtest names are unique")
		names = append(names, tr.name)
		require.True(t, named[tr.name], "docs/state-machine.md does not name TestStore_StateMachine/%s", tr.name)
	}
	for name := range named {
		require.True(t, slices.Contains(names, name), "docs/state-machine.md names TestStore_StateMachine/%s, which does not exist", name)
	}
}
