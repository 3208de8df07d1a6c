package admin_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/dedupe"
	"github.com/idempay/idempay/pkg/messages"
)

// testBundle is a namespaced deployment without workers, the store the
// workers would use, and an Admin on both.
type testBundle struct {
	env   *loadtest.Env
	store *dedupe.Store
	admin *admin.Admin
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	store, err := dedupe.New(env.RDB, &dedupe.Config{Namespace: env.Config.KeyPrefix, Retention: time.Hour})
	require.NoError(t, err)
	a, err := admin.New(env.NC, env.RDB, &admin.Config{Topology: env.Config.Topology, KeyPrefix: env.Config.KeyPrefix})
	require.NoError(t, err)
	return &testBundle{env: env, store: store, admin: a}
}

func TestNames_AreTheStores(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := client.NewKey()
	require.Equal(t, b.store.RecordKey(key), b.admin.RecordKey(key))
	require.Equal(t, b.store.LockKey(key), b.admin.LockKey(key))
	require.Equal(t, b.store.ResolveKey(), b.admin.ResolveKey())
}

const fp = "1a4b4750a5da821234e8dd6ad2e96c9948a6dcd010f45a3e986f74190d96b50e"

var body = []byte(`{"account_id":"acct_42","amount":1999,"currency":"EUR"}`)

func try(published time.Time) dedupe.Try {
	return dedupe.Try{Kind: messages.KindPaymentCharge, Fingerprint: fp, Published: published, MaxTries: 3}
}

// states puts keys in every state of the record, through the store's own
// scripts, and returns them by name; v1 records are written as workers
// before contract v1.2 wrote them.
func states(t *testing.T, b *testBundle) map[string]string {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	keys := map[string]string{}
	begin := func(name string) (string, *dedupe.Lease) {
		key := client.NewKey()
		keys[name] = key
		lease, _, err := b.store.AcquireBegin(ctx, key, try(t0))
		require.NoError(t, err)
		return key, lease
	}
	again := func(key string, published time.Time) *dedupe.Lease {
		lease, _, err := b.store.AcquireBegin(ctx, key, try(published))
		require.NoError(t, err)
		return lease
	}
	dl := func(effect string) dedupe.DeadLetter {
		d := dedupe.DeadLetter{Published: t0, Effect: effect, Kind: messages.KindPaymentCharge, Fingerprint: fp}
		if effect == dedupe.EffectUnknown {
			d.Body = body
		}
		return d
	}
	outcome := messages.Result{Status: messages.StatusSucceeded, Data: json.RawMessage(`{"charge_id":"ch_1"}`),
		Attempts: 2, ProcessedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}

	_, lease := begin("running")
	require.NoError(t, lease.Release(ctx)) // the holder died: running, no lock
	_, lease = begin("idle")
	require.NoError(t, b.store.Settle(ctx, lease, dedupe.EffectNone, false))
	_, lease = begin("idleUnknown")
	require.NoError(t, b.store.Settle(ctx, lease, dedupe.EffectUnknown, false))
	_, lease = begin("completed")
	_, err := b.store.Commit(ctx, lease, fp, outcome, nil)
	require.NoError(t, err)
	_, lease = begin("deadNone")
	_, err = b.store.DeadLetter(ctx, lease, dl(dedupe.EffectNone))
	require.NoError(t, err)
	_, lease = begin("deadUnknown")
	_, err = b.store.DeadLetter(ctx, lease, dl(dedupe.EffectUnknown))
	require.NoError(t, err)
	key, lease := begin("deadVoided")
	_, err = b.store.DeadLetter(ctx, lease, dl(dedupe.EffectUnknown))
	require.NoError(t, err)
	lease, err = b.store.Acquire(ctx, key)
	require.NoError(t, err)
	_, err = b.store.DeadLetter(ctx, lease, dedupe.DeadLetter{Effect: dedupe.EffectNone, Voided: true})
	require.NoError(t, err)
	key, lease = begin("redrivenIdle")
	_, err = b.store.DeadLetter(ctx, lease, dl(dedupe.EffectNone))
	require.NoError(t, err)
	require.NoError(t, b.store.Settle(ctx, again(key, t0.Add(time.Minute)), dedupe.EffectNone, false))

	for name, fields := range map[string][]any{
		"v1Running":  {"state", "in_progress", "command", messages.KindPaymentCharge, "fingerprint", fp, "tries", "1", "running", "1"},
		"v1Unknown":  {"state", "in_progress", "command", messages.KindPaymentCharge, "fingerprint", fp, "tries", "2", "unknown", "1"},
		"v1DeadNone": {"state", "in_progress", "command", messages.KindPaymentCharge, "fingerprint", fp, "tries", "0", "dead_before", "1765000000000000", "dead_effect", "none"},
	} {
		key := client.NewKey()
		keys[name] = key
		require.NoError(t, b.env.RDB.HSet(ctx, b.store.RecordKey(key), fields...).Err())
	}
	return keys
}

