package render_test

import (
	"encoding/json"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/catalog"
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
