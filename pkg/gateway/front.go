package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Log attribute keys of the audit line and of the error lines.
const (
	attrRequestID = "request_id"
	attrTenant    = "tenant"
	attrAuth      = "auth"
	attrStatus    = "status"
	attrRoute     = "route"
	attrMethod    = "method"
	attrDuration  = "duration"
	attrRemote    = "remote"
	attrReason    = "reason"
)

// reqInfo is what the layers of one request learn about it, for its
// audit line and its metrics. It lives in the request's context.
type reqInfo struct {
	id     string
	caller *Caller
	key    string // the caller's own key, once read
	err    error  // an internal error behind the answer: logged, never sent
}

type infoKey struct{}

// infoOf returns the request's reqInfo (a fresh one outside front).
func infoOf(ctx context.Context) *reqInfo {
	if info, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return info
	}
	return &reqInfo{}
}

// requestID returns the id of the request ctx belongs to, for log lines.
func requestID(ctx context.Context) string { return infoOf(ctx).id }

// front gives every request an id (the Request-Id header), then writes its
// audit line and counts it once it is answered.
func (g *Gateway) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{id: uuid.Must(uuid.NewV7()).String()}
		w.Header().Set(HeaderRequestID, info.id)
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		elapsed := time.Since(start)
		route := routeLabel(r)
		g.metrics.observe(route, r.Method, sw.code(), info.caller, elapsed)
		g.audit(r, route, sw.code(), info, elapsed)
	})
}

// audit writes the request's one log line: who (tenant and method, never
// a credential), what (route and the caller's key), the answer, and the
// internal error behind it, if any. /v1/ requests are logged at Info,
// the rest (health checks, static files) at Debug.
func (g *Gateway) audit(r *http.Request, route string, status int, info *reqInfo, elapsed time.Duration) {
	level := slog.LevelDebug
	if strings.HasPrefix(route, "/v1/") {
		level = slog.LevelInfo
	}
	if info.err != nil && status >= http.StatusInternalServerError {
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !g.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs, slog.String(attrRequestID, info.id), slog.String(attrMethod, r.Method), slog.String(attrRoute, route),
		slog.Int(attrStatus, status), slog.Duration(attrDuration, elapsed), slog.String(attrRemote, r.RemoteAddr))
	if info.caller != nil {
		attrs = append(attrs, slog.String(attrTenant, info.caller.Tenant), slog.String(attrAuth, info.caller.Method))
	}
	if info.key != "" {
		attrs = append(attrs, slog.String(attrKey, info.key))
	}
	if info.err != nil {
		attrs = append(attrs, slog.String(attrError, info.err.Error()))
	}
	g.log.LogAttrs(ctx, level, "request", attrs...)
}

// v1 guards a /v1/ handler: the caller must authenticate, stay within its
// tenant's limits, and find the gateway ready; only then does h run, with
// the Caller in the request's context.
func (g *Gateway) v1(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		info := infoOf(r.Context())
		caller, err := g.cfg.Auth.Authenticate(r)
		if errors.Is(err, errNotMine) { // one method alone, and credentials of another
			err = unauthenticated(reasonUnknown, "unknown API key or token", nil)
		}
		if err != nil {
			g.refuseAuth(w, r, err)
			return
		}
		info.caller = caller
		lim := caller.Limits.withDefaults(g.cfg.DefaultLimits)
		release, refused, wait := g.limits.acquire(caller.Tenant, lim, time.Now())
		if release == nil {
			g.metrics.rateLimited.WithLabelValues(caller.label, refused).Inc()
			detail := "too many requests per second for this tenant; send again after Retry-After seconds, with the same key"
			if refused == limitConcurrency {
				detail = "too many of this tenant's requests are under way at once; send again after Retry-After seconds, with the same key"
			}
			writeProblem(w, problemOf(CodeRateLimited), "", detail, wait)
			return
		}
		defer release()
		if err := g.ready.check(r.Context(), g.connected); err != nil {
			info.err = err
			writeProblem(w, problemOf(CodeServiceUnavailable), "",
				"the gateway cannot take requests right now; nothing was sent. Send the same request again after Retry-After seconds", retrySoon)
			return
		}
		h(w, r)
	}
}

// refuseAuth answers a failed authentication: 401 with the challenge, or
// 403.
func (g *Gateway) refuseAuth(w http.ResponseWriter, r *http.Request, err error) {
	info := infoOf(r.Context())
	info.err = err
	detail, reason := "the credentials were refused", reasonUnknown
	if ae, ok := errors.AsType[*authError](err); ok {
		detail, reason = ae.detail, ae.reason
	}
	g.metrics.authFailures.WithLabelValues(reason).Inc()
	if errors.Is(err, ErrForbidden) {
		writeProblem(w, problemOf(CodeForbidden), "", detail, 0)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="idempay"`)
	writeProblem(w, problemOf(CodeUnauthenticated), "", detail, 0)
}

// callerOf returns the request's Caller, set by v1.
func callerOf(r *http.Request) *Caller {
	if c := infoOf(r.Context()).caller; c != nil {
		return c
	}
	return &Caller{Tenant: TenantPublic, Method: MethodNone, label: TenantPublic}
}
