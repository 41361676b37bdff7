package render_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// staticListen is where the edge reaches the static node, as the plan's
// flows say.
func staticListen(t *testing.T, p *plan.Plan, n *plan.Node) (string, int) {
	t.Helper()
	for _, peer := range p.Peers(p.Role(spec.RoleEdge)[0]) {
		if peer.Node == n {
			return peer.Node.Addr(peer.Flow.Network).String(), peer.Flow.Port.Number
		}
	}
	t.Fatalf("the edge has no flow to %s", n.Name)
	return "", 0
}

func TestStaticLighttpdCheck(t *testing.T) {
	lighttpd := requireTool(t, "lighttpd")
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p, n := withSoftware(t, c, spec.RoleStatic, "lighttpd")
			out, l := writeNode(t, p, n.Name, testSecrets(p))
			confPath := filepath.Join(l.Conf, "lighttpd.conf")
			mustRun(t, lighttpd, "-t", "-f", confPath)
			if msg := mustRun(t, lighttpd, "-tt", "-f", confPath); strings.Contains(msg, "WARNING") {
				t.Errorf("lighttpd -tt warns:\n%s", msg)
			}
			if len(out.Services) != 1 || !slices.Equal(out.Services[0].Argv, []string{"lighttpd", "-D", "-f", confPath}) {
				t.Errorf("services = %+v, want lighttpd -D -f %s", out.Services, confPath)
			}
			conf := string(fileOf(t, out, "lighttpd.conf").Data)
			addr, port := staticListen(t, p, n)
			for _, want := range []string{
				fmt.Sprintf("server.bind = %q\n", addr),
				fmt.Sprintf("server.port = %d\n", port),
				fmt.Sprintf(`setenv.set-response-header = ( "X-Served-By" => %q )`, n.Name),
				`static-file.etags = "enable"`,
				fmt.Sprintf("server.document-root = %q\n", filepath.Join(l.Conf, "void")),
			} {
				if !strings.Contains(conf, want) {
					t.Errorf("config lacks %q", want)
				}
			}
			if got := regexp.MustCompile(`(?m)^\s*server\.(bind|port) `).FindAllString(conf, -1); len(got) != 2 {
				t.Errorf("config binds more than the edge-facing address: %q", got)
			}

			// The conditions that give the site as document root, the ones
			// inside them that give the shared root for the writable
			// directories, and the one that takes it away, as lighttpd's
			// PCRE would match them.
			var serve []*regexp.Regexp
			shared := 0
			for _, m := range regexp.MustCompile(`\$HTTP\["url"\] =~ "([^"]+)" \{\n\s*server\.document-root = "([^"]+)"`).FindAllStringSubmatch(conf, -1) {
				re := regexp.MustCompile(m[1])
				switch m[2] {
				case l.Site:
					serve = append(serve, re)
				case l.Shared:
					shared++
					for _, w := range p.Site.Writable {
						if path := "/" + w + "/a/photo.png"; !re.MatchString(path) {
							t.Errorf("%s is not served from the shared root by %s", path, m[1])
						}
						if path := "/" + strings.ToUpper(w) + "/photo.png"; re.MatchString(path) {
							t.Errorf("%s is served from the shared root by %s", path, m[1])
						}
					}
					for _, path := range []string{"/assets/app.css", "/photo.png"} {
						if re.MatchString(path) {
							t.Errorf("%s is served from the shared root by %s", path, m[1])
						}
					}
				case filepath.Join(l.Conf, "void"):
					for _, path := range []string{"/assets/x.php", "/assets/x.PHP", "/uploads/a/.htaccess", "/.env", "/.git/config", "/assets/", "/a.css~"} {
						if !re.MatchString(path) {
							t.Errorf("%s is not refused by %s", path, m[1])
						}
					}
					for _, path := range []string{"/assets/app.css", "/uploads/photo.png"} {
						if re.MatchString(path) {
							t.Errorf("%s is refused by %s", path, m[1])
						}
					}
				default:
					t.Errorf("unexpected document root %s", m[2])
				}
			}
			if want := len(serve); shared != want {
				t.Errorf("the shared root is set under %d conditions, want under each of the %d that serve the site", shared, want)
			}
			served := func(path string) bool {
				return slices.ContainsFunc(serve, func(re *regexp.Regexp) bool { return re.MatchString(path) })
			}
			for _, s := range p.Site.Static {
				path := strings.Replace(s, "*", "/a/b/name", 1) + "file"
				if e, ok := strings.CutPrefix(s, "*"); ok {
					path = "/a/b/name" + strings.ToUpper(e)
				}
				if !served(path) {
					t.Errorf("static path %s (%s) is not served", s, path)
				}
			}
			for _, path := range []string{"/", "/index.php", "/app/config.ini", "/assetsx/a.txt"} {
				if served(path) {
					t.Errorf("%s is served but is no static path", path)
				}
			}
			if fileOf(t, out, "healthz").Mode != 0o644 {
				t.Errorf("healthz is not world-readable")
			}
		})
	}
}

