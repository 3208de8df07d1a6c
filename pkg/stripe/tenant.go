package stripe

import (
	"context"
	"errors"

	"github.com/idempay/idempay/pkg/processor"
)

type tenantKey struct{}

// WithTenant returns ctx naming the idempay tenant a call is made for: the
// provider sends it to Stripe as the tenant's connected account
// (Config.Accounts). The engine puts every command's Idempay-Tenant in the
// context of its calls itself (processor.TenantFrom, which the provider
// reads when WithTenant was not used). Every call for a key - the
// charge, its retries, its look-up and its void - must name the same
// tenant, because Stripe keeps one account's idempotency keys apart from
// another's: a void on the platform account does not stop a charge on a
// connected one.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantFrom returns the tenant WithTenant put in ctx.
func TenantFrom(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(tenantKey{}).(string)
	return t, ok
}

// errNoTenant refuses a call the provider cannot place on an account.
var errNoTenant = errors.New("stripe: Config.Accounts is set but the call names no tenant (stripe.WithTenant): refusing to guess which Stripe account holds the key")

// account returns the Stripe-Account for the call: "" for the platform.
func (p *Provider) account(ctx context.Context) (string, error) {
	if len(p.cfg.Accounts) == 0 {
		return "", nil
	}
	t, ok := TenantFrom(ctx)
	if !ok {
		// The engine hands every call the command's tenant (its
		// Idempay-Tenant header, kept in the key's record for the
		// resolver).
		t, ok = processor.TenantFrom(ctx)
	}
	if !ok {
		return "", errNoTenant
	}
	if acct, ok := p.cfg.Accounts[t]; ok {
		return acct, nil
	}
	return "", nil
}
