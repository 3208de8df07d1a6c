package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus metrics. Their HTTP labels are
// those of promhttp's instrumentation, which Prometheus users query by:
// code (the status code, "201") and method (lower case, "post"; a method
// outside HTTP's usual ones is "other", so the label stays bounded). The
// tenant label is bounded: the tenants of the API-key file by id, every JWT tenant in one
// "jwt" bucket, "public" without authentication, and "none" for requests
// that named no tenant (refused credentials, static files).
type metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	tenantRequests *prometheus.CounterVec
	authFailures   *prometheus.CounterVec
	rateLimited    *prometheus.CounterVec
}

// tenantNone is the tenant label of a request without a tenant.
const tenantNone = "none"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_gateway_requests_total",
			Help: "HTTP requests answered, by route (the path template), method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "idempay_gateway_request_duration_seconds",
			Help: "Time from a request's arrival to its response, by route; a POST waits for the command's answer (HTTP_WAIT at most).",
			// From a replay (about a millisecond) to HTTP_WAIT (10s).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"route", "method"}),
		tenantRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_gateway_tenant_requests_total",
			Help: "/v1/ requests answered, by tenant (an API-key tenant's id; jwt for every JWT tenant; public without authentication; none when no tenant was established) and status code.",
		}, []string{"tenant", "code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_gateway_auth_failures_total",
			Help: "Requests refused with 401 or 403, by reason: missing, malformed, unknown_credentials, invalid_token, no_tenant.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idempay_gateway_rate_limited_total",
			Help: "Requests refused with 429, by tenant (as in idempay_gateway_tenant_requests_total) and limit: rate or concurrency.",
		}, []string{"tenant", "limit"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.tenantRequests, m.authFailures, m.rateLimited} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe counts and times an answered request. The route label is the
// matched pattern's path (bounded: one per route), "preflight" for a CORS
// preflight and "unmatched" for everything else.
func (m *metrics) observe(route, method string, status int, caller *Caller, elapsed time.Duration) {
	code := strconv.Itoa(status)
	method = methodLabel(method)
	m.requests.WithLabelValues(route, method, code).Inc()
	m.duration.WithLabelValues(route, method).Observe(elapsed.Seconds())
	if strings.HasPrefix(route, "/v1/") {
		tenant := tenantNone
		if caller != nil {
			tenant = caller.label
		}
		m.tenantRequests.WithLabelValues(tenant, code).Inc()
	}
}

// methodLabel is a request's method as promhttp labels it: lower case,
// and "other" for a method outside the usual ones (any token a client
// makes up would otherwise be a series of its own).
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return strings.ToLower(method)
	}
	return "other"
}

func routeLabel(r *http.Request) string {
	path := patternPath(r.Pattern) // ServeMux set it on r
	switch path {
	case "":
		if r.Method == http.MethodOptions {
			return "preflight"
		}
		return "unmatched"
	case "/":
		return "unmatched"
	case "/{$}":
		return "/"
	}
	return path
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
