package render_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// caddyRun runs one of caddy's offline subcommands on the node's
// Caddyfile, with its home in the test's run directory: caddy writes its
// state under XDG_CONFIG_HOME and XDG_DATA_HOME, and a check must write
// nothing outside the layout.
func caddyRun(t *testing.T, tool string, l render.Layout, args ...string) string {
	t.Helper()
	argv := append([]string{tool}, args...)
	argv = append(argv, "--config", filepath.Join(l.Conf, "Caddyfile"), "--adapter", "caddyfile")
	cmd := exec.Command(argv[0], argv[1:]...)
	home := filepath.Join(l.Run, "check")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "XDG_DATA_HOME=" + filepath.Join(home, "data")}
	return output(t, cmd, argv)
}

// caddyJSON is the part of Caddy's JSON config the checks read.
type caddyJSON struct {
	Admin struct {
		Disabled bool            `json:"disabled"`
		Listen   string          `json:"listen"`
		Remote   json.RawMessage `json:"remote"`
	} `json:"admin"`
	Apps map[string]json.RawMessage `json:"apps"`
}

type caddyHTTP struct {
	Servers map[string]struct {
		Listen         []string `json:"listen"`
		Protocols      []string `json:"protocols"`
		AutomaticHTTPS struct {
			Disable bool `json:"disable"`
		} `json:"automatic_https"`
		Logs *struct {
			DefaultLoggerName string `json:"default_logger_name"`
		} `json:"logs"`
	} `json:"servers"`
}

