package render_test

import (
	"bytes"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// appCases are the two app variants: apache2 in the default stack, nginx
// (behind a DMZ) in the alt stack.
var appCases = []struct {
	stack, server, conf string
	edgeNet             string // the network the edge reaches app nodes on
}{
	{"default", "apache2", "apache2.conf", plan.NetPrivate},
	{"alt", "nginx", "nginx.conf", plan.NetDMZ},
	{"default+monitor", "apache2", "apache2.conf", plan.NetPrivate},
}

// appPlan is the plan of an app case's stack: a stack of testdata, or
// with "+monitor" the default stack with a monitor, whose app nodes serve
// a status server (the alt stack has one too).
func appPlan(t *testing.T, stack string) *plan.Plan {
	t.Helper()
	if stack == "default+monitor" {
		return planFrom(t, []byte("name: demo\ntiers:\n  edge: {}\n  static: {}\n  app: {replicas: 2}\n  cache: {}\n  db: {}\n  storage: {}\n  monitor: {}\n"))
	}
	return loadPlan(t, stack)
}

// TestAppConfigCheck runs each web server's and php-fpm's own offline check
// on the rendered configs.
func TestAppConfigCheck(t *testing.T) {
	for _, c := range appCases {
		t.Run(c.stack+"/"+c.server, func(t *testing.T) {
			p := appPlan(t, c.stack)
			n, l := writeNode(t, p, p.Role(spec.RoleApp)[0].Name, testSecrets(p))
			fpm := requireTool(t, "php-fpm8.2")
			web := requireTool(t, c.server)
			conf := filepath.Join(l.Conf, c.conf)
			var argv []string
			switch c.server {
			case "apache2":
				argv = []string{web, "-t", "-f", conf}
			case "nginx":
				// nginx -t binds its listen addresses, so check it in a
				// network namespace of its own that has the node's address
				// and no other: unlike runCheckBinding, this also fails a
				// config that listens where the node has no address.
				requireTool(t, "unshare")
				requireTool(t, "ip")
				addr := p.Role(spec.RoleApp)[0].Addr(c.edgeNet)
				argv = []string{"unshare", "--net", "--", "sh", "-ec",
					`ip link set lo up; ip addr add "$1/32" dev lo; shift; exec "$@"`,
					"sh", addr.String(), web, "-t", "-c", conf, "-e", filepath.Join(l.Log, "nginx-error.log")}
			}
			mustRun(t, argv...)
			mustRun(t, fpm, "-t", "-y", filepath.Join(l.Conf, "php-fpm.conf"))
			want := "php-fpm " + c.server
			if e := p.Role(spec.RoleApp)[0].Exporter; e != nil {
				want = "php-fpm " + strings.TrimPrefix(e.Package, "prometheus-") + " " + c.server
			}
			if got := appServiceNames(n); got != want {
				t.Errorf("services = %q, want %q", got, want)
			}
		})
	}
}

// TestAppFacts checks what the configs must say, whatever their syntax.
func TestAppFacts(t *testing.T) {
	for _, c := range appCases {
		t.Run(c.stack, func(t *testing.T) {
			p := appPlan(t, c.stack)
			n, l := writeNode(t, p, p.Role(spec.RoleApp)[0].Name, testSecrets(p))
			node := p.Role(spec.RoleApp)[0]
			web := string(fileOf(t, n, c.conf).Data)
			fpm := string(fileOf(t, n, "php-fpm.conf").Data)

			// It listens on its address on the edge's network, and nowhere else.
			var edgeFlow *plan.Flow
			for i, f := range p.Flows {
				if f.To == node.Tier && p.Tier(f.From)[0].Role == spec.RoleEdge {
					edgeFlow = &p.Flows[i]
				}
			}
			if edgeFlow == nil || edgeFlow.Network != c.edgeNet {
				t.Fatalf("edge -> app flow = %+v, want one on %s", edgeFlow, c.edgeNet)
			}
			want := node.Addr(c.edgeNet).String() + ":80"
			listenRE := regexp.MustCompile(`(?m)^\s*(?:Listen|listen)\s+([^\s;]+)`)
			var listens []string
			for _, m := range listenRE.FindAllStringSubmatch(web, -1) {
				listens = append(listens, m[1])
			}
			wantListens := []string{want}
			if e := node.Exporter; e != nil {
				// With a monitor, the status server, on the loopback.
				wantListens = append(wantListens, e.Status.String())
			}
			if !slices.Equal(listens, wantListens) {
				t.Errorf("%s listens on %v, want only %v", c.conf, listens, wantListens)
			}

			// PHP finds the database at the db node's address on the app's
			// flow to it.
			db := p.Role(spec.RoleDB)[0]
			var dbNet string
			for _, peer := range p.Peers(node) {
				if peer.Node == db {
					dbNet = peer.Flow.Network
				}
			}
			env := fpmEnv(fpm)
			if got, want := env["DB_HOST"], db.Addr(dbNet).String(); dbNet == "" || got != want {
				t.Errorf("DB_HOST = %q, want %q (db on %q)", got, want, dbNet)
			}
			if got := env["DB_PASSWORD_FILE"]; got != filepath.Join(l.Conf, "secrets", "db_password") {
				t.Errorf("DB_PASSWORD_FILE = %q", got)
			}
			if got := env["NODE_NAME"]; got != node.Name {
				t.Errorf("NODE_NAME = %q, want %q", got, node.Name)
			}
			if got, want := env["UPLOAD_DIR"], filepath.Join(l.Shared, p.Site.Writable[0]); got != want {
				t.Errorf("UPLOAD_DIR = %q, want %q on the shared storage", got, want)
			}

			// The web server hands PHP to the socket php-fpm listens on.
			sock := regexp.MustCompile(`(?m)^listen = "([^"]+)"`).FindStringSubmatch(fpm)
			if sock == nil || !strings.HasPrefix(sock[1], l.Run+"/") {
				t.Fatalf("php-fpm listens on %v, want a socket under %s", sock, l.Run)
			}
			handler := map[string]string{
				"apache2": `SetHandler "proxy:unix:` + sock[1] + `|fcgi://localhost"`,
				"nginx":   `fastcgi_pass "unix:` + sock[1] + `";`,
			}[c.server]
			if !strings.Contains(web, handler) {
				t.Errorf("%s does not pass PHP to php-fpm's socket: no %s", c.conf, handler)
			}

			if !regexp.MustCompile(`(?m)^\s*(Header always set|add_header) X-Served-By "` + node.Name + `"( always;)?$`).MatchString(web) {
				t.Errorf("%s does not set X-Served-By %s", c.conf, node.Name)
			}

			// The password is only in its secrets file, which www-data reads
			// by group.
			pw := testSecrets(p).DBPassword
			for _, f := range n.Files {
				has := strings.Contains(string(f.Data), pw)
				if f.Path == "secrets/db_password" {
					if !has || f.Mode != 0o440 {
						t.Errorf("secrets/db_password: mode %o, holds password %v", f.Mode, has)
					}
				} else if has {
					t.Errorf("%s holds the DB password", f.Path)
				}
			}
		})
	}
}

// TestAppWithoutDataTiers renders an app in a stack with no db and no
// cache: PHP is told of neither, no password file is written, and sessions
// fall back to files on the node's tmpfs.
func TestAppWithoutDataTiers(t *testing.T) {
	st, err := spec.Parse("lean.yaml", []byte("name: lean\ntiers:\n  edge: {}\n  app: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate(st, spec.Env{}); err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	l := render.DefaultLayout()
	n, err := render.RenderNode(p, p.Role(spec.RoleApp)[0], render.Input{Layout: l, Secrets: testSecrets(p)})
	if err != nil {
		t.Fatal(err)
	}
	fpm := string(fileOf(t, n, "php-fpm.conf").Data)
	for name := range fpmEnv(fpm) {
		if strings.HasPrefix(name, "DB_") || strings.HasPrefix(name, "CACHE_") {
			t.Errorf("php-fpm.conf sets %s without a db or cache tier", name)
		}
	}
	for _, f := range n.Files {
		if strings.HasPrefix(f.Path, "secrets/") {
			t.Errorf("%s rendered without a db tier", f.Path)
		}
	}
	sessions := l.Run + "/php-sessions"
	if !strings.Contains(fpm, "php_admin_value[session.save_handler] = files\n") || !strings.Contains(fpm, `php_admin_value[session.save_path] = "`+sessions+`"`) {
		t.Errorf("sessions are not files under %s", sessions)
	}
	if fpmSvc := n.Services[0]; !slices.Contains(fpmSvc.Setup, sessions) || fpmSvc.Creates == "" {
		t.Errorf("php-fpm setup %q does not create %s", fpmSvc.Setup, sessions)
	}
}

// TestAppRefusesUnquotablePaths renders with a layout path that would
// break out of a quoted config value and expects an error, not a config.
func TestAppRefusesUnquotablePaths(t *testing.T) {
	p := loadPlan(t, "default")
	for _, dir := range []string{`/srv/si"te`, "/srv/$site", "/srv/site\nUser root"} {
		for name, set := range map[string]func(*render.Layout){
			"site":   func(l *render.Layout) { l.Site = dir },
			"shared": func(l *render.Layout) { l.Shared = dir },
		} {
			l := render.DefaultLayout()
			set(&l)
			if _, err := render.RenderNode(p, p.Role(spec.RoleApp)[0], render.Input{Layout: l, Secrets: testSecrets(p)}); err == nil {
				t.Errorf("%s %q: rendered without error", name, dir)
			}
		}
	}
}

// TestAppServes runs php-fpm and the web server for real on loopback, with
// a tiny front controller, and checks what a visitor would see.
func TestAppServes(t *testing.T) {
	for _, c := range appCases {
		t.Run(c.stack+"/"+c.server, func(t *testing.T) {
			w := appPlan(t, c.stack).Site.Writable[0]
			index := `<?php
header('Content-Type: text/plain');
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
	$ok = move_uploaded_file($_FILES['f']['tmp_name'], getenv('UPLOAD_DIR') . '/upload.txt');
	echo $ok ? "stored" : "failed", "\n";
	$ok = @file_put_contents(__DIR__ . '/` + w + `/linked.txt', "written through the link\n");
	echo $ok ? "linked" : "failed", "\n";
	exit;
}
if (isset($_GET['mail'])) {
	echo mail('admin@example.com', 'Welcome', "Your new site.\n", 'From: site@example.com') ? "sent" : "failed", "\n";
	exit;
}
if (isset($_GET['who'])) {
	echo $_SERVER['REMOTE_ADDR'], ' ', $_SERVER['HTTPS'] ?? 'http', ' ', $_SERVER['HTTP_HOST'], "\n";
	exit;
}
echo getenv('NODE_NAME'), "\n";
echo $_SERVER['REQUEST_URI'], "\n";
echo file_get_contents(getenv('DB_PASSWORD_FILE')), "\n";
echo @file_get_contents('/etc/passwd') === false ? "basedir" : "open", "\n";
echo function_exists('exec') ? "exec" : "noexec", "\n";
`
			a := startApp(t, c.stack, c.server, c.conf, c.edgeNet, map[string]string{"index.php": index, ".env": "SECRET=1\n"}, nil)
			p, node, base := a.plan, a.node, a.base
			// The link a release holds to its writable path, for PHP.
			shared := filepath.Join(a.layout.Shared, w)
			if err := os.Symlink(shared, filepath.Join(a.layout.Site, w)); err != nil {
				t.Fatal(err)
			}

			pw := testSecrets(p).DBPassword
			for _, path := range []string{"/", "/healthz", "/missing.php"} {
				res, body := appGet(t, base+path)
				want := node.Name + "\n" + path + "\n" + pw + "\nbasedir\nnoexec\n"
				if res.StatusCode != 200 || body != want {
					t.Errorf("GET %s: %d %q, want 200 %q", path, res.StatusCode, body, want)
				}
				if got := res.Header.Get("X-Served-By"); got != node.Name {
					t.Errorf("GET %s: X-Served-By %q, want %q", path, got, node.Name)
				}
				if got := res.Header.Get("X-Powered-By"); got != "" {
					t.Errorf("GET %s: X-Powered-By %q reveals PHP", path, got)
				}
				// Apache buffers PHP's answer and sends it whole, with its
				// length, not in chunks.
				if c.server == "apache2" && (res.ContentLength != int64(len(body)) || len(res.TransferEncoding) > 0) {
					t.Errorf("GET %s: Content-Length %d, Transfer-Encoding %v for a %d-byte answer, want it whole", path, res.ContentLength, res.TransferEncoding, len(body))
				}
			}
			// The visitor's address and scheme, and Host with its port,
			// as the edge says, but only from the edge's own address.
			for _, from := range []struct{ addr, want string }{
				{appEdge, "203.0.113.9 on shop.test:19140\n"},
				{"127.0.0.1", "127.0.0.1 http shop.test:19140\n"},
			} {
				req, _ := http.NewRequest("GET", base+"/?who", nil)
				req.Host = "shop.test:19140"
				req.Header.Set("X-Forwarded-For", "203.0.113.9")
				req.Header.Set("X-Forwarded-Proto", "https")
				client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
					LocalAddr: &net.TCPAddr{IP: net.ParseIP(from.addr)}}).DialContext}}
				res, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(body) != from.want {
					t.Errorf("from %s, PHP saw %q, want %q", from.addr, body, from.want)
				}
			}

			// mail() succeeds, and the message is in php-fpm's log.
			if res, body := appGet(t, base+"/?mail"); res.StatusCode != 200 || body != "sent\n" {
				t.Errorf("mail(): %d %q, want sent", res.StatusCode, body)
			}
			want := `sendmail: kept, not sent (no mail tier): from "site@example.com" to "admin@example.com" subject "Welcome"`
			var fpmLog []byte
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				fpmLog, _ = os.ReadFile(filepath.Join(a.layout.Log, "php-fpm.log"))
				if bytes.Contains(fpmLog, []byte("sendmail| Your new site.")) {
					break
				}
			}
			if !bytes.Contains(fpmLog, []byte(want)) || !bytes.Contains(fpmLog, []byte("sendmail| Your new site.\n")) {
				t.Errorf("php-fpm's log lacks the message:\n%s", fpmLog)
			}

			// An upload passes through PHP's temp dir into UPLOAD_DIR, on
			// the shared storage, and is served back from there. PHP may
			// also write through the site's link to it.
			var form bytes.Buffer
			mw := multipart.NewWriter(&form)
			fw, _ := mw.CreateFormFile("f", "hello.txt")
			fw.Write([]byte("uploaded bytes\n"))
			mw.Close()
			up, err := (&http.Client{Timeout: 30 * time.Second}).Post(base+"/upload", mw.FormDataContentType(), &form)
			if err != nil {
				t.Fatal(err)
			}
			upBody, _ := io.ReadAll(up.Body)
			up.Body.Close()
			stored, _ := os.ReadFile(filepath.Join(shared, "upload.txt"))
			linked, _ := os.ReadFile(filepath.Join(shared, "linked.txt"))
			if string(upBody) != "stored\nlinked\n" || string(stored) != "uploaded bytes\n" || string(linked) != "written through the link\n" {
				t.Errorf("upload: %d %q, files %q and %q", up.StatusCode, upBody, stored, linked)
			}
			if res, body := appGet(t, base+"/"+w+"/upload.txt"); res.StatusCode != 200 || body != "uploaded bytes\n" {
				t.Errorf("GET /%s/upload.txt: %d %q, want the uploaded bytes", w, res.StatusCode, body)
			}

			// With a monitor, the status server on the loopback serves the
			// web server's status and php-fpm's, and nothing of the site;
			// the site's address serves neither.
			if a.status != "" {
				page := map[string]string{"apache2": "/server-status?auto", "nginx": "/stub_status"}[c.server]
				figure := map[string]string{"apache2": "BusyWorkers: ", "nginx": "Active connections: "}[c.server]
				for _, g := range []struct{ url, want string }{
					{"http://" + a.status + page, figure},
					{"http://" + a.status + "/fpm-status?json", `"accepted conn":`},
				} {
					if res, body := appGet(t, g.url); res.StatusCode != 200 || !strings.Contains(body, g.want) {
						t.Errorf("GET %s: %d %q, want 200 with %q", g.url, res.StatusCode, body, g.want)
					}
				}
				if res, body := appGet(t, "http://"+a.status+"/index.php"); res.StatusCode == 200 || strings.Contains(body, node.Name) {
					t.Errorf("the status server served the site: %d %q", res.StatusCode, body)
				}
				// The scrapes are not the site's traffic: the access log
				// leaves them out.
				accessLog, _ := os.ReadFile(filepath.Join(a.layout.Log, c.server+"-access.log"))
				if bytes.Contains(accessLog, []byte("status")) {
					t.Errorf("the access log has the status server's requests:\n%s", accessLog)
				}
				for _, path := range []string{page, "/fpm-status?json"} {
					if _, body := appGet(t, base+path); strings.Contains(body, "accepted conn") || strings.Contains(body, figure) {
						t.Errorf("the site's address serves %s: %q", path, body)
					}
				}

			}

			res, body := appGet(t, base+"/.env")
			if res.StatusCode != 403 || strings.Contains(body, "SECRET") {
				t.Errorf("GET /.env: %d %q, want 403", res.StatusCode, body)
			}
			if got := res.Header.Get("X-Served-By"); got != node.Name {
				t.Errorf("GET /.env: X-Served-By %q on an error, want %q", got, node.Name)
			}
		})
	}
}

