package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/idempay/idempay/pkg/client"
)

// Authentication methods, as GATEWAY_AUTH names them, and the Caller.Method
// of each.
const (
	MethodAPIKeys = "apikeys"
	MethodJWT     = "jwt"
	MethodNone    = "none"
)

// TenantPublic is the one tenant of GATEWAY_AUTH=none.
const TenantPublic = "public"

// RoleOperator is the role of the people who run idempay: the operators'
// console (cmd/console) admits only callers with it. An API-key line gives
// it with role=operator; a JWT with its role claim (JWTConfig.RoleClaim).
// The gateway itself gives a role no power: an operator's line is a
// tenant like any other there, so keep operators' keys in a file of their
// own (docs/console.md).
const RoleOperator = "operator"

// Caller is who sent a request: its tenant, how it proved it, and the
// tenant's own limits.
type Caller struct {
	// Tenant is the tenant id: 1-64 characters of [A-Za-z0-9_.-].
	Tenant string
	// Method is MethodAPIKeys, MethodJWT or MethodNone.
	Method string
	// Limits are the tenant's own; a zero field takes Config.DefaultLimits'.
	Limits Limits
	// Roles are the caller's roles: an API-key line's role= (one), or the
	// strings of a JWT's role claim. Empty for most callers; RoleOperator
	// is the only one idempay reads, in the operators' console.
	Roles []string
	// Subject is who the credentials name beyond the tenant: a JWT's sub
	// claim; empty for an API key (its line names only the tenant). For
	// audit logs.
	Subject string

	// scoped is false only for MethodNone: keys are then canonical UUIDs,
	// used as they are (contract v1.1).
	scoped bool
	// label is the tenant's value of the metrics' tenant label: its id for
	// the tenants of the API-key file, one bucket for all JWT tenants
	// (their number is not bounded by anything the operator wrote).
	label string
}

// HasRole reports whether the caller has role.
func (c *Caller) HasRole(role string) bool { return c != nil && slices.Contains(c.Roles, role) }

// Authenticator tells who sent a request. It returns an error wrapping
// ErrUnauthenticated (401) or ErrForbidden (403), or errNotMine when the
// request's credentials are of another method (Chain tries the next).
type Authenticator interface {
	Authenticate(r *http.Request) (*Caller, error)
}

// Errors of Authenticate.
var (
	// ErrUnauthenticated: missing, malformed, unknown, expired or badly
	// signed credentials (401 unauthenticated).
	ErrUnauthenticated = errors.New("gateway: unauthenticated")
	// ErrForbidden: valid credentials that name no tenant (403 forbidden).
	ErrForbidden = errors.New("gateway: forbidden")

	// errNotMine: the credentials are not of this authenticator's method.
	errNotMine = errors.New("gateway: credentials of another method")
)

// authError is an authentication failure: reason is its metrics label,
// detail what the caller is told, cause what the log says (never a
// secret).
type authError struct {
	kind   error // ErrUnauthenticated or ErrForbidden
	reason string
	detail string
	cause  error
}

func (e *authError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%v: %s: %v", e.kind, e.detail, e.cause)
	}
	return fmt.Sprintf("%v: %s", e.kind, e.detail)
}

func (e *authError) Unwrap() error { return e.kind }

func unauthenticated(reason, detail string, cause error) error {
	return &authError{kind: ErrUnauthenticated, reason: reason, detail: detail, cause: cause}
}

// Reasons of authentication failures (idempay_gateway_auth_failures_total).
const (
	reasonMissing   = "missing"
	reasonMalformed = "malformed"
	reasonUnknown   = "unknown_credentials"
	reasonToken     = "invalid_token"
	reasonNoTenant  = "no_tenant"
)

// bearer returns the request's bearer credentials: exactly one
// Authorization header, "Bearer <credentials>" (RFC 6750).
func bearer(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", unauthenticated(reasonMissing, "send Authorization: Bearer <API key or token>", nil)
	case 1:
	default:
		return "", unauthenticated(reasonMalformed, "send exactly one Authorization header", nil)
	}
	scheme, cred, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	cred = strings.TrimSpace(cred)
	if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
		return "", unauthenticated(reasonMalformed, "the Authorization header must be Bearer <API key or token>", nil)
	}
	for i := range len(cred) {
		if cred[i] < 0x21 || cred[i] > 0x7e {
			return "", unauthenticated(reasonMalformed, "the bearer credentials must be visible ASCII", nil)
		}
	}
	return cred, nil
}

// NoAuth serves every request as tenant public with the contract's v1.1
// behaviour: keys are canonical UUIDs, used unscoped (GATEWAY_AUTH=none).
// Only for trying the gateway on one's own machine: whoever reaches it
// reads and replays every key's outcome.
func NoAuth() Authenticator { return noAuth{} }

type noAuth struct{}

func (noAuth) Authenticate(*http.Request) (*Caller, error) {
	return &Caller{Tenant: TenantPublic, Method: MethodNone, label: TenantPublic}, nil
}

// Chain tries each authenticator in turn until one recognizes the
// request's credentials (GATEWAY_AUTH=apikeys,jwt).
func Chain(auths ...Authenticator) Authenticator { return chain(auths) }

type chain []Authenticator

func (c chain) Authenticate(r *http.Request) (*Caller, error) {
	for _, a := range c {
		caller, err := a.Authenticate(r)
		if errors.Is(err, errNotMine) {
			continue
		}
		return caller, err
	}
	if _, err := bearer(r); err != nil {
		return nil, err
	}
	return nil, unauthenticated(reasonUnknown, "unknown API key or token", nil)
}

// validTenant is the contract's tenant id (client.ValidTenant).
func validTenant(t string) bool { return client.ValidTenant(t) }