// TestStaticCaddyCheck renders the static node with Caddy in every test
// stack, has caddy adapt and validate it offline, and reads the adapted
// JSON: the admin endpoint on a unix socket in the run directory alone,
// no automatic HTTPS, one HTTP/1 listener on the edge-facing address, and
// the access log in the log directory.
func TestStaticCaddyCheck(t *testing.T) {
	caddy := requireTool(t, "caddy")
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p, n := withSoftware(t, c, spec.RoleStatic, "caddy")
			out, l := writeNode(t, p, n.Name, testSecrets(p))
			confPath := filepath.Join(l.Conf, "Caddyfile")
			caddyRun(t, caddy, l, "validate")
			adapted := caddyRun(t, caddy, l, "adapt")
			if strings.Contains(adapted, `"level":"warn"`) {
				t.Errorf("caddy adapt warns:\n%s", adapted)
			}
			// adapt prints its log lines on stderr, then the config.
			var cfg caddyJSON
			if err := json.Unmarshal([]byte(adapted[strings.LastIndex(adapted, "\n{\"admin\"")+1:]), &cfg); err != nil {
				t.Fatalf("adapted config: %v\n%s", err, adapted)
			}
			// The one way in besides the service port: a unix socket,
			// and no remote admin (which listens on TCP).
			admin := "unix/" + filepath.Join(l.Run, "caddy-admin.sock")
			if cfg.Admin.Disabled || cfg.Admin.Listen != admin {
				t.Errorf("admin endpoint: disabled %v, listen %q; want it on %s alone", cfg.Admin.Disabled, cfg.Admin.Listen, admin)
			}
			if cfg.Admin.Remote != nil {
				t.Errorf("remote admin is on: %s", cfg.Admin.Remote)
			}
			if got := slices.Sorted(maps.Keys(cfg.Apps)); !slices.Equal(got, []string{"http"}) {
				t.Errorf("apps = %q, want http alone (no tls, no pki)", got)
			}
			var h caddyHTTP
			if err := json.Unmarshal(cfg.Apps["http"], &h); err != nil {
				t.Fatal(err)
			}
			addr, port := staticListen(t, p, n)
			if len(h.Servers) != 1 {
				t.Fatalf("%d servers, want 1", len(h.Servers))
			}
			for name, s := range h.Servers {
				if want := []string{net.JoinHostPort(addr, strconv.Itoa(port))}; !slices.Equal(s.Listen, want) {
					t.Errorf("server %s listens on %q, want %q", name, s.Listen, want)
				}
				if !s.AutomaticHTTPS.Disable {
					t.Errorf("server %s has automatic HTTPS", name)
				}
				if !slices.Equal(s.Protocols, []string{"h1"}) {
					t.Errorf("server %s speaks %q, want h1 only", name, s.Protocols)
				}
				if s.Logs == nil {
					t.Errorf("server %s has no access log", name)
				}
			}
			logFile := filepath.Join(l.Log, "access.log")
			if !strings.Contains(adapted, strconv.Quote(logFile)) {
				t.Errorf("the access log is not %s:\n%s", logFile, adapted)
			}

			if len(out.Services) != 1 {
				t.Fatalf("services = %+v, want caddy alone", out.Services)
			}
			argv := out.Services[0].Argv
			i := slices.Index(argv, "caddy")
			if i < 0 || !slices.Equal(argv[i:], []string{"caddy", "run", "--config", confPath, "--adapter", "caddyfile", "--pidfile", filepath.Join(l.Run, "caddy.pid")}) {
				t.Errorf("argv = %q, want caddy run --config %s ...", argv, confPath)
			}
			if argv[0] != "setpriv" || !slices.Contains(argv, "--reuid=www-data") || !slices.Contains(argv, "--ambient-caps=+net_bind_service") {
				t.Errorf("argv = %q: caddy does not run as www-data, able to bind port 80", argv)
			}
			// The admin socket's mode is the umask's (see staticCaddy).
			if j := slices.Index(argv, "-c"); j < 0 || j > i || argv[j-1] != "sh" || !strings.HasPrefix(argv[j+1], "umask 077 && exec ") {
				t.Errorf("argv = %q: caddy does not run with umask 077", argv)
			}
			home := caddyHome(argv[:i])
			for _, v := range []string{"HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"} {
				if !strings.HasPrefix(home[v], l.Run+"/") {
					t.Errorf("argv = %q: %s is not under %s", argv, v, l.Run)
				}
			}

			// A new release's document root is applied by a reload,
			// through the admin socket, as www-data, in caddy's home.
			if f := fileOf(t, out, "Caddyfile"); f.OnChange != render.Reload {
				t.Errorf("a changed Caddyfile needs a %v, want a reload", f.OnChange)
			}
			r := out.Services[0].Reload
			if r == nil || r.Signal != "" || r.Socket != "" {
				t.Fatalf("reload = %+v, want a command", r)
			}
			i = slices.Index(r.Argv, "caddy")
			if i < 0 || !slices.Equal(r.Argv[i:], []string{"caddy", "reload", "--config", confPath, "--adapter", "caddyfile", "--address", admin}) {
				t.Errorf("reload argv = %q, want caddy reload --config %s --adapter caddyfile --address %s", r.Argv, confPath, admin)
			}
			if r.Argv[0] != "setpriv" || !slices.Contains(r.Argv, "--reuid=www-data") || slices.ContainsFunc(r.Argv, func(a string) bool { return strings.Contains(a, "caps") }) {
				t.Errorf("reload argv = %q: it does not run as www-data without capabilities", r.Argv)
			}
			if got := caddyHome(r.Argv[:i]); !maps.Equal(got, home) {
				t.Errorf("reload runs in home %v, caddy in %v", got, home)
			}

			conf := string(fileOf(t, out, "Caddyfile").Data)
			if !strings.Contains(conf, "header X-Served-By "+strconv.Quote(n.Name)+"\n") {
				t.Errorf("no X-Served-By %s", n.Name)
			}
			m := regexp.MustCompile(`@refused path_regexp refused "([^"]+)"\n\s*respond @refused 404`).FindStringSubmatch(conf)
			if m == nil {
				t.Fatalf("nothing refuses PHP and dotfiles")
			}
			re := regexp.MustCompile(m[1])
			for _, path := range []string{"/index.php", "/x.Php5", "/.env", "/uploads/.git/HEAD", "/assets/"} {
				if !re.MatchString(path) {
					t.Errorf("%s is not refused by %s", path, m[1])
				}
			}
			m = regexp.MustCompile(`path_regexp static "([^"]+)"`).FindStringSubmatch(conf)
			if m == nil {
				t.Fatalf("no static paths")
			}
			re = regexp.MustCompile(m[1])
			for _, s := range p.Site.Static {
				path := s + "a/b.txt"
				if e, ok := strings.CutPrefix(s, "*"); ok {
					path = "/a/b/name" + strings.ToUpper(e)
				}
				if !re.MatchString(path) {
					t.Errorf("static path %s (%s) is not served", s, path)
				}
			}
			for _, path := range []string{"/", "/index.php", "/app/config.ini", "/assetsx/a.txt", "/ASSETS/a.txt"} {
				if re.MatchString(path) {
					t.Errorf("%s is served but is no static path", path)
				}
			}
		})
	}
}

