package client

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/idempay/idempay/pkg/messages"
)

// Tenants (contract v1.2, "Callers and tenants").
//
// A service that publishes for one tenant (a merchant, an app) of the HTTP
// gateway takes that tenant's own idempotency keys, as the gateway does:
// any 1-255 visible ASCII characters. The operation's key, the one the
// workers, Redis and the payment provider see, is the scoped key
//
//	uuidv5(uuidv5(TenantNamespace, tenant), key)
//
// (RFC 9562 name-based SHA-1 UUIDs, names as UTF-8 bytes), so two tenants
// that use one key make two operations, and nothing downstream needs to
// know about tenants. The command also carries HeaderTenant and
// HeaderClientKey, for operators and logs; the workers do not read them.
const (
	// HeaderTenant names the tenant a command was sent for.
	HeaderTenant = messages.HeaderTenant
	// HeaderClientKey is the tenant's own idempotency key, before scoping.
	HeaderClientKey = "Idempay-Client-Key"

	// MaxClientKeyLen is the longest tenant key accepted, as at Stripe.
	MaxClientKeyLen = 255
	// MaxTenantLen is the longest tenant id.
	MaxTenantLen = 64
)

// TenantNamespace is the namespace UUID of tenant scopes, fixed by the
// contract: every client, in any language, derives the same scoped keys.
var TenantNamespace = uuid.MustParse("7fdf12f7-4367-4d36-9bfb-43870eb77919")

// ScopedKey returns the operation key of tenant's idempotency key: a
// canonical UUID, the same in every process and language for the same
// pair. It does not check its arguments; see ValidTenant and
// ValidClientKey.
func ScopedKey(tenant, key string) string {
	ns := uuid.NewSHA1(TenantNamespace, []byte(tenant))
	return uuid.NewSHA1(ns, []byte(key)).String()
}

// ValidTenant reports whether tenant is a tenant id of the contract: 1-64
// characters of [A-Za-z0-9_.-].
func ValidTenant(tenant string) bool {
	if len(tenant) == 0 || len(tenant) > MaxTenantLen {
		return false
	}
	for i := range len(tenant) {
		switch c := tenant[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidClientKey reports whether key is a tenant's idempotency key of the
// contract: 1-255 visible ASCII characters (0x21-0x7E).
func ValidClientKey(key string) bool {
	if len(key) == 0 || len(key) > MaxClientKeyLen {
		return false
	}
	for i := range len(key) {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// scope is the tenant a command is sent for, and its own key.
type scope struct {
	tenant, key string
}

// setHeaders adds the scope's headers to h; a nil scope adds none.
func (s *scope) setHeaders(h nats.Header) {
	if s == nil {
		return
	}
	h.Set(HeaderTenant, s.tenant)
	h.Set(HeaderClientKey, s.key)
}

// checkScope returns the operation key of tenant's key, or why there is
// none: ErrInvalidTenant, or a *messages.RejectError with CodeInvalidKey.
func checkScope(tenant, key string) (string, error) {
	if !ValidTenant(tenant) {
		return "", fmt.Errorf("%w: %q", ErrInvalidTenant, truncate(tenant, 80))
	}
	if !ValidClientKey(key) {
		return "", &messages.RejectError{Code: messages.CodeInvalidKey,
			Message: fmt.Sprintf("%q is not a tenant's key: want 1-%d visible ASCII characters", truncate(key, 80), MaxClientKeyLen)}
	}
	return ScopedKey(tenant, key), nil
}

// SendFor sends cmd for tenant with the tenant's own key (1-255 visible
// ASCII characters) and waits for its answer, like Send with the scoped
// key ScopedKey(tenant, key) as the operation's key: the answer's Key is
// the scoped key. The command carries HeaderTenant and HeaderClientKey.
//
// The keys a command names are the tenant's own too, and scoped the same
// way: a payment.refund's charge_key is the key the tenant charged with,
// so that a tenant refunds its own charges and no other's (ScopeCommand).
//
// An invalid tenant returns ErrInvalidTenant, an invalid key a
// *messages.RejectError with CodeInvalidKey; neither publishes anything.
func (c *Client) SendFor(ctx context.Context, tenant, key string, cmd messages.Command) (*Reply, error) {
	scoped, err := checkScope(tenant, key)
	if err != nil {
		return nil, err
	}
	if cmd, err = ScopeCommand(tenant, cmd); err != nil {
		return nil, err
	}
	return c.sendKey(ctx, scoped, &scope{tenant: tenant, key: key}, cmd)
}

// SendScoped is SendFor for a cmd already scoped with ScopeCommand, for a
// caller that needs the scoped command itself (the HTTP gateway compares
// its fingerprint with the stored message's and outcome's).
func (c *Client) SendScoped(ctx context.Context, tenant, key string, cmd messages.Command) (*Reply, error) {
	scoped, err := checkScope(tenant, key)
	if err != nil {
		return nil, err
	}
	return c.sendKey(ctx, scoped, &scope{tenant: tenant, key: key}, cmd)
}

// ScopeCommand returns cmd with the keys it names scoped to tenant: a
// payment.refund's ChargeKey, the tenant's own key of the charge (1-255
// visible ASCII characters), becomes ScopedKey(tenant, ChargeKey). Other
// commands name no key and are returned as they are. A charge key that is
// not a tenant's key is a *messages.RejectError with CodeInvalidPayload.
func ScopeCommand(tenant string, cmd messages.Command) (messages.Command, error) {
	var r messages.RefundRequest
	switch c := cmd.(type) {
	case messages.RefundRequest:
		r = c
	case *messages.RefundRequest:
		r = *c
	default:
		return cmd, nil
	}
	if !ValidClientKey(r.ChargeKey) {
		return nil, &messages.RejectError{Code: messages.CodeInvalidPayload,
			Message: fmt.Sprintf("charge_key must be the key the charge was sent with: 1-%d visible ASCII characters", MaxClientKeyLen)}
	}
	r.ChargeKey = ScopedKey(tenant, r.ChargeKey)
	return r, nil
}

// StatusFor is Status for tenant's own key: the outcome stored under
// ScopedKey(tenant, key).
func (c *Client) StatusFor(ctx context.Context, tenant, key string) (*messages.Result, error) {
	scoped, err := checkScope(tenant, key)
	if err != nil {
		return nil, err
	}
	return c.status(ctx, scoped)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
