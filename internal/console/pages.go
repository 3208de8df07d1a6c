package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idempay/idempay/internal/admin"
	"github.com/idempay/idempay/pkg/gateway"
	"github.com/idempay/idempay/pkg/messages"
)

// requestTimeout bounds what one page reads (a bulk replay has its own
// bound: each replay waits for its answer).
const requestTimeout = 30 * time.Second

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := time.Since(t)
		if d < 0 {
			return "in " + roundDur(-d).String()
		}
		return roundDur(d).String() + " ago"
	},
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	},
	"rate": formatRate,
	"ms": func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
	},
	"dur":  func(d time.Duration) string { return roundDur(d).String() },
	"line": func(s string) string { return strings.Join(strings.Fields(s), " ") },
	"outcome": func(r *messages.Result) string {
		if r == nil {
			return ""
		}
		s := string(r.Status)
		if r.Code != "" {
			s += " " + r.Code
		}
		return s
	},
	"status": func(e admin.Entry) string {
		if e.Status == admin.StatusResolved && e.State.Outcome != nil {
			s := "resolved: " + string(e.State.Outcome.Status)
			if e.State.Outcome.Code != "" {
				s += " " + e.State.Outcome.Code
			}
			return s
		}
		return string(e.Status)
	},
	"statuses": func() []admin.Status { return admin.Statuses },
	"kinds": func() []string {
		return []string{messages.KindPaymentCharge, messages.KindPaymentRefund, messages.KindCartAdd}
	},
	"has":        slices.Contains[[]string],
	"replayable": func(e admin.Entry) bool { ok, _ := admin.Replayable(&e); return ok },
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// loginData is the login page's.
type loginData struct {
	Next    string
	Message string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, nil, "login", "Log in", http.StatusOK, loginData{Next: localPath(r.URL.Query().Get("next"))})
}

// login checks the credential the operator pasted (an API key or a JWT)
// with the gateway's authenticator, and lets in those with the role.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.PostFormValue("next"))
	cred := strings.TrimSpace(r.PostFormValue("credential"))
	probe, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "/", http.NoBody)
	probe.Header.Set("Authorization", "Bearer "+cred)
	caller, err := s.cfg.Auth.Authenticate(probe)
	switch {
	case err != nil:
		s.log.Warn("console: login refused", "remote", r.RemoteAddr, "error", err)
		s.render(w, nil, "login", "Log in", http.StatusUnauthorized, loginData{Next: next,
			Message: "Unknown API key or token, or an expired one."})
		return
	case !caller.HasRole(s.cfg.Role):
		s.log.Warn("console: login refused: not an operator", "remote", r.RemoteAddr, "tenant", caller.Tenant, "method", caller.Method)
		s.render(w, nil, "login", "Log in", http.StatusForbidden, loginData{Next: next,
			Message: fmt.Sprintf("These credentials are tenant %s's, without the %s role: the console is for operators (role=%s in the API-key file, or the token's role claim).", caller.Tenant, s.cfg.Role, s.cfg.Role)})
		return
	}
	var exp time.Time
	if caller.Method == gateway.MethodJWT {
		exp = tokenExpiry(cred)
	}
	s.sessions.issue(w, caller, exp, time.Now())
	s.log.Info("console: login", "tenant", caller.Tenant, "subject", caller.Subject, "method", caller.Method, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther) //nolint:gosec // G710: localPath keeps it a path on the console
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.sessions.clear(w)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// localPath keeps a redirect on the console: a path, never another host.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return "/"
	}
	return p
}

// overviewData is the overview's.
type overviewData struct {
	Rates Rates
	Queue *admin.Queue
	Audit []admin.AuditEntry
	Err   string
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	d := overviewData{Rates: s.cfg.Scraper.Rates()}
	var err error
	if d.Queue, err = s.admin.Queue(ctx); err != nil {
		d.Err = err.Error()
	}
	d.Audit, _ = s.admin.AuditLog(ctx, 5, "")
	s.render(w, sess, "overview", "Overview", http.StatusOK, d)
}