// caddyHome returns the HOME and XDG_ variables an argv sets with env.
func caddyHome(argv []string) map[string]string {
	vars := map[string]string{}
	for _, a := range argv {
		if k, v, ok := strings.Cut(a, "="); ok && (k == "HOME" || strings.HasPrefix(k, "XDG_")) {
			vars[k] = v
		}
	}
	return vars
}

// TestStaticCaddyGolden compares the Caddy static node of every test stack
// with testdata/golden/caddy/STACK: the golden stacks themselves run
// lighttpd and nginx. Run with -update to rewrite them.
func TestStaticCaddyGolden(t *testing.T) {
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p, n := withSoftware(t, c, spec.RoleStatic, "caddy")
			out, err := render.RenderNode(p, n, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)})
			if err != nil {
				t.Fatal(err)
			}
			svcs, err := json.MarshalIndent(out.Services, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "golden", "caddy", c)
			golden(t, filepath.Join(dir, "Caddyfile"), fileOf(t, out, "Caddyfile").Data)
			golden(t, filepath.Join(dir, "services.json"), append(svcs, '\n'))
		})
	}
}

// chownLayout gives the node's writable directories to the account the
// catalog names for them, as the driver does.
func chownLayout(t *testing.T, n *plan.Node, l render.Layout) {
	t.Helper()
	d, err := catalog.Lookup(n.Role, n.Software)
	if err != nil {
		t.Fatal(err)
	}
	if d.DirOwner != "" {
		mustRun(t, "chown", d.DirOwner+":"+d.DirOwner, l.Run, l.Log, l.Data)
	}
}