// appEdge is the edge's address in startApp's configs.
const appEdge = "127.0.0.2"

// liveApp is an app node that startApp runs on loopback.
type liveApp struct {
	plan   *plan.Plan
	node   *plan.Node
	layout render.Layout
	base   string // "http://127.0.0.1:PORT"
	status string // the status server's address, with a monitor
	www    struct{ uid, gid int }
}

// startApp renders the first app node of stack with server in front of
// php-fpm, plants site and shared (paths relative to the site and to the
// shared root, and their contents), and runs both daemons on a free
// loopback port until the test ends. As the driver and storage will, it
// makes the password file root:www-data 0440 and every writable directory,
// under the shared root, www-data's; the site has none of them.
func startApp(t *testing.T, stack, server, conf, edgeNet string, site, shared map[string]string) liveApp {
	t.Helper()
	requireTool(t, "php-fpm8.2")
	requireTool(t, server)
	p := appPlan(t, stack)
	node := p.Role(spec.RoleApp)[0]
	n, l := writeNode(t, p, node.Name, testSecrets(p))
	logsOnFailure(t, l)
	www, err := user.LookupGroup("www-data")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(www.Gid)
	wwwUser, err := user.Lookup("www-data")
	if err != nil {
		t.Fatal(err)
	}
	wwwUID, _ := strconv.Atoi(wwwUser.Uid)
	if err := os.Chown(filepath.Join(l.Conf, "secrets", "db_password"), 0, gid); err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Site.Writable {
		dir := filepath.Join(l.Shared, w)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, wwwUID, gid); err != nil {
			t.Fatal(err)
		}
	}
	plant(t, l.Site, site)
	plant(t, l.Shared, shared)

	port := strconv.Itoa(freePort(t, "127.0.0.1"))
	listen := node.Addr(edgeNet).String() + ":80"
	web := string(fileOf(t, n, conf).Data)
	if !strings.Contains(web, listen) {
		t.Fatalf("%s does not listen on %s", conf, listen)
	}
	web = strings.ReplaceAll(web, listen, "127.0.0.1:"+port)
	// The edge, whose headers the node believes, is 127.0.0.2 here
	// (appEdge); whoever else connects is not the edge.
	edge := p.Role(spec.RoleEdge)[0].Addr(edgeNet).String()
	if !strings.Contains(web, edge) {
		t.Fatalf("%s does not name the edge's address %s", conf, edge)
	}
	web = regexp.MustCompile(regexp.QuoteMeta(edge)+`\b`).ReplaceAllString(web, appEdge)
	var status string
	if e := node.Exporter; e != nil {
		// The status server, on a free loopback port of the host.
		status = "127.0.0.1:" + strconv.Itoa(freePort(t, "127.0.0.1"))
		web = strings.ReplaceAll(web, e.Status.String(), status)
	}
	local := filepath.Join(l.Conf, "loopback-"+conf)
	if err := os.WriteFile(local, []byte(web), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, s := range n.Services {
		if node.Exporter != nil && s.Name == strings.TrimPrefix(node.Exporter.Package, "prometheus-") {
			continue // it would serve on the node's address, which the host lacks
		}
		if len(s.Setup) > 0 {
			mustRun(t, s.Setup...)
		}
		argv := s.Argv
		if s.Name == server {
			argv = appReplace(argv, filepath.Join(l.Conf, conf), local)
		}
		d := startDaemon(t, argv...)
		switch s.Name {
		case "php-fpm":
			sock := filepath.Join(l.Run, "php-fpm.sock")
			d.waitFor(t, "php-fpm's socket", func() error { _, err := os.Stat(sock); return err })
		case server:
			d.waitDial(t, "127.0.0.1:"+port)
		}
	}
	a := liveApp{plan: p, node: node, layout: l, base: "http://127.0.0.1:" + port, status: status}
	a.www.uid, a.www.gid = wwwUID, gid
	return a
}

