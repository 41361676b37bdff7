package render_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// execMarker is PHP that prints EXECUTED only if it runs: its source does
// not hold the word.
const execMarker = `<?php echo "EXEC"."UTED";` + "\n"

// front is the status of a page that the front controller, index.php,
// answered: the path named no file, so the app's own code ran, not the
// visitor's.
const front = 200

// writableCases are requests for PHP under a writable directory (uploads),
// in every form a server might be talked into running it: encodings,
// PATH_INFO, case, dot segments and doubled slashes. In a path, {w} is the
// writable directory, {W} the same with a capital first letter, {%w} with
// its first byte percent-encoded and {%%w} with that encoded twice.
//
// edge is what either edge answers. It never proxies such a request to an
// app node: it refuses PHP under a writable directory with 403, and a path
// that the edge and the node behind it could resolve differently (encoded
// dots, slashes or percent signs, dot segments) with 400.
//
// apache and nginx are what an app node answers when the request reaches it
// directly: 403 or 404, or the front controller's page when the path, as
// the server resolves it, names no file.
var writableCases = []struct {
	path          string
	edge          int
	apache, nginx int
}{
	{"/{w}/x.php", 403, 403, 403},
	{"/{%w}/x.php", 403, 403, 403},
	{"/{w}/x.php/", 403, 403, 403},
	{"/{w}/x.php/y.jpg", 403, 403, 403},
	{"/{w}/x.jpg/x.php", 403, 404, 403},
	{"/{w}/x.PHP", 403, 403, 403},
	{"/{w}/x.phtml", 403, 403, 403},
	{"/{w}/x.phar", 403, 403, 403},
	{"/{w}/x.php5", 403, 403, 403},
	{"/{W}/x.php", 403, front, front},
	{"//{w}/x.php", 403, 403, 403},
	{"/{%%w}/x.php", 400, front, front},
	{"/{w}%2fx.php", 400, 404, 403},
	{"/assets/../{w}/x.php", 400, 403, 403},
	{"/./{w}/x.php", 400, 403, 403},
	{"/{w}/%2e%2e/x.php", 400, front, front},
	{"/{W}/../x.php", 400, front, front},
}

// writablePath fills in writableCases' placeholders for writable directory w.
func writablePath(tmpl, w string) string {
	return strings.NewReplacer(
		"{%%w}", fmt.Sprintf("%%25%02x%s", w[0], w[1:]),
		"{%w}", fmt.Sprintf("%%%02x%s", w[0], w[1:]),
		"{W}", strings.ToUpper(w[:1])+w[1:],
		"{w}", w,
	).Replace(tmpl)
}

// rawGet sends "GET target" over a new connection to addr, over TLS if
// conf is not nil, with target exactly as written: net/http's client may
// clean or re-encode a path, and these tests need the bytes a hostile
// visitor would send.
func rawGet(t *testing.T, addr string, conf *tls.Config, target string) (*http.Response, string) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	if conf != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, conf)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return res, string(body)
}

