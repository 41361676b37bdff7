package dashboard

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/spec"
	"github.com/bulkhead/bulkhead/internal/verify"
)

const stackFile = `name: dash
tiers:
  edge: {}
  static: {}
  app: {replicas: 2}
  cache: {}
  db: {}
  storage: {}
  monitor: {}
`

func testPlan(t *testing.T) *plan.Plan {
	t.Helper()
	st, err := spec.Load("bulkhead.yaml", []byte(stackFile), spec.Env{DirExists: func(string) bool { return true }, FileExists: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	if t := st.ByRole(spec.RoleStorage); t != nil && t.Protocol == spec.ProtocolAuto {
		t.Protocol = spec.ProtocolSFTP
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fake stands in for the driver: fixed status, usage, series, reports.
type fake struct {
	p        *plan.Plan
	last     *driver.VerifyRecord
	verified int
}

func (f *fake) Status(ctx context.Context, stack string) (*driver.Status, error) {
	st := &driver.Status{Stack: stack, Supervisor: true, Keeper: true, Alerts: []driver.Alert{}}
	for _, n := range f.p.Nodes {
		st.Nodes = append(st.Nodes, driver.NodeStatus{Name: n.Name, State: "running", Healthy: n.Role != spec.RoleCache})
	}
	return st, nil
}

func (f *fake) Usage(ctx context.Context, stack string) ([]driver.NodeUsage, error) {
	rps, errs := 12.5, 0.5
	return []driver.NodeUsage{
		{Node: "db", Up: true, CPU: 0.25, Memory: 100 << 20, MemoryLimit: 1 << 30},
		{Node: "edge", Up: true, CPU: 0.1, Memory: 20 << 20, MemoryLimit: 256 << 20, Requests: &rps, Errors: &errs},
	}, nil
}

func (f *fake) Range(ctx context.Context, stack, query string, start, end time.Time, step time.Duration) ([]driver.Series, error) {
	if !strings.Contains(query, "cpu") {
		return nil, nil
	}
	var pts []driver.Point
	for i := range 5 {
		pts = append(pts, driver.Point{At: start.Add(time.Duration(i+1) * step), Value: float64(i) / 10})
	}
	return []driver.Series{{Node: "db", Points: pts}}, nil
}

func (f *fake) LastVerify(stack string) (*driver.VerifyRecord, error) { return f.last, nil }

func (f *fake) Verify(ctx context.Context, stack string, o verify.Options) (*verify.Report, error) {
	f.verified++
	r := &verify.Report{Stack: stack, Counts: verify.Counts{Cells: 99, AllowedOpen: 9, DeniedBlocked: 90}}
	f.last = &driver.VerifyRecord{At: time.Now(), Report: r}
	return r, nil
}

func (f *fake) Releases(ctx context.Context, stack string) (*release.Index, error) {
	return &release.Index{Live: "abcdef012345", Releases: []release.Release{{ID: "abcdef012345", State: "live", Files: 3}}}, nil
}

func newServer(t *testing.T, token string) (*Server, *fake) {
	p := testPlan(t)
	f := &fake{p: p, last: &driver.VerifyRecord{
		At: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		Report: &verify.Report{Stack: "dash",
			Cells:  []verify.Cell{{From: "outside", To: "db", Port: 3306, Proto: "tcp", Why: "open, want filtered"}},
			Counts: verify.Counts{Cells: 120, AllowedOpen: 20, DeniedBlocked: 99, FailedCells: 1, Failures: 1}},
	}}
	return &Server{Stack: "dash", Plan: p, Status: f, Ranges: f, Verifier: f, Releases: f, Token: token}, f
}

func get(t *testing.T, c *http.Client, u string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestPage(t *testing.T) {
	s, _ := newServer(t, "")
	ts := httptest.NewServer(s)
	defer ts.Close()
	code, body := get(t, ts.Client(), ts.URL+"/", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /: %d\n%s", code, body)
	}
	for _, n := range s.Plan.Nodes {
		if !strings.Contains(body, `data-node="`+n.Name+`"`) {
			t.Errorf("the picture has no node %s", n.Name)
		}
	}
	for _, want := range []string{
		`class="node down" data-node="cache"`, // unhealthy in the fake's status
		`class="node healthy" data-node="db"`,
		"FAIL at ", "120 cells", "1 failures", "outside → db tcp/3306: open, want filtered",
		"abcdef012345 (live)", ">public<", ">private<",
		"<title>outside → edge tcp/80, tcp/443</title>", "<title>app-1 → db tcp/3306</title>",
		// Requests where the node has them, a dash where it has none.
		"<td>12.5</td><td>0.5</td></tr>", "<td>0</td><td>-</td><td>-</td></tr>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	m := regexp.MustCompile(`<polyline points="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the page has no polyline:\n%s", body)
	}
	if pts := strings.Fields(m[1]); len(pts) != 5 {
		t.Errorf("polyline has %d points, want 5: %q", len(pts), m[1])
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Error("the page names an address elsewhere; it must load nothing from outside")
	}
	if code, js := get(t, ts.Client(), ts.URL+"/dash.js", nil); code != http.StatusOK || !strings.Contains(js, "run-verify") {
		t.Errorf("GET /dash.js: %d", code)
	}
}

func TestNeedsToken(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8090": false, "[::1]:8090": false, "localhost:8090": false,
		"0.0.0.0:8090": true, "192.0.2.1:8090": true, ":8090": true, "example.net:80": true,
	} {
		got, err := NeedsToken(addr)
		if err != nil || got != want {
			t.Errorf("NeedsToken(%s) = %v, %v; want %v", addr, got, err, want)
		}
	}
	if _, err := NeedsToken("8090"); err == nil {
		t.Error("NeedsToken took an address without a port")
	}
}

func TestToken(t *testing.T) {
	s, _ := newServer(t, "s3cret-token")
	ts := httptest.NewServer(s)
	defer ts.Close()
	for name, hdr := range map[string]map[string]string{
		"none":         nil,
		"wrong bearer": {"Authorization": "Bearer s3cret-toke"},
		"wrong cookie": {"Cookie": tokenCookie + "=nope"},
	} {
		if code, _ := get(t, ts.Client(), ts.URL+"/", hdr); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	if code, _ := get(t, ts.Client(), ts.URL+"/?token=wrong", nil); code != http.StatusUnauthorized {
		t.Errorf("wrong ?token=: %d, want 401", code)
	}
	if code, _ := get(t, ts.Client(), ts.URL+"/", map[string]string{"Authorization": "Bearer s3cret-token"}); code != http.StatusOK {
		t.Errorf("right bearer: %d, want 200", code)
	}
	if code, _ := get(t, ts.Client(), ts.URL+"/?token=s3cret-token", nil); code != http.StatusOK {
		t.Errorf("right ?token=: %d, want 200", code)
	}
}

// TestLoopbackHost: without a token, a Host that is not the loopback's (a
// name rebound to 127.0.0.1) is refused.
func TestLoopbackHost(t *testing.T) {
	s, _ := newServer(t, "")
	ts := httptest.NewServer(s)
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	req.Host = "attacker.example:8090"
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Host attacker.example: %d, want 401", resp.StatusCode)
	}
}

func csrfOf(t *testing.T, page string) string {
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the page has no csrf field")
	}
	return m[1]
}

func TestRunVerify(t *testing.T) {
	s, f := newServer(t, "")
	ts := httptest.NewServer(s)
	defer ts.Close()
	_, page := get(t, ts.Client(), ts.URL+"/", nil)
	csrf := csrfOf(t, page)
	c := ts.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	post := func(origin, token string) int {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/verify", strings.NewReader(url.Values{"csrf": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, tc := range map[string][2]string{
		"cross-origin": {"http://attacker.example", csrf},
		"no origin":    {"", csrf},
		"wrong csrf":   {ts.URL, "00"},
	} {
		if code := post(tc[0], tc[1]); code != http.StatusForbidden {
			t.Errorf("%s POST: %d, want 403", name, code)
		}
	}
	if f.verified != 0 {
		t.Fatalf("a refused POST ran verify %d times", f.verified)
	}
	if code := post(ts.URL, csrf); code != http.StatusSeeOther {
		t.Fatalf("same-origin POST: %d, want 303", code)
	}
	if f.verified != 1 {
		t.Fatalf("verify ran %d times, want 1", f.verified)
	}
	_, page = get(t, ts.Client(), ts.URL+"/", nil)
	if !strings.Contains(page, "PASS at ") || !strings.Contains(page, "99 cells") {
		t.Errorf("the page does not show the new run")
	}
}

func TestBackups(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"dash-20261130T120000Z.tar.zst", "dash-2-20261130T120000Z.tar.zst", "dash-20261130T130000Z.tar.zst.part"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not an archive"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := listBackups(dir, "dash")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Name != "dash-20261130T120000Z.tar.zst" || rows[0].Err == "" {
		t.Errorf("rows %+v, want the one archive of dash, with its error", rows)
	}
}

// TestRefuseOpenListen: beyond the loopback without a token, the server
// refuses before it listens; on the loopback it serves until ctx ends.
func TestRefuseOpenListen(t *testing.T) {
	s, _ := newServer(t, "")
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		err := s.ListenAndServe(t.Context(), addr, func(net.Addr) { t.Errorf("%s: it listened", addr) })
		if err == nil || !strings.Contains(err.Error(), "without a token") {
			t.Errorf("%s: %v, want a refusal", addr, err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	addrs := make(chan net.Addr, 1)
	go func() { done <- s.ListenAndServe(ctx, "127.0.0.1:0", func(a net.Addr) { addrs <- a }) }()
	var a net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	if code, _ := get(t, http.DefaultClient, "http://"+a.String()+"/", nil); code != http.StatusOK {
		t.Errorf("GET on the loopback: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
