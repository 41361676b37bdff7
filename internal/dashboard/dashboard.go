// Package dashboard serves a stack's dashboard: its topology coloured by
// live health, the last verify and a button that runs it, per-node graphs
// from the monitor, and the releases and backups. Everything it serves is
// embedded; the page loads nothing from elsewhere.
package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/verify"
)

//go:embed assets
var assets embed.FS

var page = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"since": func(t time.Time) string { return t.Local().Format(time.DateTime) },
	"mib":   func(n int64) string { return fmt.Sprintf("%.1fM", float64(n)/(1<<20)) },
	// perSecond prints a rate the node may not have (nil): "-".
	"perSecond": func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f", *v)
	},
}).ParseFS(assets, "assets/index.html"))

// StatusSource says how the stack's nodes are.
type StatusSource interface {
	Status(ctx context.Context, stack string) (*driver.Status, error)
	Usage(ctx context.Context, stack string) ([]driver.NodeUsage, error)
}

// RangeSource answers the monitor's range queries.
type RangeSource interface {
	Range(ctx context.Context, stack, query string, start, end time.Time, step time.Duration) ([]driver.Series, error)
}

// VerifySource holds the last verify and runs a new one.
type VerifySource interface {
	LastVerify(stack string) (*driver.VerifyRecord, error)
	Verify(ctx context.Context, stack string, o verify.Options) (*verify.Report, error)
}

// ReleaseSource lists the stack's releases.
type ReleaseSource interface {
	Releases(ctx context.Context, stack string) (*release.Index, error)
}

// Server is the dashboard of one stack. Plan is the stack's saved plan;
// the sources may be nil, and then their part of the page says so.
type Server struct {
	Stack    string
	Plan     *plan.Plan
	Status   StatusSource
	Ranges   RangeSource
	Verifier VerifySource
	Releases ReleaseSource
	// BackupDir, if set, is where the stack's backup archives are.
	BackupDir string
	// Token, if set, must come with every request: as a bearer token, the
	// token cookie, or ?token= once (which sets the cookie).
	Token string
	// Window is how far back the graphs go; 15 minutes if zero.
	Window time.Duration

	once sync.Once
	csrf string
	// running serialises verify runs from the button.
	running sync.Mutex
}

const tokenCookie = "bulkhead_dashboard"

// NeedsToken reports whether a dashboard listening on addr must have a
// token: any address but the loopback's.
func NeedsToken(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--listen %s: %w; give HOST:PORT, e.g. 127.0.0.1:8090", addr, err)
	}
	if host == "localhost" {
		return false, nil
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback(), nil
}