// filterForm is a dead-letter filter as the forms and links carry it.
type filterForm struct {
	Kinds    []string
	Since    string
	Before   string
	Reason   string
	Effect   string
	Statuses []string
	Replayed bool
	Key      string
}

func formOf(v url.Values) filterForm {
	return filterForm{Kinds: nonEmpty(v["kind"]), Since: v.Get("since"), Before: v.Get("before"), Reason: v.Get("reason"),
		Effect: v.Get("effect"), Statuses: nonEmpty(v["status"]), Replayed: v.Get("replayed") != "", Key: v.Get("key")}
}

func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Query is the filter as a URL query, for links and hidden fields.
func (f filterForm) Query() url.Values {
	v := url.Values{}
	for _, k := range f.Kinds {
		v.Add("kind", k)
	}
	for k, val := range map[string]string{"since": f.Since, "before": f.Before, "reason": f.Reason, "effect": f.Effect, "key": f.Key} {
		if val != "" {
			v.Set(k, val)
		}
	}
	for _, st := range f.Statuses {
		v.Add("status", st)
	}
	if f.Replayed {
		v.Set("replayed", "1")
	}
	return v
}

// Encoded is Query, encoded.
func (f filterForm) Encoded() string { return f.Query().Encode() }

// Href returns path with the filter as its query, for a link: a
// template.URL, which html/template keeps whole (a plain string after
// "?" would be escaped as one value, "=" and "&" included, and the link
// would carry no filter).
func (f filterForm) Href(path string) template.URL {
	if q := f.Encoded(); q != "" {
		return template.URL(path + "?" + q) //nolint:gosec // G203: url.Values.Encode escapes every value
	}
	return template.URL(path) //nolint:gosec // G203: a path of the console's own
}