func TestStaticNginxCheck(t *testing.T) {
	nginx := requireTool(t, "nginx")
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p, n := withSoftware(t, c, spec.RoleStatic, "nginx")
			out, l := writeNode(t, p, n.Name, testSecrets(p))
			confPath := filepath.Join(l.Conf, "nginx.conf")
			if msg := runCheckBinding(t, nginx, "-t", "-c", confPath, "-e", "stderr"); strings.Contains(msg, "[warn]") {
				t.Errorf("nginx -t warns:\n%s", msg)
			}
			if len(out.Services) != 1 || !slices.Equal(out.Services[0].Argv, []string{"nginx", "-c", confPath, "-e", "stderr"}) {
				t.Errorf("services = %+v, want nginx -c %s -e stderr", out.Services, confPath)
			}
			conf := string(fileOf(t, out, "nginx.conf").Data)
			addr, port := staticListen(t, p, n)
			listens := regexp.MustCompile(`(?m)^\s*listen\s+(\S+)`).FindAllStringSubmatch(conf, -1)
			if len(listens) != 1 || listens[0][1] != net.JoinHostPort(addr, strconv.Itoa(port)) {
				t.Errorf("listens on %v, want only %s:%d", listens, addr, port)
			}
			if !strings.Contains(conf, fmt.Sprintf("add_header X-Served-By %q always;", n.Name)) {
				t.Errorf("no X-Served-By %s on every response", n.Name)
			}
			if loc := confBlocks(conf, "location / {"); len(loc) != 1 || !strings.Contains(loc[0], "return 404;") {
				t.Errorf("paths that are not static are not 404: %v", loc)
			}
			for _, s := range p.Site.Static {
				if strings.HasPrefix(s, "*") {
					continue
				}
				loc := confBlocks(conf, fmt.Sprintf("location ^~ %q {", s))
				if len(loc) != 1 || strings.Contains(loc[0], "return 404;\n\t\t}") || !strings.Contains(loc[0], "expires ") {
					t.Errorf("prefix %s is not served with an expiry: %v", s, loc)
				}
				if len(loc) == 1 && !strings.Contains(loc[0], "location ~* ") {
					t.Errorf("prefix %s does not refuse PHP and dotfiles inside it", s)
				}
			}
			m := regexp.MustCompile(`location ~\* "([^"]+)" \{\n\s*return 404;`).FindStringSubmatch(conf)
			if m == nil {
				t.Fatalf("no location refuses PHP and dotfiles")
			}
			re := regexp.MustCompile("(?i)" + m[1])
			for _, path := range []string{"/index.php", "/x.Php5", "/.env", "/uploads/.git/HEAD"} {
				if !re.MatchString(path) {
					t.Errorf("%s is not refused by %s", path, m[1])
				}
			}
		})
	}
}

