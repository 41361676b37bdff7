package sample

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// served reports whether the edge sends urlPath to the static node, by the
// rules of site.static: a prefix ending in "/" or an extension glob.
func served(static []string, urlPath string) bool {
	for _, s := range static {
		if strings.HasSuffix(s, "/") && strings.HasPrefix(urlPath, s) {
			return true
		}
		if ext, ok := strings.CutPrefix(s, "*"); ok && strings.HasSuffix(urlPath, ext) {
			return true
		}
	}
	return false
}

// TestSiteSplit checks the sample against the default static paths: every
// asset is served by the static node, and no PHP file is, since the static
// node would hand out its source.
func TestSiteSplit(t *testing.T) {
	static := spec.Default().Site.Static
	for _, rel := range embeddedSite(t) {
		urlPath := strings.TrimPrefix(rel, "site")
		isPHP := path.Ext(rel) == ".php"
		if got := served(static, urlPath); got == isPHP {
			t.Errorf("%s: served by static = %v", urlPath, got)
		}
	}
	// The page's own links must be static paths too.
	for _, p := range []string{"/assets/style.css", "/assets/app.js", "/assets/logo.svg", "/uploads/0123.png"} {
		if !served(static, p) {
			t.Errorf("%s is not a static path", p)
		}
	}
}

// requirePHP returns the php binary (see hosttest.Require).
func requirePHP(t *testing.T) string {
	t.Helper()
	php, err := exec.LookPath("php")
	hosttest.Require(t, err == nil, "php (apt-get install php8.2-cli): %v", err)
	return php
}

func TestPHPLint(t *testing.T) {
	php := requirePHP(t)
	dir := t.TempDir()
	if _, err := Write(dir, false); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rel := range embeddedSite(t) {
		if path.Ext(rel) != ".php" {
			continue
		}
		n++
		out, err := exec.Command(php, "-l", filepath.Join(dir, filepath.FromSlash(rel))).CombinedOutput()
		if err != nil {
			t.Errorf("php -l %s: %v\n%s", rel, err, out)
		}
	}
	if n == 0 {
		t.Error("no PHP files embedded")
	}
}