// Fields are the filter's hidden form fields.
func (f filterForm) Fields() [][2]string {
	var out [][2]string
	for k, vs := range f.Query() {
		for _, v := range vs {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

func (f filterForm) filter(now time.Time) (*admin.Filter, error) {
	out := &admin.Filter{Kinds: f.Kinds, Reason: f.Reason, Effect: f.Effect, Replayed: f.Replayed}
	if f.Effect != "" && f.Effect != admin.EffectNone && f.Effect != admin.EffectUnknown {
		return nil, fmt.Errorf("effect %q: none or unknown", f.Effect)
	}
	var err error
	if out.Since, err = admin.ParseAge(f.Since, now); err != nil {
		return nil, fmt.Errorf("since %w", err)
	}
	if out.Before, err = admin.ParseAge(f.Before, now); err != nil {
		return nil, fmt.Errorf("before %w", err)
	}
	for _, st := range f.Statuses {
		parsed, err := admin.ParseStatus(st)
		if err != nil {
			return nil, err
		}
		out.Statuses = append(out.Statuses, parsed)
	}
	if f.Key != "" {
		if !messages.ValidKey(f.Key) {
			return nil, fmt.Errorf("key %q: not a UUID in canonical form", f.Key)
		}
		out.Keys = []string{f.Key}
	}
	return out, nil
}

// deadLettersData is the dead-letter page's.
type deadLettersData struct {
	Form       filterForm
	Listing    *admin.Listing
	Replayable int
}

// listing reads the dead letters form selects, within requestTimeout of
// ctx.
func (s *Server) listing(ctx context.Context, form filterForm) (*admin.Listing, error) {
	f, err := form.filter(time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return s.admin.DeadLetters(ctx, f)
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, sess *session) {
	form := formOf(r.URL.Query())
	l, err := s.listing(r.Context(), form)
	if err != nil {
		s.fail(w, sess, http.StatusBadRequest, err, "/deadletters")
		return
	}
	d := deadLettersData{Form: form, Listing: l}
	for i := range l.Entries {
		if ok, _ := admin.Replayable(&l.Entries[i]); ok {
			d.Replayable++
		}
	}
	s.render(w, sess, "deadletters", "Dead letters", http.StatusOK, d)
}

// bulkData is the replay and purge pages': the confirmation (a dry run)
// and the result.
type bulkData struct {
	Form    filterForm
	Listing *admin.Listing
	Replay  *admin.ReplayReport
	Purge   *admin.PurgeReport
	Done    bool
}

func (s *Server) replayConfirm(w http.ResponseWriter, r *http.Request, sess *session) {
	form := formOf(r.URL.Query())
	l, err := s.listing(r.Context(), form)
	if err != nil {
		s.fail(w, sess, http.StatusBadRequest, err, "/deadletters")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rep := s.admin.Replay(ctx, l.Entries, true)
	s.render(w, sess, "replay", "Replay dead letters", http.StatusOK, bulkData{Form: form, Listing: l, Replay: rep})
}

// replay re-drives what the filter selects now (the list is read again:
// what was pending when the operator confirmed may have moved on).
func (s *Server) replay(w http.ResponseWriter, r *http.Request, sess *session) {
	form := formOf(r.PostForm)
	l, err := s.listing(r.Context(), form)
	if err != nil {
		s.fail(w, sess, http.StatusBadRequest, err, "/deadletters")
		return
	}
	// Each replay waits for its answer (the client's result timeout), a
	// few at a time: bounded by the admin's configuration, not the page's.
	ctx := context.WithoutCancel(r.Context())
	rep := s.admin.Replay(ctx, l.Entries, false)
	detail := fmt.Sprintf("filter %s: replayed %d (succeeded %d, failed %d, rejected %d, no answer %d), skipped %d",
		mustFilter(form), rep.Replayed, rep.Succeeded, rep.Failed, rep.Rejected, rep.NoAnswer, rep.Skipped)
	s.record(ctx, sess, admin.ActionDLQReplay, form.Key, detail)
	s.render(w, sess, "replay", "Replayed", http.StatusOK, bulkData{Form: form, Listing: l, Replay: rep, Done: true})
}

func (s *Server) purgeConfirm(w http.ResponseWriter, r *http.Request, sess *session) {
	form := formOf(r.URL.Query())
	l, err := s.listing(r.Context(), form)
	if err != nil {
		s.fail(w, sess, http.StatusBadRequest, err, "/deadletters")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rep, _ := s.admin.Purge(ctx, l.Entries, true)
	s.render(w, sess, "purge", "Purge dead letters", http.StatusOK, bulkData{Form: form, Listing: l, Purge: rep})
}

func (s *Server) purge(w http.ResponseWriter, r *http.Request, sess *session) {
	form := formOf(r.PostForm)
	l, err := s.listing(r.Context(), form)
	if err != nil {
		s.fail(w, sess, http.StatusBadRequest, err, "/deadletters")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rep, err := s.admin.Purge(ctx, l.Entries, false)
	if rep != nil && rep.Purged > 0 {
		s.record(ctx, sess, admin.ActionDLQPurge, form.Key, fmt.Sprintf("filter %s: purged %d dead letter(s) of %d key(s)", mustFilter(form), rep.Purged, len(rep.Keys)))
	}
	if err != nil {
		s.fail(w, sess, http.StatusInternalServerError, err, "/deadletters")
		return
	}
	s.render(w, sess, "purge", "Purged", http.StatusOK, bulkData{Form: form, Listing: l, Purge: rep, Done: true})
}

func mustFilter(form filterForm) string {
	f, err := form.filter(time.Now())
	if err != nil {
		return form.Encoded()
	}
	return f.String()
}

// record writes a change to the audit log and the console's log.
func (s *Server) record(ctx context.Context, sess *session, action, key, detail string) {
	s.log.Info("console: "+action, "who", sess.Who, "key", key, "detail", detail)
	if err := s.admin.Audit(ctx, admin.AuditEntry{At: time.Now(), Who: "console:" + sess.Who, Action: action, Key: key, Detail: detail}); err != nil {
		s.log.Error("console: audit log not written", "who", sess.Who, "action", action, "detail", detail, "error", err)
	}
}

// unknownData is the unknown-outcome page's.
type unknownData struct {
	Keys    []admin.UnknownKey
	Total   int64
	Listing *admin.Listing
}

func (s *Server) unknown(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	keys, total, err := s.admin.UnknownKeys(ctx, 200)
	if err != nil {
		s.fail(w, sess, http.StatusInternalServerError, err, "/")
		return
	}
	l, err := s.admin.DeadLetters(ctx, &admin.Filter{Effect: admin.EffectUnknown})
	if err != nil {
		s.fail(w, sess, http.StatusInternalServerError, err, "/")
		return
	}
	s.render(w, sess, "unknown", "Unknown outcomes", http.StatusOK, unknownData{Keys: keys, Total: total, Listing: l})
}

func (s *Server) keySearch(w http.ResponseWriter, r *http.Request, sess *session) {
	key := strings.TrimSpace(r.URL.Query().Get("key"))
	if key == "" {
		s.render(w, sess, "keysearch", "Key inspector", http.StatusOK, nil)
		return
	}
	http.Redirect(w, r, "/keys/"+url.PathEscape(key), http.StatusSeeOther)
}

// keyData is the key inspector's.
type keyData struct {
	Report   *admin.KeyReport
	Timeline []admin.Event
	Pending  bool // a dead letter of the key is pending: it may be replayed
	Result   string
}

func (s *Server) key(w http.ResponseWriter, r *http.Request, sess *session) {
	key := r.PathValue("key")
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rep, err := s.admin.Inspect(ctx, key)
	if errors.Is(err, admin.ErrInvalidKey) {
		s.fail(w, sess, http.StatusBadRequest, err, "/keys")
		return
	}
	if err != nil {
		s.fail(w, sess, http.StatusInternalServerError, err, "/keys")
		return
	}
	d := keyData{Report: rep, Timeline: rep.Timeline()}
	if len(rep.DeadLetters) > 0 && rep.Record != nil && rep.Record.State == admin.StateDead && !rep.Record.Voided {
		d.Pending = true
	}
	s.render(w, sess, "key", "Key "+key, http.StatusOK, d)
}

func (s *Server) evictConfirm(w http.ResponseWriter, r *http.Request, sess *session) {
	key := r.PathValue("key")
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rep, err := s.admin.Inspect(ctx, key)
	if err != nil {
		s.fail(w, sess, http.StatusBadRequest, err, "/keys")
		return
	}
	s.render(w, sess, "evict", "Evict the record of "+key, http.StatusOK, keyData{Report: rep})
}

func (s *Server) evict(w http.ResponseWriter, r *http.Request, sess *session) {
	key := r.PathValue("key")
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	if r.PostFormValue("understood") == "" {
		s.fail(w, sess, http.StatusBadRequest, errors.New("tick the box that says what evicting means, then evict"), "/keys/"+url.PathEscape(key)+"/evict")
		return
	}
	tries, _ := strconv.Atoi(r.PostFormValue("tries"))
	expect := &admin.Expect{State: r.PostFormValue("state"), Tries: tries}
	rec, err := s.admin.Evict(ctx, key, "console:"+sess.Who, expect)
	back := "/keys/" + url.PathEscape(key)
	switch {
	case errors.Is(err, admin.ErrLocked), errors.Is(err, admin.ErrNotEvictable), errors.Is(err, admin.ErrChanged), errors.Is(err, admin.ErrNoRecord):
		s.fail(w, sess, http.StatusConflict, err, back)
		return
	case err != nil:
		s.log.Error("console: evict", "who", sess.Who, "key", key, "error", err)
		s.fail(w, sess, http.StatusInternalServerError, err, back)
		return
	}
	s.log.Info("console: evict", "who", sess.Who, "key", key, "state", rec.State)
	rep, err := s.admin.Inspect(ctx, key)
	if err != nil {
		s.fail(w, sess, http.StatusInternalServerError, err, back)
		return
	}
	s.render(w, sess, "key", "Key "+key, http.StatusOK, keyData{Report: rep, Timeline: rep.Timeline(),
		Result: "Evicted the " + string(rec.State) + " record; the audit log has what it held."})
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	log, err := s.admin.AuditLog(ctx, 200, "")
	if err != nil {
		s.fail(w, sess, http.StatusInternalServerError, err, "/")
		return
	}
	s.render(w, sess, "audit", "Audit log", http.StatusOK, log)
}