// siteFiles are written into the site for the live checks, or into the
// shared root if they are under a writable directory: path and whether the
// static tier must serve it.
var siteFiles = []struct {
	path  string
	serve bool
}{
	{"assets/app.css", true},
	{"assets/img/logo.png", true},
	{"assets/x.php", false},
	{"assets/.env", false},
	{"assets/.git/config", false},
	{"assets/notes.txt", true}, // under a static prefix, any type
	{"uploads/photo.png", true},
	{"uploads/evil.php", false},
	{"media/photo.png", true},
	{"media/shell.phtml", false},
	{"var/cache/page.css", true}, // a glob under a writable directory (alt)
	{"Upper.CSS", true},          // globs ignore case
	{"index.php", false},
	{"config.ini", false},
	{"index.html", false},
	{"main.js.bak", false},
}

// TestStaticLive runs each static daemon on a loopback address over a
// sample site, whose writable directories are on the shared root alone,
// and checks with real requests that it serves the static paths, with
// caching headers and ETags, and nothing else.
//
// Caddy follows links (2.6.2, 2026-11) and has no setting to refuse them,
// so its cases plant none: only SFTP storage keeps clients from making one
// (storage-sshd_config.tmpl).
func TestStaticLive(t *testing.T) {
	hosttest.RequireRoot(t) // the daemons drop to www-data
	cases := []struct{ stack, software string }{
		{"default", "lighttpd"}, {"alt", "nginx"}, {"default", "nginx"}, {"alt", "lighttpd"}, {"default", "caddy"}, {"alt", "caddy"},
	}
	for i, c := range cases {
		t.Run(c.stack+"/"+c.software, func(t *testing.T) {
			requireTool(t, c.software)
			p, n := withSoftware(t, c.stack, spec.RoleStatic, c.software)
			addr := fmt.Sprintf("127.77.%d.1", 100+i)
			port := staticOnLoopback(t, p, n, addr)
			out, l := writeNode(t, p, n.Name, testSecrets(p))
			chownLayout(t, n, l)

			old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
			for _, f := range siteFiles {
				path := filepath.Join(l.Site, f.path)
				if writable(p, f.path) {
					path = filepath.Join(l.Shared, f.path)
				}
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte("content of "+f.path+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				// lighttpd sends no ETag for a file changed this second.
				os.Chtimes(path, old, old)
			}
			for _, w := range p.Site.Writable {
				if _, err := os.Lstat(filepath.Join(l.Site, w)); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("the site has %s (%v); it must have no writable directory", w, err)
				}
			}
			// Links to a file outside the site, which must not be served.
			var links []string
			if c.software != "caddy" {
				links = append(links, "assets/passwd.css")
				for _, w := range p.Site.Writable {
					links = append(links, w+"/passwd.css")
				}
			}
			for _, link := range links {
				path := filepath.Join(l.Site, link)
				if writable(p, link) {
					path = filepath.Join(l.Shared, link)
				}
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("/etc/passwd", path); err != nil {
					t.Fatal(err)
				}
			}

			svc := out.Services[0]
			if len(svc.Setup) > 0 {
				if _, err := os.Stat(svc.Creates); err == nil {
					t.Fatalf("setup's %s exists before setup", svc.Creates)
				}
				mustRun(t, svc.Setup...)
				if _, err := os.Stat(svc.Creates); err != nil {
					t.Fatalf("setup did not create %s: %v", svc.Creates, err)
				}
			}
			// By path: the daemons are in sbin, which a test's PATH may lack.
			d := startDaemon(t, append([]string{requireTool(t, svc.Argv[0])}, svc.Argv[1:]...)...)
			hostport := net.JoinHostPort(addr, strconv.Itoa(port))
			d.waitDial(t, hostport)
			checkStaticLive(t, p, n, "http://"+hostport, links)
		})
	}
}

// staticOnLoopback gives static node n the loopback address addr, and a
// port free there, where the edge reaches it, as if it had been planned
// so, and returns the port.
func staticOnLoopback(t *testing.T, p *plan.Plan, n *plan.Node, addr string) int {
	t.Helper()
	edge := p.Role(spec.RoleEdge)[0]
	port := freePort(t, addr)
	for j := range p.Flows {
		if f := &p.Flows[j]; f.From == edge.Tier && f.To == n.Tier {
			moveToLoopback(p, n, f.Network, addr)
			f.Port.Number = port
		}
	}
	n.Listens = []plan.Port{{Proto: "tcp", Number: port}}
	return port
}

