// Package telemetry owns the operational HTTP endpoints that the worker
// and the gateway serve on METRICS_ADDR: /metrics (Prometheus), /healthz
// (the process lives), /readyz (it can do its work now) and, when asked
// for, /debug/pprof/ (Go's profiler, for "where does the time go").
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry with the Go runtime and
// process collectors (go_goroutines, process_resident_memory_bytes, ...).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// BuildInfo is idempay_build_info{version,goversion}, always 1: which
// build each instance runs, for dashboards (a rollout in progress) and
// alerts (instances on different versions), the way Prometheus' own
// prometheus_build_info is used.
func BuildInfo(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "idempay_build_info",
		Help:        "Always 1; its labels name the program's version (git describe, stamped at build time) and the Go release it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// Register adds GET /metrics (from reg), /healthz and /readyz (from ready:
// nil error means ready; the error's text is the body of a 503 otherwise)
// to mux, for a program that serves them on its own listener, like the
// gateway. It leaves /debug/pprof/ out: that belongs on an operator's
// address (Serve), never on a public one.
func Register(mux *http.ServeMux, reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrors{log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, "not ready:", err)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
}

// Server serves the endpoints until Close.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Serve listens on addr and serves /metrics from reg and /readyz from ready
// (nil error: ready; the error's text is the body of a 503 otherwise), and,
// with withPprof, Go's profiler under /debug/pprof/: opt-in, since anyone
// who reaches the address can then take CPU profiles and read the
// program's internals. It returns once listening, so a port already taken
// is an error at start.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger, withPprof bool) (*Server, error) {
	mux := http.NewServeMux()
	Register(mux, reg, ready, log)
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("telemetry server stopped", "error", err)
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, waiting up to 5s for scrapes under way, even
// when ctx is already done (a worker closes it as it exits).
func (s *Server) Close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}

type slogErrors struct{ log *slog.Logger }

func (l slogErrors) Println(v ...any) { l.log.Error(fmt.Sprint(v...)) }
