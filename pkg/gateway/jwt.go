package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults of JWTConfig.
const (
	// TenantClaimDefault is GATEWAY_TENANT_CLAIM's default.
	TenantClaimDefault = "tenant_id"
	// RoleClaimDefault is JWTConfig.RoleClaim's default.
	RoleClaimDefault = "roles"
	// JWTLeewayDefault is the clock skew allowed on exp and nbf (contract:
	// 30s).
	JWTLeewayDefault = 30 * time.Second
	// JWKSRefreshDefault is how often the JWKS is fetched again anyway.
	JWKSRefreshDefault = time.Hour
	// JWKSUnknownKIDRefreshDefault is the shortest time between two fetches
	// caused by tokens with an unknown kid: a flood of made-up kids costs
	// the identity provider one request per interval, not one per token.
	JWKSUnknownKIDRefreshDefault = 10 * time.Second
)

// jwtMethods are the only signature algorithms accepted. "none" and the
// HMAC family are refused: with HS256, a token "signed" with the public
// RSA key (which anyone can fetch from the JWKS) would verify if the key
// were used as an HMAC secret (algorithm confusion).
var jwtMethods = []string{"RS256", "ES256"}

// JWTConfig configures JWT authentication (GATEWAY_AUTH=jwt).
type JWTConfig struct {
	// JWKSURL is where the identity provider publishes its signing keys
	// (GATEWAY_JWKS_URL). Required.
	JWKSURL string
	// Issuer must equal the token's iss (GATEWAY_JWT_ISSUER). Required.
	Issuer string
	// Audience must be in the token's aud (GATEWAY_JWT_AUDIENCE). Required.
	Audience string
	// TenantClaim names the claim that holds the tenant id
	// (GATEWAY_TENANT_CLAIM). Defaults to "tenant_id".
	TenantClaim string
	// RoleClaim names the claim that holds the caller's roles
	// (Caller.Roles): a string, or an array of strings (other members are
	// ignored). A token without it has no role. The gateway gives a role
	// no power; the operators' console admits RoleOperator. Defaults to
	// "roles".
	RoleClaim string
	// Leeway is the clock skew allowed on exp and nbf. Defaults to 30s.
	Leeway time.Duration
	// Refresh is how often the JWKS is fetched again. Defaults to 1h.
	Refresh time.Duration
	// UnknownKIDRefresh is the shortest time between two fetches of the
	// JWKS caused by a token whose kid is not in the cached set (a key the
	// provider has just rotated in). Defaults to 10s.
	UnknownKIDRefresh time.Duration
	// HTTPClient fetches the JWKS. Defaults to a client with a 10s timeout.
	HTTPClient *http.Client
	// Logger receives a line per failed JWKS fetch. Defaults to none.
	Logger *slog.Logger
}

// JWT authenticates callers by a JSON Web Token (RFC 7519) in
// Authorization: Bearer, signed RS256 or ES256 by a key of the JWKS,
// with the configured issuer and audience, exp required and nbf enforced
// within the leeway; its tenant is the TenantClaim claim.
//
// Why golang-jwt/jwt/v5 with MicahParks/keyfunc/v3: jwt/v5 is the Go
// ecosystem's most used JWT library, and its parser takes the whole
// policy as options (WithValidMethods refuses none and HMAC before any key
// is looked up; issuer, audience, leeway, exp required); keyfunc/v3 is
// the JWKS fetcher its documentation points to, small (one dependency,
// jwkset), and refreshes the set on an unknown kid behind a rate limiter.
// lestrrat-go/jwx/v3 would do too but brings a much larger API and
// dependency tree for the one thing needed here; coreos/go-oidc/v3 wants
// an OIDC discovery document, which a plain JWKS URL does not have.
type JWT struct {
	cfg    JWTConfig
	keys   keyfunc.Keyfunc
	parser *jwt.Parser
}