// writable says whether a path of the site is under a writable directory,
// which the shared root holds.
func writable(p *plan.Plan, path string) bool {
	return slices.ContainsFunc(p.Site.Writable, func(w string) bool { return strings.HasPrefix(path, w+"/") })
}

func checkStaticLive(t *testing.T, p *plan.Plan, n *plan.Node, base string, links []string) {
	client := &http.Client{Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Served-By"); got != n.Name {
			t.Errorf("%s %s: X-Served-By %q, want %q", method, path, got, n.Name)
		}
		return resp, string(body)
	}
	static := func(path string) bool {
		for _, s := range p.Site.Static {
			if e, ok := strings.CutPrefix(s, "*"); ok && strings.HasSuffix(strings.ToLower(path), e) || strings.HasPrefix("/"+path, s) {
				return true
			}
		}
		return false
	}
	upload := func(path string) bool {
		return slices.ContainsFunc(p.Site.Writable, func(w string) bool {
			return strings.HasPrefix(path, w+"/") && slices.Contains(p.Site.Static, "/"+w+"/")
		})
	}
	for _, f := range siteFiles {
		resp, body := do("GET", "/"+f.path)
		want := f.serve && static(f.path)
		if got := resp.StatusCode == 200; got != want {
			t.Errorf("GET /%s: %d, want served=%v", f.path, resp.StatusCode, want)
			continue
		}
		if !want {
			if resp.StatusCode != 404 || strings.Contains(body, "content of") {
				t.Errorf("GET /%s: %d, want 404 without the file", f.path, resp.StatusCode)
			}
			continue
		}
		age := "max-age=3600"
		if upload(f.path) {
			age = "max-age=600"
		}
		if cc := resp.Header.Get("Cache-Control"); cc != age {
			t.Errorf("GET /%s: Cache-Control %q, want %q", f.path, cc, age)
		}
		if resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
			t.Errorf("GET /%s: no ETag or Last-Modified", f.path)
		}
		if strings.HasSuffix(f.path, ".css") && resp.Header.Get("Content-Type") != "text/css; charset=utf-8" {
			t.Errorf("GET /%s: Content-Type %q", f.path, resp.Header.Get("Content-Type"))
		}
		if strings.HasSuffix(f.path, ".png") && resp.Header.Get("Content-Type") != "image/png" {
			t.Errorf("GET /%s: Content-Type %q", f.path, resp.Header.Get("Content-Type"))
		}
		if s := resp.Header.Get("Server"); regexp.MustCompile(`\d`).MatchString(s) {
			t.Errorf("GET /%s: Server %q tells the version", f.path, s)
		}
		if etag := resp.Header.Get("ETag"); etag != "" {
			req, _ := http.NewRequest("GET", base+"/"+f.path, nil)
			req.Header.Set("If-None-Match", etag)
			r, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusNotModified {
				t.Errorf("GET /%s with its ETag: %d, want 304", f.path, r.StatusCode)
			}
		}
	}
	refused := []string{"/", "/assets/", "/assets/img", "/assets/app.css/x.css", "/assets/../index.php", "/assets/%2e%2e/index.php", "/ASSETS/app.css"}
	for _, link := range links {
		refused = append(refused, "/"+link)
	}
	for _, path := range refused {
		if resp, body := do("GET", path); resp.StatusCode == 200 || strings.Contains(body, "root:") || strings.Contains(body, "content of") {
			t.Errorf("GET %s: %d %q, want it refused", path, resp.StatusCode, body)
		}
	}
	if resp, _ := do("POST", "/assets/app.css"); resp.StatusCode == 200 {
		t.Errorf("POST /assets/app.css: 200, want it refused")
	}
	if resp, body := do("GET", "/healthz"); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
	}
}