// TestRecord_ReadsWhatTheStoreWrites: the Admin reads every state of the
// record, of this format and the one before contract v1.2, as the store
// itself reads it (dedupe.Store.Get), field by field.
func TestRecord_ReadsWhatTheStoreWrites(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for name, key := range states(t, b) {
		want, err := b.store.Get(context.Background(), key)
		require.NoError(t, err)
		rep, err := b.admin.Inspect(context.Background(), key)
		require.NoError(t, err, name)
		got := rep.Record
		require.NotNil(t, got, name)
		require.Equal(t, want.State, got.State, name)
		require.Equal(t, want.Kind, got.Kind, name)
		require.Equal(t, want.Fingerprint, got.Fingerprint, name)
		require.Equal(t, want.Tries, got.Tries, name)
		require.Equal(t, want.MaxTries, got.MaxTries, name)
		require.Equal(t, want.Effect, got.Effect, name)
		require.Equal(t, want.SeparateEffect, got.SeparateEffect, name)
		require.Equal(t, want.DeadBefore, got.DeadBefore, name)
		require.Equal(t, want.DeadEffect, got.DeadEffect, name)
		require.Equal(t, want.DeadAt, got.DeadAt, name)
		require.Equal(t, want.Voided, got.Voided, name)
		require.Equal(t, want.Body != nil, got.HasBody, name)
		require.NotContains(t, got.Fields, "body", "the body stays out of what is shown")
		if want.Result != nil {
			require.Equal(t, *want.Result, *got.Outcome, name)
		} else {
			require.Nil(t, got.Outcome, name)
		}
		require.Empty(t, rep.Problems, name)
	}
}

// TestAdmin_Evict: for every state of the record, Evict does what
// EvictionOf says (the console and the producer show that before asking):
// a completed record and an idle one with effect none go, and are written
// to the audit log with what they held; every other is refused with its
// reason and left as it was; a held lock refuses any; a record that
// changed since it was shown is refused.
func TestAdmin_Evict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	allowed := map[string]bool{"completed": true, "idle": true}
	for name, key := range states(t, b) {
		rep, err := b.admin.Inspect(ctx, key)
		require.NoError(t, err)
		require.Equal(t, allowed[name], rep.Eviction.Allowed, "%s: %+v", name, rep.Eviction)
		rec, err := b.admin.Evict(ctx, key, "tester", admin.ExpectOf(rep.Record))
		after, gerr := b.store.Get(ctx, key)
		require.NoError(t, gerr)
		if !allowed[name] {
			require.ErrorIs(t, err, admin.ErrNotEvictable, name)
			require.ErrorContains(t, err, rep.Eviction.Refused, name)
			require.NotNil(t, after, "%s: left as it was", name)
			continue
		}
		require.NoError(t, err, name)
		require.Equal(t, rep.Record.State, rec.State)
		require.Nil(t, after, "%s: evicted", name)
		log, err := b.admin.AuditLog(ctx, 5, key)
		require.NoError(t, err)
		require.Len(t, log, 1)
		require.Equal(t, admin.ActionEvict, log[0].Action)
		require.Equal(t, "tester", log[0].Who)
		require.Equal(t, rep.Record.Fields["state"], log[0].Record["state"], "the audit keeps what the record held")
		require.Equal(t, fp, log[0].Record["fingerprint"])
		require.WithinDuration(t, time.Now(), log[0].At, time.Minute)
	}

	t.Run("Locked", func(t *testing.T) {
		t.Parallel()
		key := client.NewKey()
		lease, _, err := b.store.AcquireBegin(ctx, key, try(time.Now()))
		require.NoError(t, err)
		require.NoError(t, b.store.Settle(ctx, lease, dedupe.EffectNone, false)) // idle: evictable, but for the lock
		lease, err = b.store.Acquire(ctx, key)
		require.NoError(t, err)
		rep, err := b.admin.Inspect(ctx, key)
		require.NoError(t, err)
		require.NotNil(t, rep.Lock)
		require.Equal(t, lease.Value(), rep.Lock.Holder)
		require.False(t, rep.Eviction.Allowed)
		_, err = b.admin.Evict(ctx, key, "tester", nil)
		require.ErrorIs(t, err, admin.ErrLocked)
		require.ErrorContains(t, err, lease.Value())
		require.NoError(t, lease.Release(ctx))
		_, err = b.admin.Evict(ctx, key, "tester", &admin.Expect{State: string(admin.StateIdle), Tries: 1})
		require.NoError(t, err, "released: evicted")
	})
	t.Run("Changed", func(t *testing.T) {
		t.Parallel()
		key := client.NewKey()
		lease, _, err := b.store.AcquireBegin(ctx, key, try(time.Now()))
		require.NoError(t, err)
		require.NoError(t, b.store.Settle(ctx, lease, dedupe.EffectNone, false))
		rep, err := b.admin.Inspect(ctx, key)
		require.NoError(t, err)
		lease, _, err = b.store.AcquireBegin(ctx, key, try(time.Now())) // the next try began
		require.NoError(t, err)
		require.NoError(t, b.store.Settle(ctx, lease, dedupe.EffectNone, false))
		_, err = b.admin.Evict(ctx, key, "tester", admin.ExpectOf(rep.Record))
		require.ErrorIs(t, err, admin.ErrChanged)
		rec, err := b.store.Get(ctx, key)
		require.NoError(t, err)
		require.Equal(t, 2, rec.Tries, "left as it was")
	})
	t.Run("Absent", func(t *testing.T) {
		t.Parallel()
		_, err := b.admin.Evict(ctx, client.NewKey(), "tester", nil)
		require.ErrorIs(t, err, admin.ErrNoRecord)
		_, err = b.admin.Evict(ctx, "not-a-key", "tester", nil)
		require.ErrorIs(t, err, admin.ErrInvalidKey)
	})
}