// TestStaticCaddyReload deploys four releases, one after the other, to a
// running Caddy as up does: the node is rendered again with the new
// release as the document root, and the reload command of its service
// applies the Caddyfile, while clients, on keep-alive connections and on a
// new connection per request, fetch a file without pause. Not one request
// may fail, and no request sent after a reload returned may get an older
// release's file. The admin socket must be www-data's alone.
//
// Caddy and the clients are in a scratch network namespace with the
// settings the catalog gives the node's: without tcp_migrate_req, a
// reload resets the connections queued on the listener it closes.
func TestStaticCaddyReload(t *testing.T) {
	hosttest.RequireRoot(t) // caddy runs as www-data
	requireTool(t, "caddy")
	requireTool(t, "setpriv")
	p, n := withSoftware(t, "default", spec.RoleStatic, "caddy")
	dial := scratchNamespace(t, n)
	addr := "127.77.110.1"
	port := staticOnLoopback(t, p, n, addr)
	sec := testSecrets(p)
	_, l := writeNode(t, p, n.Name, sec)
	chownLayout(t, n, l)
	logsOnFailure(t, l)

	// Each release is a document root of its own, as /srv/releases/ID is
	// in a node, with one file that says which it is.
	const file = "assets/app.css"
	releases := []string{"a", "b", "c", "d", "e"}
	body := func(id string) string { return "release " + id + "\n" }
	// release makes release id and renders the node for it.
	release := func(id string) (render.Node, render.Layout) {
		t.Helper()
		rl := l
		rl.Site = filepath.Join(filepath.Dir(l.Site), "releases", id)
		if err := os.MkdirAll(filepath.Join(rl.Site, filepath.Dir(file)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rl.Site, file), []byte(body(id)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := render.RenderNode(p, n, render.Input{Layout: rl, Secrets: sec})
		if err != nil {
			t.Fatal(err)
		}
		return out, rl
	}
	out, rl := release(releases[0])
	writeFiles(t, rl, out)
	svc := out.Services[0]
	d := startDaemon(t, append([]string{"ip", "netns", "exec", dial.ns}, svc.Argv...)...)
	hostport := net.JoinHostPort(addr, strconv.Itoa(port))
	d.waitFor(t, "listener on "+hostport, func() error {
		c, err := dial.DialContext(context.Background(), "tcp", hostport)
		if err == nil {
			c.Close()
		}
		return err
	})

	// Caddy starts its admin endpoint before its servers. The run
	// directory is open to every user here, so the socket's own mode
	// must keep another user out.
	sock := filepath.Join(l.Run, "caddy-admin.sock")
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatalf("no admin socket: %v", err)
	}
	www, err := user.Lookup("www-data")
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm()&0o077 != 0 || strconv.Itoa(int(uid)) != www.Uid {
		t.Errorf("admin socket %s: %v, uid %d; want a socket only www-data (%s) can use", sock, fi.Mode(), uid, www.Uid)
	}
	nobody := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
		"caddy", "reload", "--config", filepath.Join(l.Conf, "Caddyfile"), "--adapter", "caddyfile", "--address", "unix/"+sock)
	nobody.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
	if b, err := nobody.CombinedOutput(); err == nil || !strings.Contains(string(b), "connect: permission denied") {
		t.Errorf("nobody's caddy reload: %v, want connect: permission denied:\n%s", err, b)
	}

	// phase is 2i while release i is deployed and 2i+1 while release
	// i+1 is being reloaded in.
	var phase atomic.Int32
	var (
		mu       sync.Mutex
		total    int
		during   = make([]int, len(releases)) // requests sent while reload i ran
		after    = make([]int, len(releases)) // requests sent once release i was in
		failures []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		// On keep-alive connections, which the old config's server
		// closes, and on new ones, which meet the listener that the
		// new config took over.
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: dial.DialContext, DisableKeepAlives: i%2 == 1}}
		wg.Go(func() {
			defer client.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// The release in before the request, or a later one
				// if a reload ran meanwhile.
				ph := int(phase.Load())
				var want []string
				for _, id := range releases[ph/2:] {
					want = append(want, body(id))
				}
				var fail string
				resp, err := client.Get("http://" + hostport + "/" + file)
				if err != nil {
					fail = err.Error()
				} else {
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case err != nil:
						fail = err.Error()
					case resp.StatusCode != 200:
						fail = resp.Status
					case !slices.Contains(want, string(b)):
						fail = fmt.Sprintf("%q, want one of %q", b, want)
					}
				}
				mu.Lock()
				total++
				if ph%2 == 1 {
					during[ph/2+1]++
				} else {
					after[ph/2]++
				}
				if fail != "" {
					failures = append(failures, fmt.Sprintf("keep-alive %v: %s", i%2 == 0, fail))
				}
				mu.Unlock()
			}
		})
	}
	served := func(i int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return after[i] > 0
		}
	}
	hosttest.Eventually(t, waitDeadline, "requests to release "+releases[0], served(0))

	for i := 1; i < len(releases); i++ {
		out, rl = release(releases[i])
		for _, f := range out.Files {
			if old, err := os.ReadFile(filepath.Join(rl.Conf, f.Path)); err == nil && !bytes.Equal(old, f.Data) && f.OnChange == render.Restart {
				t.Errorf("%s changed and needs a restart; a new release must reload", f.Path)
			}
		}
		writeFiles(t, rl, out)
		phase.Store(int32(2*i - 1))
		mustRun(t, out.Services[0].Reload.Argv...)
		phase.Store(int32(2 * i))
		hosttest.Eventually(t, waitDeadline, "requests to release "+releases[i], served(i))
	}
	close(stop)
	wg.Wait()
	select {
	case <-d.done:
		t.Fatalf("caddy exited: %v", d.err)
	default:
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed across the reloads: %q", len(failures), total, failures[:min(len(failures), 5)])
	}
	t.Logf("%d requests, %v while each reload ran, %d failed", total, during[1:], len(failures))
}

// nsDialer dials from inside a network namespace.
type nsDialer struct {
	ns string
	h  *netns.Handle
}

func (d nsDialer) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = netns.Do(d.h, func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// scratchNamespace makes a network namespace for the test, with loopback
// up and the settings the catalog gives n's, and returns a dialer into it.
// The namespace goes when the test ends.
func scratchNamespace(t *testing.T, n *plan.Node) nsDialer {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("bhtest-%s-%d", n.Software, os.Getpid()%100000)
	if err := netns.Add(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(context.Background(), name); err != nil {
			t.Error(err)
		}
	})
	desc, err := catalog.Lookup(n.Role, n.Software)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range desc.Sysctls {
		if err := netns.Sysctl(ctx, name, k, v); err != nil {
			t.Fatal(err)
		}
	}
	h, err := netns.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return nsDialer{ns: name, h: h}
}
