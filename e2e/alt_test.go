package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAltSoftware brings up a stack of the alternatives that run under the
// local driver today (haproxy edge, nginx static, nginx + php-fpm app, redis
// cache, postgresql db) and checks the site works through it, cache-aside
// included.
func TestAltSoftware(t *testing.T) {
	s := newStack(t, "e2ea", 237, 18680, `tiers:
  edge: {software: haproxy}
  static: {software: nginx}
  app: {software: nginx, replicas: 2}
  cache: {software: redis}
  db: {software: postgresql}
  storage: {}
`)
	s.run("up")
	c := &http.Client{Timeout: 20 * time.Second}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get("http://" + s.http + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// up returns once the site answers: no warm-up wait here.
	if resp, _ := get("/"); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "app-") {
		t.Fatalf("GET / = %d from %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
	}
	if resp, body := get("/healthz"); resp.StatusCode != 200 || !strings.Contains(body, `"cache":"ok"`) {
		t.Fatalf("/healthz = %d: %s", resp.StatusCode, body)
	}
	if resp, _ := get("/assets/style.css"); resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "static" {
		t.Fatalf("GET /assets/style.css = %d from %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
	}
	// The list is read through redis: a second read is a hit.
	get("/")
	if resp, _ := get("/"); resp.Header.Get("X-Cache") != "hit" {
		t.Errorf("third read of / has X-Cache %q, want hit", resp.Header.Get("X-Cache"))
	}
	// haproxy in front of nginx runs no upload either.
	uploadsNeverRun(t, s)
	linksNeverFollowed(t, s)

	if out := s.run("up"); !strings.Contains(out, "nothing changed") {
		t.Errorf("second up changed something:\n%s", out)
	}
	// The alternatives listen where the plan says and nowhere else.
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify of the alternative stack (%v): failures %q\n%.3000s", err, v.Failures, out)
	}
}

// TestCaddyStatic brings up the default stack with Caddy as the static
// tier: it serves the static paths, runs no upload, and listens where the
// plan says and nowhere else (its admin endpoint is a unix socket).
func TestCaddyStatic(t *testing.T) {
	s := newStack(t, "e2ey", 243, 18600, `tiers:
  edge: {}
  static: {software: caddy}
  app: {replicas: 2}
  cache: {}
  db: {}
  storage: {}
`)
	s.run("up")
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + s.http + "/assets/style.css")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "static" {
		t.Fatalf("GET /assets/style.css = %d from %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/css; charset=utf-8" {
		t.Errorf("GET /assets/style.css: Content-Type %q", ct)
	}
	// Caddy does not drop root itself; setpriv starts it as www-data.
	out, err := s.in("static", "sh", "-c", `for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = caddy ] && grep '^Uid:' $p/status; done; true`)
	if err != nil || strings.Join(strings.Fields(out), " ") != "Uid: 33 33 33 33" {
		t.Errorf("caddy's uids in static: %q (%v), want www-data's, 33", out, err)
	}
	uploadsNeverRun(t, s)
	linksNeverFollowed(t, s)

	if out := s.run("up"); !strings.Contains(out, "nothing changed") {
		t.Errorf("second up changed something:\n%s", out)
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify of the Caddy stack (%v): failures %q\n%.3000s", err, v.Failures, out)
	}
}
