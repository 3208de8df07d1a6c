package gateway

import (
	"net/http"
	"slices"
)

// CORS settings: what a browser page on an allowed origin may send and
// read. Idempotency-Key must be allowed in, and Location,
// Idempotent-Replayed and Retry-After let out, or a web client cannot
// retry safely.
const (
	corsAllowMethods  = "GET, POST, OPTIONS"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key"
	corsExposeHeaders = "Location, Idempotent-Replayed, Retry-After, Request-Id"
	corsMaxAge        = "600"
)

// cors answers preflights and marks the responses of allowed origins.
// Requests without an Origin header, and same-origin pages like the
// checkout page, pass through untouched.
func (g *Gateway) cors(next http.Handler) http.Handler {
	origins := g.cfg.AllowedOrigins
	anyOrigin := slices.Contains(origins, "*")
	allowed := func(o string) bool { return anyOrigin || slices.Contains(origins, o) }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !allowed(origin) {
			if preflight {
				writeProblem(w, problemOf(CodeOriginNotAllowed), "", "origin "+truncate(origin, 100)+" is not in the gateway's allowed origins (--cors-origins)", 0)
				return
			}
			next.ServeHTTP(w, r) // the browser withholds the response
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}
