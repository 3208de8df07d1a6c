package gateway

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/idempay/idempay/pkg/client"
)

// jwks is a test identity provider: a real HTTP server publishing a JWK
// Set that the test can change, counting the fetches.
type jwks struct {
	srv     *httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []map[string]string
}

func newJWKS(t *testing.T) *jwks {
	t.Helper()
	j := &jwks{}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		body, err := json.Marshal(map[string]any{"keys": j.keys})
		j.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// publish adds a public key to the set under kid.
func (j *jwks) publish(kid string, key crypto.PublicKey) {
	var jwk map[string]string
	switch k := key.(type) {
	case *rsa.PublicKey:
		jwk = map[string]string{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		raw, err := k.Bytes() // 0x04 || X || Y, each 32 bytes for P-256
		if err != nil {
			panic(err)
		}
		jwk = map[string]string{"kty": "EC", "alg": "ES256", "use": "sig", "kid": kid, "crv": "P-256",
			"x": b64(raw[1:33]), "y": b64(raw[33:65])}
	}
	j.mu.Lock()
	j.keys = append(j.keys, jwk)
	j.mu.Unlock()
}

const (
	testIssuer   = "https://id.example.test/"
	testAudience = "idempay-gateway"
)

// claims are a valid token's claims for tenant, before a test spoils them.
func claims(tenant string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "svc", "tenant_id": tenant,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(5 * time.Minute).Unix()}
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, c jwt.MapClaims, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

// TestGateway_JWT: tokens signed RS256 or ES256 by a key of the JWKS, for
// the issuer and audience, are a tenant's credentials (alone or beside API
// keys); an expired token, one not valid yet, for another audience or
// issuer, signed by another key, alg none, or HS256 "signed" with the RSA
// public key (algorithm confusion) is 401; a valid token without the
// tenant claim is 403; a token whose kid the cached set lacks makes the
// gateway fetch the JWKS again, at most once per interval.
//
//nolint:tparallel // the subtests run in turn: they count the JWKS fetches and the metrics
func TestGateway_JWT(t *testing.T) {
	t.Parallel()
	idp := newJWKS(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	idp.publish("rsa-1", &rsaKey.PublicKey)
	idp.publish("ec-1", &ecKey.PublicKey)

	j, err := NewJWT(t.Context(), &JWTConfig{JWKSURL: idp.srv.URL, Issuer: testIssuer, Audience: testAudience, UnknownKIDRefresh: time.Hour})
	require.NoError(t, err)
	ts := apiKeyFile(t, map[string]string{"acme": ""})
	b := setup(t, nil, &Config{Auth: Chain(ts.keys, j)})
	fetchedAtStart := idp.fetches.Load()
	require.Positive(t, fetchedAtStart, "the set is fetched at start")

	pay := func(token, key string) *response {
		return do(t, http.MethodPost, b.srv.URL+"/v1/payments", mustJSON(chargeBody("acct_jwt", 700)),
			"Authorization", "Bearer "+token, "Content-Type", "application/json", HeaderIdempotencyKey, key)
	}

	t.Run("Valid", func(t *testing.T) {
		for name, token := range map[string]string{
			"RS256": sign(t, jwt.SigningMethodRS256, "rsa-1", claims("globex"), rsaKey),
			"ES256": sign(t, jwt.SigningMethodES256, "ec-1", claims("globex"), ecKey),
			"ExpiredInLeeway": sign(t, jwt.SigningMethodRS256, "rsa-1", func() jwt.MapClaims {
				c := claims("globex")
				c["exp"] = time.Now().Add(-10 * time.Second).Unix()
				return c
			}(), rsaKey),
		} {
			key := "jwt-" + name
			r := pay(token, key)
			require.Equal(t, http.StatusCreated, r.status, "%s: %s", name, r.body)
			require.Equal(t, key, r.answer(t).Key)
			require.Equal(t, int64(1), b.env.SimCalls(t, client.ScopedKey("globex", key)), "the tenant of the claim scopes the key")
		}
		// The API key still works beside the tokens.
		require.Equal(t, http.StatusCreated, ts.post(t, "acme", b.srv.URL+"/v1/payments", "apikey-1", chargeBody("acct_acme", 1)).status)
	})

	// First, while no token has asked for a refresh: the refresh on an
	// unknown kid is rate-limited, and a refused token without a kid may
	// spend the one the limiter allows.
	t.Run("UnknownKID", func(t *testing.T) {
		rotated, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		idp.publish("rsa-2", &rotated.PublicKey) // the provider rotates a key in
		before := idp.fetches.Load()
		r := pay(sign(t, jwt.SigningMethodRS256, "rsa-2", claims("globex"), rotated), "rotated-1")
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		require.Equal(t, before+1, idp.fetches.Load(), "the unknown kid made the gateway fetch the set again")

		// Another unknown kid right after: the refresh is rate-limited, so
		// it is refused without a fetch.
		made, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		r = pay(sign(t, jwt.SigningMethodRS256, "made-up", claims("globex"), made), "made-up-1")
		require.Equal(t, http.StatusUnauthorized, r.status, "%s", r.body)
		require.Equal(t, before+1, idp.fetches.Load(), "no second fetch within the interval")
	})
	t.Run("Refused", func(t *testing.T) {
		with := func(change func(jwt.MapClaims)) jwt.MapClaims {
			c := claims("globex")
			change(c)
			return c
		}
		pub, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
		require.NoError(t, err)
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
		for name, token := range map[string]string{
			"Expired":        sign(t, jwt.SigningMethodRS256, "rsa-1", with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), rsaKey),
			"NoExpiry":       sign(t, jwt.SigningMethodRS256, "rsa-1", with(func(c jwt.MapClaims) { delete(c, "exp") }), rsaKey),
			"NotYetValid":    sign(t, jwt.SigningMethodRS256, "rsa-1", with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(2 * time.Minute).Unix() }), rsaKey),
			"OtherAudience":  sign(t, jwt.SigningMethodRS256, "rsa-1", with(func(c jwt.MapClaims) { c["aud"] = "another-api" }), rsaKey),
			"OtherIssuer":    sign(t, jwt.SigningMethodRS256, "rsa-1", with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.test/" }), rsaKey),
			"OtherKey":       sign(t, jwt.SigningMethodRS256, "rsa-1", claims("globex"), otherKey),
			"OtherKeyNoKID":  sign(t, jwt.SigningMethodRS256, "", claims("globex"), otherKey),
			"AlgNone":        sign(t, jwt.SigningMethodNone, "rsa-1", claims("globex"), jwt.UnsafeAllowNoneSignatureType),
			"HS256PublicKey": sign(t, jwt.SigningMethodHS256, "rsa-1", claims("globex"), pubPEM),
			"HS256NoKID":     sign(t, jwt.SigningMethodHS256, "", claims("globex"), pubPEM),
			"ES256AsRS256":   sign(t, jwt.SigningMethodES256, "rsa-1", claims("globex"), ecKey),
			"Tampered": func() string {
				tok := sign(t, jwt.SigningMethodRS256, "rsa-1", claims("globex"), rsaKey)
				other := sign(t, jwt.SigningMethodRS256, "rsa-1", claims("acme"), rsaKey)
				return other[:len(other)-len(sigOf(other))] + sigOf(tok) // acme's claims, globex's signature
			}(),
			"Garbage": "eyJhbGciOiJSUzI1NiJ9.not-base64!.x",
		} {
			key := "refused-" + name
			r := pay(token, key)
			require.Equal(t, http.StatusUnauthorized, r.status, "%s: %s", name, r.body)
			require.Equal(t, `Bearer realm="idempay"`, r.header.Get("WWW-Authenticate"), name)
			require.Equal(t, CodeUnauthenticated, r.problem(t).Code, name)
			require.Zero(t, b.env.SimCalls(t, client.ScopedKey("globex", key)), name)
		}
		for name, c := range map[string]jwt.MapClaims{
			"NoTenantClaim":  with(func(c jwt.MapClaims) { delete(c, "tenant_id") }),
			"TenantNotText":  with(func(c jwt.MapClaims) { c["tenant_id"] = 42 }),
			"TenantNotValid": with(func(c jwt.MapClaims) { c["tenant_id"] = "acme corp" }),
		} {
			r := pay(sign(t, jwt.SigningMethodRS256, "rsa-1", c, rsaKey), "forbidden-"+name)
			require.Equal(t, http.StatusForbidden, r.status, "%s: %s", name, r.body)
			require.Equal(t, CodeForbidden, r.problem(t).Code)
		}
	})

	m := string(do(t, http.MethodGet, b.srv.URL+"/metrics", nil).body)
	require.Contains(t, m, `idempay_gateway_tenant_requests_total{code="201",tenant="jwt"}`, "every JWT tenant in one bucket")
	require.Contains(t, m, `idempay_gateway_tenant_requests_total{code="201",tenant="acme"}`)
	require.Contains(t, m, `idempay_gateway_auth_failures_total{reason="invalid_token"}`)
	require.Contains(t, m, `idempay_gateway_auth_failures_total{reason="no_tenant"} 3`)
}

// sigOf is a compact JWS's signature part.
func sigOf(tok string) string {
	for i := len(tok) - 1; i >= 0; i-- {
		if tok[i] == '.' {
			return tok[i+1:]
		}
	}
	return ""
}

// TestNewJWT_Config: a missing setting names its variable.
func TestNewJWT_Config(t *testing.T) {
	t.Parallel()
	for cfg, want := range map[JWTConfig]string{
		{Issuer: "i", Audience: "a"}:                              "GATEWAY_JWKS_URL",
		{JWKSURL: "https://id.example.test/jwks", Audience: "a"}:  "GATEWAY_JWT_ISSUER",
		{JWKSURL: "https://id.example.test/jwks", Issuer: "i"}:    "GATEWAY_JWT_AUDIENCE",
		{JWKSURL: "file:///etc/jwks", Issuer: "i", Audience: "a"}: "want an http(s) URL",
	} {
		_, err := NewJWT(t.Context(), &cfg)
		require.ErrorContains(t, err, want)
	}
}

// TestJWT_Roles: the role claim, a string or an array of strings, gives
// the caller its roles (the operators' console admits "operator"); a token
// without it has none; the sub claim names the caller.
func TestJWT_Roles(t *testing.T) {
	t.Parallel()
	idp := newJWKS(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	idp.publish("k1", &key.PublicKey)
	auth, err := NewJWT(t.Context(), &JWTConfig{JWKSURL: idp.srv.URL, Issuer: testIssuer, Audience: testAudience, RoleClaim: "idempay_roles"})
	require.NoError(t, err)
	callerOf := func(c jwt.MapClaims) *Caller {
		r, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+sign(t, jwt.SigningMethodRS256, "k1", c, key))
		caller, err := auth.Authenticate(r)
		require.NoError(t, err)
		return caller
	}
	for name, tc := range map[string]struct {
		claim any
		want  []string
	}{
		"String":   {"operator", []string{"operator"}},
		"Array":    {[]any{"viewer", 7, "operator"}, []string{"viewer", "operator"}},
		"Missing":  {nil, nil},
		"NotRoles": {map[string]any{"operator": true}, nil},
	} {
		c := claims("ops")
		if tc.claim != nil {
			c["idempay_roles"] = tc.claim
		}
		caller := callerOf(c)
		require.Equal(t, tc.want, caller.Roles, name)
		require.Equal(t, slices.Contains(tc.want, RoleOperator), caller.HasRole(RoleOperator), name)
		require.Equal(t, "svc", caller.Subject, name)
	}
	c := claims("ops")
	c["roles"] = "operator" // the default claim's name, not this authenticator's
	require.False(t, callerOf(c).HasRole(RoleOperator))
}