// NewJWT returns a JWT authenticator. It starts a goroutine that refreshes
// the JWKS until ctx is done; a JWKS that cannot be fetched at start is
// logged and fetched again on the first token, not an error, so that the
// gateway starts while the identity provider is briefly away. Its errors
// name the missing setting's environment variable.
func NewJWT(ctx context.Context, cfg *JWTConfig) (*JWT, error) {
	c := *cfg
	switch {
	case c.JWKSURL == "":
		return nil, errors.New("gateway: JWT authentication needs GATEWAY_JWKS_URL (JWTConfig.JWKSURL)")
	case c.Issuer == "":
		return nil, errors.New("gateway: JWT authentication needs GATEWAY_JWT_ISSUER (JWTConfig.Issuer)")
	case c.Audience == "":
		return nil, errors.New("gateway: JWT authentication needs GATEWAY_JWT_AUDIENCE (JWTConfig.Audience)")
	}
	if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("gateway: GATEWAY_JWKS_URL %q: want an http(s) URL", truncate(c.JWKSURL, 200))
	}
	c.TenantClaim = cmp.Or(c.TenantClaim, TenantClaimDefault)
	c.RoleClaim = cmp.Or(c.RoleClaim, RoleClaimDefault)
	c.Leeway = cmp.Or(c.Leeway, JWTLeewayDefault)
	c.Refresh = cmp.Or(c.Refresh, JWKSRefreshDefault)
	c.UnknownKIDRefresh = cmp.Or(c.UnknownKIDRefresh, JWKSUnknownKIDRefreshDefault)
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	log := c.Logger
	keys, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.JWKSURL}, keyfunc.Override{
		Client:          c.HTTPClient,
		RefreshInterval: c.Refresh,
		// One token of refresh per interval, and no waiting for the next
		// one: a token with an unknown kid beyond that is refused. The
		// wait is bounded well above a millisecond nevertheless: the
		// limiter gives up at once on a context already past its deadline,
		// and on a busy machine 1ms had passed before it looked, refusing
		// a rotated key it had a refresh for (TestGateway_JWT/UnknownKID
		// failed so under make test's load).
		RefreshUnknownKID: rate.NewLimiter(rate.Every(c.UnknownKIDRefresh), 1),
		RateLimitWaitMax:  250 * time.Millisecond,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				log.WarnContext(ctx, "gateway: fetch the JWKS", "url", u, attrError, err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: GATEWAY_JWKS_URL: %w", err)
	}
	return &JWT{cfg: c, keys: keys, parser: jwt.NewParser(
		jwt.WithValidMethods(jwtMethods),
		jwt.WithIssuer(c.Issuer),
		jwt.WithAudience(c.Audience),
		jwt.WithLeeway(c.Leeway),
		jwt.WithExpirationRequired(),
	)}, nil
}

// Authenticate implements Authenticator. Credentials that are not shaped
// like a JWT are errNotMine (Chain asks the API keys).
func (j *JWT) Authenticate(r *http.Request) (*Caller, error) {
	cred, err := bearer(r)
	if err != nil {
		return nil, err
	}
	if !looksLikeJWT(cred) {
		return nil, errNotMine
	}
	claims := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(cred, claims, j.keys.KeyfuncCtx(r.Context())); err != nil {
		return nil, unauthenticated(reasonToken, tokenProblem(err), err)
	}
	tenant, _ := claims[j.cfg.TenantClaim].(string) // not a string: no tenant, below
	if tenant == "" || !validTenant(tenant) {
		return nil, &authError{kind: ErrForbidden, reason: reasonNoTenant,
			detail: fmt.Sprintf("the token names no tenant: its %q claim must be a tenant id, 1-64 characters of [A-Za-z0-9_.-]", j.cfg.TenantClaim)}
	}
	sub, _ := claims["sub"].(string)
	return &Caller{Tenant: tenant, Method: MethodJWT, Roles: rolesOf(claims[j.cfg.RoleClaim]), Subject: sub,
		scoped: true, label: MethodJWT}, nil
}

// rolesOf reads a role claim: one string, or an array whose strings are
// roles (anything else in it is ignored).
func rolesOf(claim any) []string {
	switch v := claim.(type) {
	case string:
		if v != "" {
			return []string{v}
		}
	case []any:
		var roles []string
		for _, r := range v {
			if s, ok := r.(string); ok && s != "" {
				roles = append(roles, s)
			}
		}
		return roles
	}
	return nil
}

// tokenProblem says what was wrong with a token in words a caller can act
// on, without the library's internals.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the token is from another issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token is for another audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token lacks a required claim (exp)"
	default:
		return "the token's signature cannot be verified (RS256 or ES256 with a key of the identity provider)"
	}
}
