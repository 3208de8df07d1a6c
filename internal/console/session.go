package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/idempay/idempay/pkg/gateway"
)

// cookieName is the session cookie's name.
const cookieName = "idempay_console"

// session is who is logged in, until when. It travels in the cookie,
// signed with the console's key (HMAC-SHA256): the console keeps no
// session store, and a restart (a new key) logs everyone out.
type session struct {
	// Who names the operator for the audit log: the tenant and how it
	// logged in ("ops (api key)", "ops/alice (jwt)").
	Who string `json:"who"`
	// Exp is when the session ends (Unix seconds).
	Exp int64 `json:"exp"`
	// Nonce makes each login's session (and CSRF token) its own.
	Nonce string `json:"nonce"`
}

// sessions signs and checks session cookies and CSRF tokens.
type sessions struct {
	key    []byte
	ttl    time.Duration
	secure bool
}

func newSessions(ttl time.Duration, secure bool) (*sessions, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return &sessions{key: key, ttl: ttl, secure: secure}, nil
}

func (s *sessions) mac(parts ...string) []byte {
	h := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

var b64 = base64.RawURLEncoding

// issue sets the cookie of a new session for caller, ending at the
// session TTL or the token's expiry, whichever comes first.
func (s *sessions) issue(w http.ResponseWriter, caller *gateway.Caller, tokenExp time.Time, now time.Time) {
	exp := now.Add(s.ttl)
	if !tokenExp.IsZero() && tokenExp.Before(exp) {
		exp = tokenExp
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	who := caller.Tenant
	if caller.Subject != "" {
		who += "/" + caller.Subject
	}
	method := caller.Method
	if method == gateway.MethodAPIKeys {
		method = "api key"
	}
	sess := session{Who: who + " (" + method + ")", Exp: exp.Unix(), Nonce: b64.EncodeToString(nonce)}
	payload, _ := json.Marshal(sess) //nolint:errchkjson // strings and an int
	value := b64.EncodeToString(payload) + "." + b64.EncodeToString(s.mac("session", string(payload)))
	// Secure is the operator's setting (CONSOLE_SECURE_COOKIE): a console
	// reached over plain HTTP on the operators' network must still log in.
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: "/", Expires: exp, HttpOnly: true, //nolint:gosec // G124: see above
		Secure: s.secure, SameSite: http.SameSiteStrictMode})
}

// errNoSession: no valid, unexpired session cookie.
var errNoSession = errors.New("console: not logged in")

// read returns the request's session.
func (s *sessions) read(r *http.Request, now time.Time) (*session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, errNoSession
	}
	p, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return nil, errNoSession
	}
	payload, err1 := b64.DecodeString(p)
	mac, err2 := b64.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac("session", string(payload))) {
		return nil, errNoSession
	}
	var sess session
	if json.Unmarshal(payload, &sess) != nil || now.Unix() >= sess.Exp {
		return nil, errNoSession
	}
	return &sess, nil
}

// clear ends the browser's session.
func (s *sessions) clear(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, //nolint:gosec // G124: as in issue
		Secure: s.secure, SameSite: http.SameSiteStrictMode})
}

// csrf returns the session's CSRF token, which every form posts.
func (s *sessions) csrf(sess *session) string {
	return b64.EncodeToString(s.mac("csrf", sess.Nonce, sess.Who))
}

// checkCSRF reports whether r's csrf form value is the session's token.
func (s *sessions) checkCSRF(r *http.Request, sess *session) bool {
	return subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf(sess))) == 1
}

// tokenExpiry reads a JWT's exp claim without verifying it (the
// authenticator has): a session never outlives its token.
func tokenExpiry(cred string) time.Time {
	parts := strings.Split(cred, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(c.Exp), 0)
}