// NewToken makes a random token.
func NewToken() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// ListenAndServe serves on addr until ctx is done. It refuses an address
// beyond the loopback when the server has no token, before it listens.
// ready, if not nil, is called with the address it listens on.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func(net.Addr)) error {
	needs, err := NeedsToken(addr)
	if err != nil {
		return err
	}
	if needs && s.Token == "" {
		return fmt.Errorf("the dashboard would listen on %s, beyond the loopback, without a token; give one", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(ln.Addr())
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

func (s *Server) init() {
	s.once.Do(func() { s.csrf = NewToken() })
}

// ServeHTTP checks the token, then serves the page, its assets, and the
// verify button's POST.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !s.authorised(w, r) {
		http.Error(w, "401 unauthorized: give the dashboard's token", http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.index(w, r)
	case r.URL.Path == "/verify" && r.Method == http.MethodPost:
		s.runVerify(w, r)
	case r.URL.Path == "/dash.js" || r.URL.Path == "/dash.css":
		http.ServeFileFS(w, r, assets, "assets"+r.URL.Path)
	default:
		http.NotFound(w, r)
	}
}

// authorised checks the token, if there is one; without one it refuses a
// Host that is not the loopback's, so that a page from elsewhere cannot
// reach it through a name that resolves to 127.0.0.1.
func (s *Server) authorised(w http.ResponseWriter, r *http.Request) bool {
	if s.Token == "" {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		ip := net.ParseIP(host)
		return host == "localhost" || (ip != nil && ip.IsLoopback())
	}
	given := ""
	if c, err := r.Cookie(tokenCookie); err == nil {
		given = c.Value
	}
	if h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		given = h
	}
	fromQuery := false
	if q := r.URL.Query().Get("token"); q != "" {
		given, fromQuery = q, true
	}
	if subtle.ConstantTimeCompare([]byte(given), []byte(s.Token)) != 1 {
		return false
	}
	if fromQuery {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: s.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	return true
}

// sameOrigin reports whether r's Origin (or, without one, its Referer)
// is the dashboard itself.
func sameOrigin(r *http.Request) bool {
	from := r.Header.Get("Origin")
	if from == "" {
		from = r.Header.Get("Referer")
	}
	u, err := url.Parse(from)
	if from == "" || err != nil {
		return false
	}
	return u.Host == r.Host && (u.Scheme == "http" || u.Scheme == "https")
}

func (s *Server) runVerify(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
		http.Error(w, "403 forbidden: a request to run verify must come from the dashboard's own page", http.StatusForbidden)
		return
	}
	if s.Verifier == nil {
		http.Error(w, "this dashboard cannot run verify", http.StatusNotImplemented)
		return
	}
	if !s.running.TryLock() {
		http.Error(w, "a verify started from the dashboard runs already; reload in a moment", http.StatusConflict)
		return
	}
	defer s.running.Unlock()
	// The run outlives a closed tab: its report is kept either way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	if _, err := s.Verifier.Verify(ctx, s.Stack, verify.Options{Timeout: verify.DefaultTimeout}); err != nil {
		http.Error(w, "verify: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.Redirect(w, r, "/#verify", http.StatusSeeOther)
}

// view is what the page template shows.
type view struct {
	Stack    string
	Now      time.Time
	CSRF     string
	Topology *topology
	Status   *driver.Status
	Usage    []driver.NodeUsage
	Errors   []string
	Verify   *driver.VerifyRecord
	Failures []string
	Graphs   []graph
	Releases *release.Index
	Backups  []backupRow
}

type backupRow struct {
	Name    string
	Created time.Time
	Members int
	DB      string
	Err     string
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v := view{Stack: s.Stack, Now: time.Now(), CSRF: s.csrf}
	fail := func(what string, err error) { v.Errors = append(v.Errors, what+": "+err.Error()) }
	if s.Status != nil {
		st, err := s.Status.Status(ctx, s.Stack)
		if err != nil {
			fail("status", err)
		}
		v.Status = st
		if s.Plan != nil && s.Plan.Dashboard != nil {
			if v.Usage, err = s.Status.Usage(ctx, s.Stack); err != nil {
				fail("usage", err)
			}
		}
	}
	if s.Plan != nil {
		v.Topology = layout(s.Plan, v.Status, v.Usage)
	}
	if s.Verifier != nil {
		rec, err := s.Verifier.LastVerify(s.Stack)
		if err != nil {
			fail("last verify", err)
		}
		v.Verify = rec
		if rec != nil && rec.Report != nil {
			v.Failures = failures(rec.Report)
		}
	}
	if s.Ranges != nil && s.Plan != nil && s.Plan.Dashboard != nil {
		var err error
		if v.Graphs, err = s.graphs(ctx); err != nil {
			fail("graphs", err)
		}
	}
	if s.Releases != nil {
		idx, err := s.Releases.Releases(ctx, s.Stack)
		if err != nil {
			fail("releases", err)
		}
		v.Releases = idx
	}
	if s.BackupDir != "" {
		var err error
		if v.Backups, err = listBackups(s.BackupDir, s.Stack); err != nil {
			fail("backups", err)
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// failures lists what a report failed on, a line each.
func failures(r *verify.Report) []string {
	var out []string
	for _, c := range r.Cells {
		if !c.OK {
			out = append(out, fmt.Sprintf("%s → %s %s/%d: %s", c.From, c.To, c.Proto, c.Port, c.Why))
		}
	}
	for _, l := range r.Listeners {
		if !l.Expected {
			out = append(out, fmt.Sprintf("unexpected listener: %s", l.String()))
		}
	}
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, fmt.Sprintf("check %s: %s", c.Name, c.Detail))
		}
	}
	return out
}
