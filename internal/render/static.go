package render

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// frontFuncs quote values for the configs of the tiers in front (edge and
// static). Each daemon has its own quoting rules, so rather than escape, the
// quoters refuse anything outside a plain set of characters; validated spec
// values and layout paths pass.
var frontFuncs = template.FuncMap{
	// nginx double-quotes; "$" would expand a variable in most directives.
	"nq": func(v any) (string, error) { return frontQuote(v, `"`, "") },
	// nginx regexes: "$" anchors, backslashes, "%" and character classes
	// reach PCRE unchanged.
	"nre": func(v any) (string, error) { return frontQuote(v, `"`, `$\%[]`) },
	// lighttpd double-quotes and passes "$" and backslashes through.
	"lq": func(v any) (string, error) { return frontQuote(v, `"`, `$\`) },
	// haproxy single-quotes: no escapes and no $VAR expansion.
	"hq": func(v any) (string, error) { return frontQuote(v, `'`, "") },
	// haproxy regexes, single-quoted: "%" is only special in a log-format
	// string, and no regex is one.
	"hre": func(v any) (string, error) { return frontQuote(v, `'`, `$\%`) },
	// Caddyfile double-quotes: "{" would start a placeholder and a
	// backslash escapes, so neither passes.
	"cq": func(v any) (string, error) { return frontQuote(v, `"`, "") },
	// Caddyfile regexes, double-quoted: the lexer keeps a backslash
	// unless a quote follows it, so one may not end the string.
	"cre": func(v any) (string, error) {
		if s := fmt.Sprint(v); strings.HasSuffix(s, `\`) {
			return "", fmt.Errorf("%q: a trailing backslash would escape the closing quote", s)
		}
		return frontQuote(v, `"`, `$\%[]`)
	},
}

func frontQuote(v any, quote, extra string) (string, error) {
	s := fmt.Sprint(v)
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("/._:;+@=,~ ()|?^*-", r) || strings.ContainsRune(extra, r)
		if !ok {
			return "", fmt.Errorf("%q: character %q cannot be quoted safely in a config", s, r)
		}
	}
	return quote + s + quote, nil
}

// Cache lifetimes of static files, in seconds. Uploads change under the
// same name more often than built assets, so caches keep them for less time.
const (
	assetMaxAge  = 3600
	uploadMaxAge = 600
)

// sitePaths are the request paths the static tier serves (site.static),
// split the way web servers match them.
type sitePaths struct {
	// Prefixes are path prefixes ending in "/", in spec order, without
	// duplicates and without "/" itself.
	Prefixes []sitePrefix
	// Exts are file extensions from the "*.ext" globs, lower case, sorted.
	Exts []string
	// All is set when "/" is a prefix: every path is static.
	All bool
}

type sitePrefix struct {
	Path   string // "/assets/"
	Upload bool   // under a writable directory (site.writable)
	MaxAge int    // seconds
}

func newSitePaths(site plan.Site) sitePaths {
	var s sitePaths
	for _, p := range site.Static {
		switch {
		case p == "/":
			s.All = true
		case strings.HasPrefix(p, "*."):
			if e := strings.ToLower(p[2:]); !slices.Contains(s.Exts, e) {
				s.Exts = append(s.Exts, e)
			}
		case !slices.ContainsFunc(s.Prefixes, func(q sitePrefix) bool { return q.Path == p }):
			up := slices.ContainsFunc(site.Writable, func(w string) bool { return strings.HasPrefix(p, "/"+w+"/") })
			age := assetMaxAge
			if up {
				age = uploadMaxAge
			}
			s.Prefixes = append(s.Prefixes, sitePrefix{Path: p, Upload: up, MaxAge: age})
		}
	}
	slices.Sort(s.Exts)
	return s
}

// ExtRegex matches a path ending in one of the extensions; match it case
// insensitively.
func (s sitePaths) ExtRegex() string {
	exts := make([]string, len(s.Exts))
	for i, e := range s.Exts {
		exts[i] = regexp.QuoteMeta(e)
	}
	return `\.(?:` + strings.Join(exts, "|") + `)$`
}

// PrefixRegex matches a path under one of the prefixes.
func (s sitePaths) PrefixRegex() string {
	ps := make([]string, len(s.Prefixes))
	for i, p := range s.Prefixes {
		ps[i] = regexp.QuoteMeta(p.Path)
	}
	return `^(?:` + strings.Join(ps, "|") + `)`
}

// UploadRegex matches a path under one of the upload prefixes, or is empty.
func (s sitePaths) UploadRegex() string {
	var ps []string
	for _, p := range s.Prefixes {
		if p.Upload {
			ps = append(ps, regexp.QuoteMeta(p.Path))
		}
	}
	if len(ps) == 0 {
		return ""
	}
	return `^(?:` + strings.Join(ps, "|") + `)`
}

// ServeRegex matches every static path: one regex, because a Caddy
// matcher set holds one path_regexp. Prefixes match case sensitively,
// extensions not. It is empty when nothing is static.
func (s sitePaths) ServeRegex() string {
	if s.All {
		return "^/"
	}
	var alts []string
	if len(s.Prefixes) > 0 {
		alts = append(alts, s.PrefixRegex())
	}
	if len(s.Exts) > 0 {
		alts = append(alts, "(?i:"+s.ExtRegex()+")")
	}
	return strings.Join(alts, "|")
}

// refusedRegex matches what the static tier never serves, whatever the
// configured paths say: dotfiles and dot-directories (.env, .git/), server
// side code that must not leak as source, backups, and directories (no
// listings). Match it case insensitively.
const refusedRegex = `/\.|\.(?:php\d?|phtml|phar|inc|bak|orig|swp|sql)$|~$|/$`

// mimeType is one file extension's Content-Type. The table is explicit
// because a minimal container has no /etc/mime.types.
type mimeType struct {
	Ext, Type string
	Text      bool // gets "; charset=utf-8"
}

var staticMIME = []mimeType{
	{"avif", "image/avif", false},
	{"bmp", "image/bmp", false},
	{"css", "text/css", true},
	{"csv", "text/csv", true},
	{"eot", "application/vnd.ms-fontobject", false},
	{"gif", "image/gif", false},
	{"htm", "text/html", true},
	{"html", "text/html", true},
	{"ico", "image/x-icon", false},
	{"jpeg", "image/jpeg", false},
	{"jpg", "image/jpeg", false},
	{"js", "text/javascript", true},
	{"json", "application/json", true},
	{"map", "application/json", true},
	{"mjs", "text/javascript", true},
	{"mp3", "audio/mpeg", false},
	{"mp4", "video/mp4", false},
	{"ogg", "audio/ogg", false},
	{"otf", "font/otf", false},
	{"pdf", "application/pdf", false},
	{"png", "image/png", false},
	{"svg", "image/svg+xml", true},
	{"ttf", "font/ttf", false},
	{"txt", "text/plain", true},
	{"wasm", "application/wasm", false},
	{"webm", "video/webm", false},
	{"webmanifest", "application/manifest+json", true},
	{"webp", "image/webp", false},
	{"woff", "font/woff", false},
	{"woff2", "font/woff2", false},
	{"xml", "application/xml", true},
	{"zip", "application/zip", false},
}

// CharsetTypes are the text types nginx adds "; charset=utf-8" to, sorted
// and without text/html, which nginx always includes.
func (c *staticConf) CharsetTypes() []string {
	var out []string
	for _, m := range c.MIME {
		if m.Text && m.Type != "text/html" && !slices.Contains(out, m.Type) {
			out = append(out, m.Type)
		}
	}
	slices.Sort(out)
	return out
}

// contentType is one Content-Type and the extensions that get it, for
// servers that set types per group of extensions (Caddy).
type contentType struct {
	Type string // with its charset, if any
	Exts []string
}

// ContentTypes groups MIME by Content-Type, in the order types first
// appear, with "; charset=utf-8" on the text types as lighttpd sends it.
func (c *staticConf) ContentTypes() []contentType {
	var out []contentType
	for _, m := range c.MIME {
		t := m.Type
		if m.Text {
			t += "; charset=utf-8"
		}
		i := slices.IndexFunc(out, func(ct contentType) bool { return ct.Type == t })
		if i < 0 {
			out = append(out, contentType{Type: t})
			i = len(out) - 1
		}
		out[i].Exts = append(out[i].Exts, m.Ext)
	}
	return out
}

// Exts lists every extension MIME names.
func (c *staticConf) Exts() []string {
	out := make([]string, len(c.MIME))
	for i, m := range c.MIME {
		out[i] = m.Ext
	}
	return out
}

// staticConf is what the static templates see; every path is precomputed.
type staticConf struct {
	Node    string
	Listen  netip.AddrPort
	Site    string
	Void    string // a document root that never exists: what is not static is 404
	Healthz string
	Pid     string
	Run     string
	Temp    string // nginx temp directories: prefix of one per kind
	State   string // Caddy's home: its autosaved config and data
	Admin   string // Caddy's admin endpoint, a unix socket
	Log     string // access log
	Paths   sitePaths
	Refused string
	MIME    []mimeType
	// Cache lifetimes in seconds.
	AssetAge, UploadAge int
	// Shared is the root of the writable directories, which are served
	// from there and not from the site: /uploads/x is Shared/uploads/x.
	// SharedRegex matches their paths; "" without writable directories.
	Shared, SharedRegex string
}

// staticHealthz is the body of /healthz, which the static tier answers from
// its config directory so a health check does not depend on the site.
const staticHealthz = "ok\n"

// staticListen returns the address and port the edge reaches n on: the
// static tier listens there and nowhere else (on a cluster, on any address:
// see Input.bind).
func staticListen(p *plan.Plan, n *plan.Node, in Input) (netip.AddrPort, error) {
	for _, f := range p.Flows {
		if f.To != n.Tier || f.Explicit || !slices.Contains(n.Listens, f.Port) {
			continue
		}
		if from := p.Tier(f.From); len(from) > 0 && from[0].Role == spec.RoleEdge {
			if a := in.bind(n, f.Network); a.IsValid() {
				return netip.AddrPortFrom(a, uint16(f.Port.Number)), nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no flow from the edge reaches %s on %v, so it has nothing to listen on", n.Name, n.Listens)
}

func newStaticConf(p *plan.Plan, n *plan.Node, in Input) (*staticConf, error) {
	listen, err := staticListen(p, n, in)
	if err != nil {
		return nil, err
	}
	l := in.Layout
	return &staticConf{
		Node:   n.Name,
		Listen: listen,
		Site:   l.Site,
		// Conf holds only rendered files and is read-only in the node, so
		// this directory never exists.
		Void:    l.conf("void"),
		Healthz: l.conf("healthz"),
		Pid:     path.Join(l.Run, n.Software+".pid"),
		Run:     l.Run,
		Temp:    path.Join(l.Run, "nginx-"),
		State:   path.Join(l.Run, "caddy"),
		Admin:   "unix/" + path.Join(l.Run, "caddy-admin.sock"),
		Log:     path.Join(l.Log, "access.log"),
		Paths:   newSitePaths(p.Site),
		Refused: refusedRegex,
		MIME:    staticMIME,

		AssetAge:  assetMaxAge,
		UploadAge: uploadMaxAge,

		Shared:      l.Shared,
		SharedRegex: writableRegex(p.Site.Writable),
	}, nil
}

// staticLighttpd serves the site's static paths with lighttpd.
func staticLighttpd(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newStaticConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	conf, err := execTemplate("static-lighttpd.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	// A new release is a new document root: lighttpd's graceful restart
	// (SIGUSR1) reads the config again in the same process and keeps
	// its listening sockets, finishing what it serves first.
	files := []File{
		{Path: "lighttpd.conf", Mode: 0o644, Data: conf, OnChange: Reload},
		{Path: "healthz", Mode: 0o644, Data: []byte(staticHealthz)},
	}
	// lighttpd opens its access log after dropping to www-data, so the file
	// must exist and belong to www-data first. install(1) creates it empty.
	svc := service.Service{
		Name:    "lighttpd",
		Argv:    []string{"lighttpd", "-D", "-f", in.Layout.conf("lighttpd.conf")},
		Setup:   []string{"install", "-o", "www-data", "-g", "www-data", "-m", "0640", "/dev/null", c.Log},
		Creates: c.Log,
		Reload:  &service.Reload{Signal: "USR1"},
	}
	return files, []service.Service{svc}, nil
}

// staticNginx serves the site's static paths with nginx.
func staticNginx(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newStaticConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	conf, err := execTemplate("static-nginx.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	// A new release is a new root: nginx reloads on SIGHUP, its old
	// workers finishing what they serve.
	files := []File{{Path: "nginx.conf", Mode: 0o644, Data: conf, OnChange: Reload}}
	svc := service.Service{
		Name: "nginx",
		// -e: nginx opens its built-in error log before reading the config.
		Argv:   []string{"nginx", "-c", in.Layout.conf("nginx.conf"), "-e", "stderr"},
		Reload: &service.Reload{Signal: "HUP", Replaces: true},
	}
	return files, []service.Service{svc}, nil
}

// staticCaddy serves the site's static paths with Caddy. Caddy has no user
// switch of its own: setpriv (util-linux) becomes www-data and execs it,
// keeping CAP_NET_BIND_SERVICE, which every node's base set has, as an
// ambient capability so that www-data can bind port 80. Caddy writes its
// autosaved config under XDG_CONFIG_HOME, so its home is in the node's run
// directory, which the catalog gives to www-data; nothing points it at /.
//
// A new release is a new document root, which Caddy applies without a
// restart: `caddy reload` adapts the Caddyfile and posts it to the admin
// endpoint, and Caddy starts the new config on the listeners it already
// has, then stops the old one once its requests are served. The endpoint
// is a unix socket in the run directory, never TCP. As of 2.6.2 Caddy
// cannot set the socket's mode (later versions take "unix//path|0200"; in
// 2.6.2 that suffix becomes part of the file's name): bind(2) creates it
// with the umask, so Caddy runs with umask 077 and the socket is
// www-data's alone (srwx------). Only Caddy itself, the reload command,
// which runs as www-data too, and the node's root, which has
// CAP_DAC_OVERRIDE, can connect to it. The umask makes Caddy's other files
// (access log, autosaved config) www-data's alone too.
func staticCaddy(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newStaticConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	conf, err := execTemplate("static-Caddyfile.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	files := []File{{Path: "Caddyfile", Mode: 0o644, Data: conf, OnChange: Reload}}
	asCaddy := []string{"setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups"}
	// Every caddy command runs as www-data, in Caddy's home: the agent's
	// HOME is root's.
	home := []string{"env", "HOME=" + c.State, "XDG_CONFIG_HOME=" + path.Join(c.State, "config"), "XDG_DATA_HOME=" + path.Join(c.State, "data")}
	caddyfile := in.Layout.conf("Caddyfile")
	svc := service.Service{
		Name: "caddy",
		Argv: slices.Concat(asCaddy,
			[]string{"--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service", "--"},
			// setpriv has no umask option; the shell sets it and execs.
			[]string{"sh", "-c", `umask 077 && exec "$@"`, "sh"},
			home,
			[]string{"caddy", "run", "--config", caddyfile, "--adapter", "caddyfile", "--pidfile", c.Pid}),
		// The reload returns once the new config serves; a config that
		// does not load leaves the old one serving and fails the reload.
		Reload: &service.Reload{Argv: slices.Concat(asCaddy, []string{"--"}, home,
			[]string{"caddy", "reload", "--config", caddyfile, "--adapter", "caddyfile", "--address", c.Admin})},
	}
	return files, []service.Service{svc}, nil
}