// TestAppWritableNeverRunsPHP plants PHP in every writable directory of an
// app node, on the shared root, and asks for it in every form of
// writableCases: php-fpm must never run it, while the site's own pages and
// files, and the writable directories' files, still work. The site has no
// writable directory, not even a link: they are served from the shared
// root alone.
func TestAppWritableNeverRunsPHP(t *testing.T) {
	for _, c := range appCases {
		t.Run(c.stack+"/"+c.server, func(t *testing.T) {
			writable := appPlan(t, c.stack).Site.Writable
			site := map[string]string{
				"index.php":        `<?php echo "FRONT ", $_SERVER['REQUEST_URI'];`,
				"assets/style.css": "body{}\n",
			}
			shared := map[string]string{}
			for _, w := range writable {
				for _, name := range []string{"x.php", "x.PHP", "x.phtml", "x.phar", "x.php5", "x.jpg"} {
					shared[w+"/"+name] = execMarker
				}
			}
			a := startApp(t, c.stack, c.server, c.conf, c.edgeNet, site, shared)
			addr := strings.TrimPrefix(a.base, "http://")
			for _, w := range writable {
				if _, err := os.Lstat(filepath.Join(a.layout.Site, w)); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("the site has %s (%v); it must have no writable directory", w, err)
				}
				// A link that PHP made, as www-data, to a file it does not
				// own: no server follows it.
				link := filepath.Join(a.layout.Shared, w, "passwd.jpg")
				if err := os.Symlink("/etc/passwd", link); err != nil {
					t.Fatal(err)
				}
				if err := os.Lchown(link, a.www.uid, a.www.gid); err != nil {
					t.Fatal(err)
				}
			}

			for _, w := range writable {
				for _, tc := range writableCases {
					path := writablePath(tc.path, w)
					want := tc.apache
					if c.server == "nginx" {
						want = tc.nginx
					}
					res, body := rawGet(t, addr, nil, path)
					if strings.Contains(body, "EXECUTED") {
						t.Errorf("GET %s: %d, php-fpm ran the planted PHP", path, res.StatusCode)
						continue
					}
					if res.StatusCode != want || want == front && !strings.HasPrefix(body, "FRONT ") {
						t.Errorf("GET %s: %d %.60q, want %d", path, res.StatusCode, body, want)
					}
				}

				path := "/" + w + "/x.jpg"
				res, body := rawGet(t, addr, nil, path)
				if res.StatusCode != 200 || body != execMarker || res.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Errorf("GET %s: %d %q, nosniff %q; want its bytes as they are, with nosniff",
						path, res.StatusCode, body, res.Header.Get("X-Content-Type-Options"))
				}
				path = "/" + w + "/passwd.jpg"
				if res, body := rawGet(t, addr, nil, path); res.StatusCode != 403 && res.StatusCode != 404 || strings.Contains(body, "root:") {
					t.Errorf("GET %s: %d %.60q, want 403 or 404: the link is followed", path, res.StatusCode, body)
				}
			}

			for path, want := range map[string]string{"/": "FRONT /", "/index.php": "FRONT /index.php", "/assets/style.css": "body{}\n"} {
				if res, body := rawGet(t, addr, nil, path); res.StatusCode != 200 || body != want {
					t.Errorf("GET %s: %d %q, want 200 %q", path, res.StatusCode, body, want)
				}
			}
		})
	}
}

// TestEdgeWritableNeverReachesApp sends writableCases through each edge to
// fake app and static nodes: none may reach an app node, whatever the
// encoding, and the site's pages still go where they did.
func TestEdgeWritableNeverReachesApp(t *testing.T) {
	cases := []struct {
		stack, software string
		net             int
	}{{"default", "nginx", 10}, {"default", "haproxy", 11}, {"alt", "nginx", 12}, {"alt", "haproxy", 13}}
	for _, c := range cases {
		t.Run(c.stack+"/"+c.software, func(t *testing.T) {
			e := startEdge(t, c.stack, c.software, fmt.Sprintf("127.77.%d.", c.net*2), false)
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(e.secrets.TLSCert)
			for _, port := range []struct {
				addr string
				tls  *tls.Config
			}{
				{e.pub + ":80", nil},
				{e.pub + ":443", &tls.Config{RootCAs: roots, ServerName: "localhost"}},
			} {
				for _, w := range e.plan.Site.Writable {
					for _, tc := range writableCases {
						path := writablePath(tc.path, w)
						res, body := rawGet(t, port.addr, port.tls, path)
						by := res.Header.Get("X-Served-By")
						if strings.HasPrefix(by, "app-") {
							t.Errorf("%s %s: %d, proxied to %s as %s", port.addr, path, res.StatusCode, by, strings.TrimSpace(body))
							continue
						}
						if res.StatusCode != tc.edge {
							t.Errorf("%s %s: %d from %q, want %d from the edge", port.addr, path, res.StatusCode, by, tc.edge)
						}
					}
				}

				routes := map[string]string{"/": "app-", "/index.php": "app-", "/assets/style.css": "static"}
				for _, s := range e.plan.Site.Static {
					if strings.HasSuffix(s, "/") {
						routes[s+"x.jpg"] = "static"
					}
				}
				for path, want := range routes {
					res, _ := rawGet(t, port.addr, port.tls, path)
					if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("X-Served-By"), want) {
						t.Errorf("%s %s: %d from %q, want 200 from %s*", port.addr, path, res.StatusCode, res.Header.Get("X-Served-By"), want)
					}
				}
			}
		})
	}
}