// TestSiteWithoutPeers runs the site on PHP's built-in server with the db
// and the cache unreachable: the paths that need neither must work, and
// the ones that do must fail quickly and without leaking details.
func TestSiteWithoutPeers(t *testing.T) {
	php := requirePHP(t)
	dir := t.TempDir()
	if _, err := Write(dir, false); err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(dir, "site")
	uploads := filepath.Join(site, "uploads")
	password := filepath.Join(dir, "db-password")
	os.WriteFile(password, []byte("secret\n"), 0o600)

	addr := freeAddr(t)
	dead := freeAddr(t) // nothing listens: connections are refused
	_, deadPort, _ := net.SplitHostPort(dead)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, php, "-S", addr, "index.php")
	cmd.Dir = site
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DB_DRIVER=mysql", "DB_HOST=127.0.0.1", "DB_PORT=" + deadPort, "DB_NAME=site", "DB_USER=site",
		"DB_PASSWORD_FILE=" + password,
		"CACHE_DRIVER=memcached", "CACHE_HOST=127.0.0.1", "CACHE_PORT=" + deadPort,
		"NODE_NAME=app-7", "UPLOAD_DIR=" + uploads,
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("php -S log:\n%s", log.String())
		}
	})
	waitListening(t, addr)

	base := "http://" + addr
	jar := &cookieJar{}
	client := &http.Client{
		Timeout:       10 * time.Second,
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(p string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	t.Run("healthz", func(t *testing.T) {
		start := time.Now()
		resp, body := get("/healthz")
		if d := time.Since(start); d > 3500*time.Millisecond {
			t.Errorf("healthz took %v with dead peers, want about 3 s at most", d)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", resp.StatusCode)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		want := map[string]string{"status": "fail", "db": "fail", "cache": "fail", "node": "app-7"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("body %v, want %v", got, want)
		}
	})

	t.Run("index without db", func(t *testing.T) {
		resp, body := get("/")
		if resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("status %d, want 500", resp.StatusCode)
		}
		for _, leak := range []string{"PDO", "SQLSTATE", "refused", "Memcached", deadPort, ".php"} {
			if strings.Contains(body, leak) {
				t.Errorf("the 500 page shows %q to visitors:\n%s", leak, body)
			}
		}
		if !strings.Contains(body, "served by app-7") {
			t.Error("the page does not say which node served it")
		}
	})

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/uploads/x.png", 404},
		{"GET", "/lib/db.php", 404}, // the built-in server routes everything to index.php
		{"GET", "/nope", 404},
		{"POST", "/", 405},
		{"GET", "/posts", 405},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}

	pngBytes := func() []byte {
		var b bytes.Buffer
		png.Encode(&b, image.NewRGBA(image.Rect(0, 0, 2, 2)))
		return b.Bytes()
	}()
	post := func(t *testing.T, token string, fields map[string]string, file string, data []byte) (*http.Response, string) {
		t.Helper()
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		for k, v := range fields {
			w.WriteField(k, v)
		}
		if token != "" {
			w.WriteField("csrf", token)
		}
		if file != "" {
			fw, _ := w.CreateFormFile("image", file)
			fw.Write(data)
		}
		w.Close()
		resp, err := client.Post(base+"/posts", w.FormDataContentType(), &b)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	// Without a db, GET / fails before it can hand out a token, so hold one
	// the way a browser that loaded the form earlier would.
	token := strings.Repeat("ab", 32)
	jar.set(token)

	for _, tc := range []struct {
		name   string
		token  string
		fields map[string]string
		file   string
		data   []byte
		status int
		want   string
	}{
		{"no token", "", map[string]string{"title": "t"}, "", nil, 403, "form has expired"},
		{"wrong token", strings.Repeat("cd", 32), map[string]string{"title": "t"}, "", nil, 403, "form has expired"},
		{"no title", token, map[string]string{"title": "  ", "body": "<script>alert(1)</script>"}, "", nil, 400, "Give the post a title"},
		{"long title", token, map[string]string{"title": strings.Repeat("é", 201)}, "", nil, 400, "201 characters"},
		{"not utf-8", token, map[string]string{"title": "\xff"}, "", nil, 400, "UTF-8"},
		{"text as png", token, map[string]string{"title": "t"}, "x.png", []byte("<?php echo 1;"), 400, "must be a PNG, JPEG, GIF or WebP"},
		{"svg", token, map[string]string{"title": "t"}, "x.svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), 400, "must be a PNG"},
		{"png, db down", token, map[string]string{"title": "t"}, "x.png", pngBytes, 500, "could not answer"},
	} {
		t.Run("post "+tc.name, func(t *testing.T) {
			resp, body := post(t, tc.token, tc.fields, tc.file, tc.data)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !strings.Contains(body, tc.want) {
				t.Errorf("body does not say %q:\n%s", tc.want, body)
			}
			if strings.Contains(body, "<script>") {
				t.Errorf("body echoes markup unescaped:\n%s", body)
			}
			if tc.status == 400 && !strings.Contains(body, `name="csrf" value="`+token+`"`) {
				t.Error("the 400 page does not send the form back")
			}
		})
	}
	// The PNG passed the checks and was stored, then the insert failed: it
	// must be gone again, and no temporary file may be left behind.
	entries, _ := os.ReadDir(uploads)
	for _, e := range entries {
		t.Errorf("uploads holds %s after a failed post", e.Name())
	}
}

// cookieJar holds the one cookie the site sets, the CSRF token.
type cookieJar struct{ token string }

func (j *cookieJar) set(token string) { j.token = token }

func (j *cookieJar) SetCookies(u *url.URL, cookies []*http.Cookie) {
	for _, c := range cookies {
		if c.Name == "csrf" {
			j.token = c.Value
		}
	}
}

func (j *cookieJar) Cookies(*url.URL) []*http.Cookie {
	if j.token == "" {
		return nil
	}
	return []*http.Cookie{{Name: "csrf", Value: j.token}}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	hosttest.Eventually(t, 10*time.Second, "php -S listening on "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
}
