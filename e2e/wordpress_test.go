package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestWordPress runs Debian's WordPress, as "bulkhead init --app wordpress"
// writes it, unchanged, and drives it only through the published port, which
// is not 80 (issue #17): the installer, its mail in the sink, a login, a post
// with an image through the REST API as wp-admin's editor makes it, the front
// page with the image from the static node, and verify.
func TestWordPress(t *testing.T) {
	s := newStack(t, "e2ewp", 254, 19140, "")
	for _, p := range []string{"bulkhead.yaml", "site"} {
		if err := os.RemoveAll(filepath.Join(s.dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	out := s.run("init", "--app", "wordpress", s.dir)
	if !regexp.MustCompile(`copied \d+ files of WordPress from /usr/share/wordpress`).MatchString(out) {
		t.Fatalf("init --app wordpress said:\n%s", out)
	}
	stackFile := filepath.Join(s.dir, "bulkhead.yaml")
	b, err := os.ReadFile(stackFile)
	if err != nil {
		t.Fatal(err)
	}
	file := strings.NewReplacer(
		"\nname: wordpress\n", "\nname: e2ewp\nnetworks:\n  private: 10.254.0.0/24\n  public: 10.254.1.0/28\n",
		"http: 127.0.0.1:8080", "http: "+s.http,
		"https: 127.0.0.1:8443", "https: "+s.https,
		"\n  monitor: {}", "\n  monitor: off",
	).Replace(string(b))
	if !strings.Contains(file, "\n  monitor: off") {
		t.Fatalf("init --app wordpress's stack file has no \"monitor: {}\" to turn off:\n%s", b)
	}
	if err := os.WriteFile(stackFile, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	// A first up parses WordPress's thousand PHP files and copies its
	// tree twice (release and storage): more than s.run waits on a busy
	// shared host.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	up := exec.CommandContext(ctx, bin, "up")
	up.Dir = s.dir
	start := time.Now()
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("bulkhead up: %v\n%s", err, out)
	}
	t.Logf("up took %s", time.Since(start).Round(time.Second))

	base := "http://" + s.http
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(t *testing.T, method, path string, body io.Reader, hdr ...string) (*http.Response, string) {
		t.Helper()
		u := path
		if !strings.HasPrefix(u, "http") {
			u = base + path
		}
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	form := func(t *testing.T, path string, v url.Values) (*http.Response, string) {
		t.Helper()
		return do(t, "POST", path, strings.NewReader(v.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	}

	// Before the installer, every page sends the visitor to it, at the
	// address the visitor used: port and all, not a redirect loop.
	resp, body := do(t, "GET", "/", nil)
	if want := base + "/wp-admin/install.php"; resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
		t.Fatalf("GET / before install = %d Location %q, want 302 to %s\n%.500s", resp.StatusCode, resp.Header.Get("Location"), want, body)
	}

	const title, user, pass, email = "Bulkhead Blog", "admin", "correct horse battery staple", "admin@example.com"
	t.Run("installer", func(t *testing.T) {
		resp, body := form(t, "/wp-admin/install.php?step=2", url.Values{
			"weblog_title": {title}, "user_name": {user}, "admin_password": {pass}, "admin_password2": {pass},
			"pw_weak": {"1"}, "admin_email": {email}, "blog_public": {"0"}, "language": {""},
		})
		if resp.StatusCode != 200 || !strings.Contains(body, "Success!") {
			t.Fatalf("install step 2 = %d:\n%.2000s", resp.StatusCode, body)
		}
	})

	t.Run("the installer's mail is in the sink", func(t *testing.T) {
		var logs string
		for _, n := range []string{"app-1", "app-2"} {
			out, _ := s.exec("logs", n, "--service", "php-fpm", "-n", "400")
			logs += out
		}
		summary := regexp.MustCompile(`sendmail: kept, not sent \(no mail tier\): from "[^"]*" to "` + regexp.QuoteMeta(email) + `" subject "New WordPress Site"`)
		if !summary.MatchString(logs) || !strings.Contains(logs, "sendmail| Username: "+user) {
			t.Errorf("no installer mail to %s in the app nodes' php-fpm logs:\n%s", email, logs)
		}
	})

	t.Run("front page and pretty permalinks", func(t *testing.T) {
		resp, body := do(t, "GET", "/", nil)
		if resp.StatusCode != 200 || !strings.Contains(body, title) || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "app-") {
			t.Fatalf("GET / = %d from %q:\n%.1000s", resp.StatusCode, resp.Header.Get("X-Served-By"), body)
		}
		resp, _ = do(t, "GET", "/?p=1", nil)
		if want := base + "/hello-world/"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
			t.Errorf("GET /?p=1 = %d Location %q, want 301 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
		}
		resp, body = do(t, "GET", "/hello-world/", nil)
		if resp.StatusCode != 200 || !strings.Contains(body, "Hello world!") {
			t.Errorf("GET /hello-world/ = %d", resp.StatusCode)
		}
	})

	t.Run("the object cache is the stack's memcached", func(t *testing.T) {
		// init --app wordpress writes wp-content/object-cache.php: a page
		// WordPress has built once is read from memcached by every app
		// node, so loading the front page again gets hits there.
		before := s.memcachedStats(t)
		for range 2 {
			if resp, _ := do(t, "GET", "/", nil); resp.StatusCode != 200 {
				t.Fatalf("GET / = %d", resp.StatusCode)
			}
		}
		after := s.memcachedStats(t)
		if hits := after["get_hits"] - before["get_hits"]; hits < 10 || after["curr_items"] == 0 {
			t.Errorf("memcached's get_hits grew by %d over two front pages (want 10 or more), curr_items %d: WordPress does not use the object cache", hits, after["curr_items"])
		}
	})

	t.Run("log in", func(t *testing.T) {
		do(t, "GET", "/wp-login.php", nil) // sets the test cookie
		resp, body := form(t, "/wp-login.php", url.Values{"log": {user}, "pwd": {pass}, "wp-submit": {"Log In"}, "testcookie": {"1"}})
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != base+"/wp-admin/" {
			t.Fatalf("login = %d Location %q:\n%.1000s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		resp, body = do(t, "GET", "/wp-admin/", nil)
		if resp.StatusCode != 200 || !strings.Contains(body, "Dashboard") {
			t.Fatalf("GET /wp-admin/ after login = %d:\n%.1000s", resp.StatusCode, body)
		}
	})

	img := pngBytes(t)
	var imageURL, postLink string
	t.Run("post with an image", func(t *testing.T) {
		// As wp-admin's editor does: the REST API with the login cookie
		// and a nonce.
		resp, nonce := do(t, "GET", "/wp-admin/admin-ajax.php?action=rest-nonce", nil)
		if resp.StatusCode != 200 || !regexp.MustCompile(`^[0-9a-f]{10}$`).MatchString(nonce) {
			t.Fatalf("rest-nonce = %d %q", resp.StatusCode, nonce)
		}
		resp, body := do(t, "POST", "/wp-json/wp/v2/media", bytes.NewReader(img),
			"X-WP-Nonce", nonce, "Content-Type", "image/png", "Content-Disposition", `attachment; filename="bulkhead.png"`)
		var media struct {
			ID        int    `json:"id"`
			SourceURL string `json:"source_url"`
		}
		if err := json.Unmarshal([]byte(body), &media); resp.StatusCode != http.StatusCreated || err != nil || media.ID == 0 {
			t.Fatalf("upload = %d (%v):\n%.1000s", resp.StatusCode, err, body)
		}
		if !strings.HasPrefix(media.SourceURL, base+"/wp-content/uploads/") {
			t.Errorf("the image's URL is %s, want it under %s/wp-content/uploads/", media.SourceURL, base)
		}
		imageURL = media.SourceURL
		post, _ := json.Marshal(map[string]any{
			"title": "Split stacks", "status": "publish", "featured_media": media.ID,
			"content": fmt.Sprintf(`<p>Every tier in its own node.</p><img src="%s" alt="a red diagonal">`, media.SourceURL),
		})
		resp, body = do(t, "POST", "/wp-json/wp/v2/posts", bytes.NewReader(post), "X-WP-Nonce", nonce, "Content-Type", "application/json")
		var created struct {
			Link string `json:"link"`
		}
		if err := json.Unmarshal([]byte(body), &created); resp.StatusCode != http.StatusCreated || err != nil {
			t.Fatalf("post = %d (%v):\n%.1000s", resp.StatusCode, err, body)
		}
		postLink = created.Link
	})
	if imageURL == "" || postLink == "" {
		t.FailNow()
	}

	t.Run("the front page shows the post, its image from the static node", func(t *testing.T) {
		resp, body := do(t, "GET", "/", nil)
		if resp.StatusCode != 200 || !strings.Contains(body, "Split stacks") || !strings.Contains(body, imageURL) {
			t.Errorf("GET / = %d, want the post and %s in it:\n%.2000s", resp.StatusCode, imageURL, body)
		}
		resp, body = do(t, "GET", postLink, nil)
		if resp.StatusCode != 200 || !strings.Contains(body, "Every tier in its own node.") {
			t.Errorf("GET %s = %d", postLink, resp.StatusCode)
		}
		resp, body = do(t, "GET", imageURL, nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "static" || body != string(img) {
			t.Errorf("GET %s = %d from %q, %d bytes; want the %d bytes uploaded, from static", imageURL, resp.StatusCode, resp.Header.Get("X-Served-By"), len(body), len(img))
		}
		for _, asset := range regexp.MustCompile(`(?:src|href)="(`+regexp.QuoteMeta(base)+`/wp-includes/[^"?]+\.(?:js|css))`).FindAllStringSubmatch(body, 2) {
			resp, _ := do(t, "GET", asset[1], nil)
			if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "static" {
				t.Errorf("GET %s = %d from %q, want static", asset[1], resp.StatusCode, resp.Header.Get("X-Served-By"))
			}
		}
	})

	t.Run("https through the edge is https to WordPress", func(t *testing.T) {
		caPEM, err := os.ReadFile(filepath.Join("/var/lib/bulkhead", s.name, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
		resp, err := hc.Get("https://" + s.https + "/wp-login.php")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		// is_ssl(): the login form posts over https.
		if resp.StatusCode != 200 || !regexp.MustCompile(`<form name="loginform" id="loginform" action="https://`).Match(body) {
			t.Errorf("GET https://%s/wp-login.php = %d; want a form that posts over https:\n%.1500s", s.https, resp.StatusCode, body)
		}
	})

	t.Run("verify", func(t *testing.T) {
		s.run("verify")
	})
}

// memcachedStats asks the cache node's memcached for its counters, from
// inside the node, at its private address in the plan.
func (s *stack) memcachedStats(t *testing.T) map[string]int64 {
	t.Helper()
	var p struct {
		Nodes []struct {
			Name       string `json:"name"`
			Interfaces []struct {
				Network string `json:"network"`
				Addr    string `json:"addr"`
			} `json:"interfaces"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(s.json("plan", "--output", "json")), &p); err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, n := range p.Nodes {
		for _, i := range n.Interfaces {
			if n.Name == "cache" && i.Network == "private" {
				addr = i.Addr
			}
		}
	}
	if addr == "" {
		t.Fatal("no private address of the cache node in the plan")
	}
	out, err := s.in("cache", "bash", "-c", `exec 3<>/dev/tcp/`+addr+`/11211 && printf 'stats\r\nquit\r\n' >&3 && cat <&3`)
	if err != nil {
		t.Fatalf("memcached stats: %v\n%s", err, out)
	}
	stats := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		var k string
		var v int64
		if n, _ := fmt.Sscanf(strings.TrimSpace(line), "STAT %s %d", &k, &v); n == 2 {
			stats[k] = v
		}
	}
	if _, ok := stats["get_hits"]; !ok {
		t.Fatalf("memcached said no get_hits:\n%s", out)
	}
	return stats
}