// TestStaticPathVariants renders the edge and static configs for unusual
// site.static lists (everything static, prefixes or globs only, nothing
// static, duplicates) and runs every daemon's check on them.
func TestStaticPathVariants(t *testing.T) {
	cases := []struct {
		name, static string
		toStatic     []string // nginx edge locations that must go to static
		toApp        bool     // whether "location /" goes to app
		roots        int      // lighttpd conditions that serve the site
	}{
		{"all", `["/"]`, nil, false, 1},
		{"prefix-only", `["/assets/", "/assets/", "/a.b/"]`, []string{`location ^~ "/assets/" {`, `location ^~ "/a.b/" {`}, true, 1},
		{"glob-only", `["*.css", "*.JS"]`, []string{`location ~* "\.(?:css|js)$" {`}, true, 1},
		{"none", `[]`, nil, true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := "tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 2}\nsite:\n  static: " + c.static + "\n"
			st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := plan.Build(st)
			if err != nil {
				t.Fatal(err)
			}
			edge, static := p.Role(spec.RoleEdge)[0], p.Role(spec.RoleStatic)[0]
			sec := tlsSecrets(t, p)

			if tool := requireTool(t, "nginx"); tool != "" {
				edge.Software, static.Software = "nginx", "nginx"
				n, l := writeNode(t, p, edge.Name, sec)
				runCheckBinding(t, tool, "-t", "-c", filepath.Join(l.Conf, "nginx.conf"), "-e", "stderr")
				https := serverOn(t, string(fileOf(t, n, "nginx.conf").Data), edge.Addr(plan.NetPublic).String()+":443")
				for _, loc := range c.toStatic {
					if b := confBlocks(https, loc); len(b) != 1 || !strings.Contains(b[0], "http://static;") {
						t.Errorf("edge: %s does not go to static once: %v", loc, b)
					}
				}
				if got := strings.Count(https, "location "); got != len(c.toStatic)+1 {
					t.Errorf("edge has %d locations, want %d:\n%s", got, len(c.toStatic)+1, https)
				}
				if b := confBlocks(https, "location / {"); len(b) != 1 || strings.Contains(b[0], "http://app;") != c.toApp {
					t.Errorf("edge: location / goes to app=%v, want %v", !c.toApp, c.toApp)
				}
				_, l = writeNode(t, p, static.Name, sec)
				runCheckBinding(t, tool, "-t", "-c", filepath.Join(l.Conf, "nginx.conf"), "-e", "stderr")
			}
			if tool := requireTool(t, "haproxy"); tool != "" {
				edge.Software = "haproxy"
				n, l := writeNode(t, p, edge.Name, sec)
				mustRun(t, tool, "-c", "-f", filepath.Join(l.Conf, "haproxy.cfg"))
				fe := haproxySection(t, string(fileOf(t, n, "haproxy.cfg").Data), "frontend web")
				if want := map[bool]string{true: "default_backend app", false: "default_backend static"}[c.toApp]; !strings.Contains(fe, want) {
					t.Errorf("edge: frontend lacks %q:\n%s", want, fe)
				}
				if got, want := strings.Count(fe, "use_backend static"), min(len(c.toStatic), 1); got != want {
					t.Errorf("edge: %d use_backend static lines, want %d:\n%s", got, want, fe)
				}
			}
			if tool := requireTool(t, "lighttpd"); tool != "" {
				static.Software = "lighttpd"
				n, l := writeNode(t, p, static.Name, sec)
				mustRun(t, tool, "-tt", "-f", filepath.Join(l.Conf, "lighttpd.conf"))
				conf := string(fileOf(t, n, "lighttpd.conf").Data)
				if got, want := strings.Count(conf, "server.document-root = "+strconv.Quote(l.Site)), c.roots; got != want {
					t.Errorf("static: the site is the document root under %d conditions, want %d:\n%s", got, want, conf)
				}
			}
			if tool := requireTool(t, "caddy"); tool != "" {
				static.Software = "caddy"
				n, l := writeNode(t, p, static.Name, sec)
				caddyRun(t, tool, l, "validate")
				conf := string(fileOf(t, n, "Caddyfile").Data)
				if got, want := strings.Count(conf, "file_server {"), c.roots; got != want {
					t.Errorf("static: caddy serves the site %d times, want %d:\n%s", got, want, conf)
				}
			}
		})
	}
}