// plant writes files (paths relative to dir, and their contents) under dir.
func plant(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func appGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	res, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return res, string(body)
}

// fpmEnv parses php-fpm's env[NAME] = "VALUE" lines.
func fpmEnv(conf string) map[string]string {
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^env\[(\w+)\] = "([^"]*)"$`).FindAllStringSubmatch(conf, -1) {
		env[m[1]] = m[2]
	}
	return env
}

func appServiceNames(n render.Node) string {
	var names []string
	for _, s := range n.Services {
		names = append(names, s.Name)
	}
	return strings.Join(names, " ")
}

func appReplace(s []string, old, new string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = v
		if v == old {
			out[i] = new
		}
	}
	return out
}

// TestAppReleaseOpcache: an app node that serves a release has opcache stop
// checking files for changes; one whose site may change keeps checking.
func TestAppReleaseOpcache(t *testing.T) {
	p := loadPlan(t, "default")
	off := "php_admin_flag[opcache.validate_timestamps] = off"
	for _, release := range []bool{false, true} {
		l := render.DefaultLayout()
		l.Release = release
		if release {
			l.Site = "/srv/releases/0123456789ab"
		}
		n, err := render.RenderNode(p, p.Role(spec.RoleApp)[0], render.Input{Layout: l, Secrets: testSecrets(p)})
		if err != nil {
			t.Fatal(err)
		}
		fpm := string(fileOf(t, n, "php-fpm.conf").Data)
		if got := slices.Contains(confLines(fpm), off); got != release {
			t.Errorf("release %v: php-fpm.conf has %q: %v, want %v", release, off, got, release)
		}
	}
}
