package console

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/internal/telemetry"
	"github.com/idempay/idempay/pkg/gateway"
)

// Defaults of Config.
const (
	SessionTTLDefault = time.Hour
)

// Config configures the console.
type Config struct {
	// Admin does what the console's pages ask. Required; it needs Redis.
	Admin *admin.Admin
	// Auth tells who logs in: the gateway's API keys or JWTs (or a Chain
	// of both). Required.
	Auth gateway.Authenticator
	// Role is the role a caller must have to log in. Defaults to
	// gateway.RoleOperator.
	Role string
	// SessionTTL is how long a login lasts (a JWT's session ends with the
	// token, if sooner). Defaults to 1h.
	SessionTTL time.Duration
	// SecureCookie marks the session cookie Secure: set it when the
	// console is reached over HTTPS (a TLS proxy in front). Defaults to
	// false.
	SecureCookie bool
	// Scraper reads the workers' /metrics for the overview; nil shows no
	// live rates.
	Scraper *Scraper
	// Ready reports whether the console can do its work (/readyz).
	// Defaults to always ready.
	Ready func(context.Context) error
	// Registry is served on /metrics. Defaults to a new registry with
	// the runtime's collectors.
	Registry *prometheus.Registry
	// Logger receives a line per login and per change. Defaults to none.
	Logger *slog.Logger
}

// Server is the console's HTTP handler.
type Server struct {
	cfg      Config
	admin    *admin.Admin
	sessions *sessions
	pages    map[string]*template.Template
	log      *slog.Logger
	mux      *http.ServeMux
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New returns the console's server.
func New(cfg *Config) (*Server, error) {
	if cfg == nil || cfg.Admin == nil || cfg.Auth == nil {
		return nil, errors.New("console: Config.Admin and Config.Auth are required")
	}
	if !cfg.Admin.HasRedis() {
		return nil, errors.New("console: Config.Admin needs Redis (the records, locks, schedule and audit log live there)")
	}
	c := *cfg
	c.Role = cmp.Or(c.Role, gateway.RoleOperator)
	c.SessionTTL = cmp.Or(c.SessionTTL, SessionTTLDefault)
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
	if c.Registry == nil {
		c.Registry = telemetry.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Scraper == nil {
		c.Scraper = NewScraper(nil, time.Minute)
	}
	sess, err := newSessions(c.SessionTTL, c.SecureCookie)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: c, admin: c.Admin, sessions: sess, pages: pages, log: c.Logger, mux: http.NewServeMux()}
	s.routes()
	return s, nil
}

func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" || base == "filter" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/filter.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// Handler returns the console's routes, with its security headers.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Nothing but the console's own stylesheet loads; no script runs;
		// no other site frames it or receives its forms.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) routes() {
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	telemetry.Register(s.mux, s.cfg.Registry, s.cfg.Ready, s.log)
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.logout)
	s.mux.Handle("GET /{$}", s.auth(s.overview))
	s.mux.Handle("GET /deadletters", s.auth(s.deadLetters))
	s.mux.Handle("GET /deadletters/replay", s.auth(s.replayConfirm))
	s.mux.Handle("POST /deadletters/replay", s.auth(s.replay))
	s.mux.Handle("GET /deadletters/purge", s.auth(s.purgeConfirm))
	s.mux.Handle("POST /deadletters/purge", s.auth(s.purge))
	s.mux.Handle("GET /unknown", s.auth(s.unknown))
	s.mux.Handle("GET /keys", s.auth(s.keySearch))
	s.mux.Handle("GET /keys/{key}", s.auth(s.key))
	s.mux.Handle("GET /keys/{key}/evict", s.auth(s.evictConfirm))
	s.mux.Handle("POST /keys/{key}/evict", s.auth(s.evict))
	s.mux.Handle("GET /audit", s.auth(s.audit))
}

// auth serves h to a logged-in operator: a GET without a session goes to
// the login page, a POST without one, or without the session's CSRF
// token, is refused.
func (s *Server) auth(h func(http.ResponseWriter, *http.Request, *session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.sessions.read(r, time.Now())
		if err != nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && !s.sessions.checkCSRF(r, sess) {
			http.Error(w, "this form is stale or not the console's: reload the page", http.StatusForbidden)
			return
		}
		h(w, r, sess)
	})
}

// page is what every page's template gets.
type page struct {
	Title string
	Nav   string
	Who   string
	CSRF  string
	Now   time.Time
	Error string
	Data  any
}

func (s *Server) render(w http.ResponseWriter, sess *session, name, title string, status int, data any) {
	p := page{Title: title, Nav: name, Now: time.Now(), Data: data}
	if sess != nil {
		p.Who, p.CSRF = sess.Who, s.sessions.csrf(sess)
	}
	if e, ok := data.(errorPage); ok {
		p.Error = e.Message
	}
	var b strings.Builder
	if err := s.pages[name].Execute(&b, p); err != nil {
		s.log.Error("console: render", "page", name, "error", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// errorPage is a page that only says what went wrong.
type errorPage struct {
	Message string
	Back    string
}

func (s *Server) fail(w http.ResponseWriter, sess *session, status int, err error, back string) {
	if status >= http.StatusInternalServerError {
		s.log.Warn("console: request failed", "error", err)
	}
	s.render(w, sess, "error", "Something went wrong", status, errorPage{Message: err.Error(), Back: back})
}
