package client_test

import (
	"crypto/sha1" //nolint:gosec // G505: RFC 9562 name-based UUIDs are SHA-1 by definition; this recomputes one
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/internal/load/loadtest"
	"github.com/idempay/idempay/pkg/client"
	"github.com/idempay/idempay/pkg/messages"
)

// uuidv5 is RFC 9562's name-based SHA-1 UUID written out by hand, so that
// ScopedKey is checked against the RFC, not against the library it uses.
func uuidv5(ns [16]byte, name string) [16]byte {
	h := sha1.New() //nolint:gosec // G401: see uuidv5
	h.Write(ns[:])
	h.Write([]byte(name))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // variant 10
	return u
}

func TestScopedKey(t *testing.T) {
	t.Parallel()
	ns := [16]byte(uuid.MustParse("7fdf12f7-4367-4d36-9bfb-43870eb77919"))
	for _, c := range [][2]string{{"acme", "order-1001"}, {"acme", "order-1002"}, {"globex", "order-1001"}, {"t", "caf\u00e9"}, {"a.b_c-D9", strings.Repeat("~", 255)}} {
		want := uuid.UUID(uuidv5(uuidv5(ns, c[0]), c[1])).String()
		got := client.ScopedKey(c[0], c[1])
		require.Equal(t, want, got, "%q %q", c[0], c[1])
		require.True(t, messages.ValidKey(got), "a canonical UUID")
	}
	require.NotEqual(t, client.ScopedKey("acme", "k"), client.ScopedKey("globex", "k"), "two tenants, two operations")
	require.NotEqual(t, client.ScopedKey("ab", "c"), client.ScopedKey("a", "bc"), "no ambiguity between tenant and key")

	require.True(t, client.ValidTenant("acme_1.eu-west"))
	require.True(t, client.ValidTenant(strings.Repeat("a", 64)))
	for _, bad := range []string{"", strings.Repeat("a", 65), "acme corp", "ac/me", "caf\u00e9", "a:b"} {
		require.False(t, client.ValidTenant(bad), "%q", bad)
	}
	require.True(t, client.ValidClientKey("!~order#1/2?x=y"))
	require.True(t, client.ValidClientKey(strings.Repeat("k", 255)))
	for _, bad := range []string{"", strings.Repeat("k", 256), "a b", "tab\t", "caf\u00e9", "nul\x00", "del\x7f"} {
		require.False(t, client.ValidClientKey(bad), "%q", bad)
	}
}

// TestClient_Tenant: a client for a tenant sends the tenant's own keys
// under their scoped keys, with the tenant's headers, to real workers: two
// tenants with one key make two charges; each reads its own outcome by its
// own key, and a replay by the same tenant charges nothing more.
func TestClient_Tenant(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, nil)
	ctx := testCtx(t)
	const key = "order-1001"
	for tenant, amount := range map[string]int64{"acme": 100, "globex": 200} {
		cfg := env.ClientConfig()
		cfg.Tenant = tenant
		c := env.MustClient(t, cfg)
		res, err := c.Charge(ctx, key, charge(amount))
		require.NoError(t, err)
		scoped := client.ScopedKey(tenant, key)
		require.Equal(t, scoped, res.Result.Key, "the answer names the operation's key")
		require.Equal(t, amount, res.Data.Amount)
		again, err := c.Charge(ctx, key, charge(amount))
		require.NoError(t, err)
		require.Equal(t, res.Data.ChargeID, again.Data.ChargeID)
		stored, err := c.Status(ctx, key)
		if err == nil {
			require.Equal(t, scoped, stored.Key)
		} else {
			require.ErrorIs(t, err, client.ErrNotFound) // stored a moment after the answer
		}
		require.Equal(t, int64(1), env.SimCalls(t, scoped))
		_, err = c.Charge(ctx, "bad key", charge(amount))
		require.ErrorIs(t, err, client.ErrInvalidKey)
	}
	_, charges := env.SimLedger(t)
	require.Len(t, charges, 2, "two tenants, one key, two charges")

	// Without Config.Tenant, SendFor scopes per call.
	c := env.MustClient(t, nil)
	reply, err := c.SendFor(ctx, "acme", key, charge(100))
	require.NoError(t, err)
	require.True(t, reply.Result.Replayed || reply.Duplicate, "acme's charge again: a replay")
	_, err = c.SendFor(ctx, "no tenant", key, charge(100))
	require.ErrorIs(t, err, client.ErrInvalidTenant)
	_, err = client.New(env.NC, &client.Config{Tenant: "a b"})
	require.ErrorContains(t, err, "Config.Tenant")
}

// TestClient_TenantHeaders: the command a tenant's client publishes has
// the scoped key as Nats-Msg-Id and the two headers of the contract.
func TestClient_TenantHeaders(t *testing.T) {
	t.Parallel()
	env := loadtest.Setup(t, &loadtest.Options{Workers: -1})
	ctx := testCtx(t)
	cfg := env.ClientConfig()
	cfg.Tenant = "acme"
	cfg.ResultTimeout = 200 * time.Millisecond // no worker: no answer
	c := env.MustClient(t, cfg)
	reply, err := c.Charge(ctx, "order-7", charge(5))
	require.ErrorIs(t, err, client.ErrResultTimeout)
	s, err := env.JS.Stream(ctx, env.Config.Topology.CommandStream)
	require.NoError(t, err)
	m, err := s.GetMsg(ctx, reply.Sequence)
	require.NoError(t, err)
	require.Equal(t, client.ScopedKey("acme", "order-7"), m.Header.Get(jetstream.MsgIDHeader))
	require.Equal(t, "acme", m.Header.Get(client.HeaderTenant))
	require.Equal(t, "order-7", m.Header.Get(client.HeaderClientKey))
	require.Equal(t, env.Config.Topology.Subjects.CommandFor(messages.KindPaymentCharge), m.Subject)
}

func TestScopeCommand(t *testing.T) {
	t.Parallel()
	got, err := client.ScopeCommand("acme", messages.RefundRequest{ChargeKey: "order-1", Amount: 5})
	require.NoError(t, err)
	require.Equal(t, messages.RefundRequest{ChargeKey: client.ScopedKey("acme", "order-1"), Amount: 5}, got)
	got, err = client.ScopeCommand("acme", &messages.RefundRequest{ChargeKey: "order-1", Amount: 5})
	require.NoError(t, err)
	require.Equal(t, messages.RefundRequest{ChargeKey: client.ScopedKey("acme", "order-1"), Amount: 5}, got)
	_, err = client.ScopeCommand("acme", messages.RefundRequest{ChargeKey: "a b", Amount: 5})
	require.ErrorIs(t, err, client.ErrInvalidPayload)
	c := charge(1)
	got, err = client.ScopeCommand("acme", c)
	require.NoError(t, err)
	require.Equal(t, c, got, "a charge names no key")
}
