package render

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// appApacheModules is where Debian's apache2 keeps its modules inside a node.
const appApacheModules = "/usr/lib/apache2/modules"

// appMaxBody is the largest request body an app node accepts: uploads of up to
// 16 MB. The edge should allow the same.
const appMaxBody = 16 << 20

// appConf is what the app templates (apache2, nginx, php-fpm) see. Every
// path is precomputed from the Layout so that templates only format.
type appConf struct {
	Node    string
	Listen  []netip.AddrPort
	Proxies []string // the edge's addresses or network: trusted for X-Forwarded-For
	Conf    string
	Run     string
	Site    string
	Release bool   // Site is an immutable release (see Layout.Release)
	Shared  string // the writable paths' root: URL /uploads/x is Shared/uploads/x
	Socket  string // php-fpm's FastCGI socket
	Handler string // Apache's SetHandler value for the socket
	Pid     string // the web server's pid file
	FPMPid  string
	Log     struct{ Error, Access, FPM string }
	Temp    string // nginx's temp files, prefix of one directory per kind
	Modules []apacheModule

	BodyBytes int
	BodyMB    int

	// Writable are the site's writable directories, whose files are served
	// as bytes and never handed to php-fpm (see writable.go).
	Writable []appWritable
	PHPFile  string // a file name PHP might run: Apache's FilesMatch
	PHPPath  string // a request path that names one: nginx's location

	FPM fpmPool

	// Status is the web server's status server on the node's loopback,
	// for the role exporter (mod_status, stub_status) and the agent
	// (php-fpm's status at FPMStatus, the pool's pm.status_path); empty
	// without a monitor.
	Status, FPMStatus string
}

// appWritable is one writable directory, as a request path ("/uploads/")
// and on disk (Layout.Shared/uploads).
type appWritable struct{ URL, Dir string }

type apacheModule struct{ Name, Path string }

// fpmPool is php-fpm's one pool.
type fpmPool struct {
	MaxChildren, StartServers, MinSpare, MaxSpare int
	Env                                           []appEnv
	SessionHandler, SessionPath                   string
	TmpDir                                        string
	OpenBasedir                                   string
	DisableFunctions                              string
	Sendmail                                      string // sendmail_path, if mail() is enabled
	Relay                                         string // the mail tier's relay that Sendmail hands mail to, if any
}

type appEnv struct{ Name, Value string }

// appApache renders apache2 (event MPM) in front of php-fpm.
func appApache(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newAppConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	c.Pid = path.Join(in.Layout.Run, "apache2.pid")
	c.Log.Error = path.Join(in.Layout.Log, "apache2-error.log")
	c.Log.Access = path.Join(in.Layout.Log, "apache2-access.log")
	// Debian builds unixd (User, Group) and log_config into the binary.
	modules := []string{"mpm_worker", "authz_core", "alias", "mime", "dir", "headers", "remoteip", "setenvif", "reqtimeout", "proxy", "proxy_fcgi", "buffer"}
	if c.Status != "" {
		modules = append(modules, "status")
	}
	for _, m := range modules {
		c.Modules = append(c.Modules, apacheModule{Name: m + "_module", Path: path.Join(appApacheModules, "mod_"+m+".so")})
	}
	return appRender(n, c, in, "apache2", "app-apache2.conf.tmpl",
		[]string{"apache2", "-f", in.Layout.conf("apache2.conf"), "-DFOREGROUND"})
}

// appNginx renders nginx in front of php-fpm.
func appNginx(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newAppConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	c.Pid = path.Join(in.Layout.Run, "nginx.pid")
	c.Log.Error = path.Join(in.Layout.Log, "nginx-error.log")
	c.Log.Access = path.Join(in.Layout.Log, "nginx-access.log")
	c.Temp = path.Join(in.Layout.Run, "nginx-")
	// -e: nginx opens its compiled-in error log before it reads the
	// config, and that path is on the node's read-only root.
	return appRender(n, c, in, "nginx", "app-nginx.conf.tmpl",
		[]string{"nginx", "-c", in.Layout.conf("nginx.conf"), "-e", c.Log.Error})
}

// appRender renders the web server's config, php-fpm's config and the DB
// password file, and the services: php-fpm first, as the web server
// hands it every PHP request, with a monitor the role exporter, and the
// web server last.
func appRender(n *plan.Node, c *appConf, in Input, server, tmpl string, argv []string) ([]File, []service.Service, error) {
	web, err := execTemplate(tmpl, c)
	if err != nil {
		return nil, nil, err
	}
	fpm, err := execTemplate("app-php-fpm.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	files := []File{
		{Path: server + ".conf", Mode: 0o644, Data: web},
		{Path: "php-fpm.conf", Mode: 0o644, Data: fpm},
	}
	if slices.ContainsFunc(c.FPM.Env, func(e appEnv) bool { return e.Name == "DB_PASSWORD_FILE" }) {
		// 0440: PHP runs as www-data and reads it through the group, so the
		// driver must chown it root:www-data.
		files = append(files, File{Path: SecretsDir + "/db_password", Mode: 0o440, Data: []byte(in.Secrets.DBPassword)})
	}
	// PHP's temp (and, without a cache tier, session) directory lives on the
	// node's tmpfs; sticky and world-writable like /tmp, so it needs no chown.
	dirs := []string{c.FPM.TmpDir}
	if c.FPM.SessionHandler == "files" {
		dirs = append(dirs, c.FPM.SessionPath)
	}
	svcs := []service.Service{
		{
			Name:    "php-fpm",
			Argv:    []string{"php-fpm8.2", "-F", "-y", in.Layout.conf("php-fpm.conf")},
			Setup:   append([]string{"install", "-d", "-m", "1733"}, dirs...),
			Creates: dirs[len(dirs)-1],
			// The agent reads the pool's status through the web
			// server's status server.
			Stats: statsOf(n, in),
		},
	}
	if e, ok, err := exporterService(n, in, exporterDaemon{}); err != nil {
		return nil, nil, err
	} else if ok {
		svcs = append(svcs, e)
	}
	return files, append(svcs, service.Service{Name: server, Argv: argv}), nil
}

// newAppConf gathers what both app variants share: where to listen, where
// php-fpm's socket is, and what the PHP app is told about its peers.
func newAppConf(p *plan.Plan, n *plan.Node, in Input) (*appConf, error) {
	l := in.Layout
	listen, err := inboundAddrs(p, n, in)
	if err != nil {
		return nil, err
	}
	c := &appConf{
		Node:      n.Name,
		Listen:    listen,
		Proxies:   appProxies(p, n, in),
		Conf:      l.Conf,
		Run:       l.Run,
		Site:      l.Site,
		Release:   l.Release,
		Shared:    l.Shared,
		Socket:    path.Join(l.Run, "php-fpm.sock"),
		FPMPid:    path.Join(l.Run, "php-fpm.pid"),
		BodyBytes: appMaxBody,
		BodyMB:    appMaxBody >> 20,
		PHPFile:   phpFileRegex,
		PHPPath:   phpPathRegex,
	}
	for _, w := range p.Site.Writable {
		c.Writable = append(c.Writable, appWritable{URL: "/" + w + "/", Dir: path.Join(l.Shared, w)})
	}
	if e := n.Exporter; e != nil && e.Status.IsValid() {
		c.Status, c.FPMStatus = e.Status.String(), catalog.StatusPathPHPFPM
	}
	c.Handler = "proxy:unix:" + c.Socket + "|fcgi://localhost"
	c.Log.FPM = path.Join(l.Log, "php-fpm.log")

	// About 48 MB per PHP worker once apache or nginx, php-fpm's master and
	// opcache's shared memory (128 MB by default) have taken theirs: 6
	// workers on a 512 MB node.
	children := min(max(int((n.Memory-192<<20)/(48<<20)), 2), 64)
	spare := min(3, children)
	c.FPM = fpmPool{
		MaxChildren: children, StartServers: min(2, spare), MinSpare: 1, MaxSpare: spare,
		TmpDir:           path.Join(l.Run, "php-tmp"),
		SessionHandler:   "files",
		SessionPath:      path.Join(l.Run, "php-sessions"),
		DisableFunctions: "exec,passthru,shell_exec,system,proc_open,popen,pcntl_exec,pcntl_fork,mail",
	}
	if l.Agent != "" {
		// Applications expect mail() to work (WordPress's installer mails
		// the admin and fails without it). With no mail tier, it hands the
		// message to a sink that keeps it in php-fpm's log and always
		// succeeds: php-fpm runs the command itself, so PHP code still
		// cannot run one.
		c.FPM.Sendmail = l.Agent + " sendmail -t -i"
		if m := p.Mail; m != nil {
			// With a mail tier the sink hands the message to the relay
			// over SMTP, and keeps it in the log only when that fails.
			relay := m.Relay.String()
			if in.Cluster != nil {
				relay = hostPort(in.peer(p.Node(m.Node), plan.NetPrivate), int(m.Relay.Port()))
			}
			c.FPM.Sendmail = l.Agent + " sendmail --relay=" + relay + " -t -i"
			c.FPM.Relay = relay
		}
		c.FPM.DisableFunctions = strings.TrimSuffix(c.FPM.DisableFunctions, ",mail")
	}
	env := func(name, value string) { c.FPM.Env = append(c.FPM.Env, appEnv{name, value}) }
	env("NODE_NAME", n.Name)
	if len(p.Site.Writable) > 0 {
		env("UPLOAD_DIR", path.Join(l.Shared, p.Site.Writable[0]))
	}
	if db, f, ok := appPeer(p, n, spec.RoleDB); ok {
		d, err := catalog.Lookup(db.Role, db.Software)
		if err != nil {
			return nil, err
		}
		env("DB_DRIVER", d.PDODriver)
		env("DB_HOST", in.peer(db, f.Network))
		env("DB_PORT", fmt.Sprint(f.Port.Number))
		env("DB_NAME", p.Site.DBName)
		env("DB_USER", p.Site.DBUser)
		env("DB_PASSWORD_FILE", l.secret("db_password"))
	}
	if cache, f, ok := appPeer(p, n, spec.RoleCache); ok {
		host := in.peer(cache, f.Network)
		addr := hostPort(host, f.Port.Number)
		env("CACHE_DRIVER", cache.Software)
		env("CACHE_HOST", host)
		env("CACHE_PORT", strconv.Itoa(f.Port.Number))
		// Sessions live in the cache tier, not on one app node: the edge
		// balances without stickiness, so a node-local session would be
		// lost on the next request to another replica.
		d, err := catalog.Lookup(cache.Role, cache.Software)
		if err != nil {
			return nil, err
		}
		c.FPM.SessionHandler, c.FPM.SessionPath = d.PHPSessionHandler, fmt.Sprintf(d.PHPSessionPath, addr)
	}
	// PHP may open the site, its writable paths, its temp and session
	// files, and its password: not the rest of the node's run or config
	// directories. open_basedir checks the path a link resolves to, so
	// PHP that writes through the site's uploads link needs Shared too.
	basedir := []string{l.Site, l.Shared, c.FPM.TmpDir}
	if c.FPM.SessionHandler == "files" {
		basedir = append(basedir, c.FPM.SessionPath)
	}
	for _, e := range c.FPM.Env {
		if e.Name == "DB_PASSWORD_FILE" {
			basedir = append(basedir, e.Value)
		}
	}
	c.FPM.OpenBasedir = strings.Join(basedir, ":")
	return c, nil
}

// appPeer returns the first node of role that n has a flow to, and the flow.
func appPeer(p *plan.Plan, n *plan.Node, role string) (*plan.Node, plan.Flow, bool) {
	for _, peer := range p.Peers(n) {
		if peer.Node.Role == role {
			return peer.Node, peer.Flow, true
		}
	}
	return nil, plan.Flow{}, false
}

// inboundAddrs returns the addresses n must listen on: its address on the
// network of every flow that reaches its service port, and no other (on a
// cluster, any address: see Input.bind).
func inboundAddrs(p *plan.Plan, n *plan.Node, in Input) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, f := range p.Flows {
		if f.To != n.Tier || !slices.Contains(n.Listens, f.Port) {
			continue
		}
		a := netip.AddrPortFrom(in.bind(n, f.Network), uint16(f.Port.Number))
		if a.Addr().IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no flow reaches %s on %v, so it has nothing to listen on", n.Name, n.Listens)
	}
	return out, nil
}

// appProxies returns the addresses the edge reaches n from: the only
// proxies whose X-Forwarded-For n may believe. On a cluster that is the
// pod network: the policies let no pod but the edge's reach n's port.
func appProxies(p *plan.Plan, n *plan.Node, in Input) []string {
	var out []string
	for _, f := range p.Flows {
		if f.To != n.Tier {
			continue
		}
		for _, e := range p.Tier(f.From) {
			if a := hostOrNet(in.client(e, f.Network)); e.Role == spec.RoleEdge && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// confQuote double-quotes a value for apache, nginx, php-fpm and redis
// configs. Their escaping rules differ ($ expands in nginx and php ini,
// backslashes differ), so rather than escape, it refuses anything but a
// plain set of characters; validated spec values and layout paths pass.
func confQuote(v any) (string, error) { return plainQuote(v, `"`, "") }

// exprQuote single-quotes a string in an Apache expression, which the
// directive double-quotes around it (<If "...">). "*" passes, for the
// globs of -strmatch; "%" would start a variable and never does.
func exprQuote(v any) (string, error) { return plainQuote(v, `'`, "*") }

func plainQuote(v any, quote, extra string) (string, error) {
	s := fmt.Sprint(v)
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._:+@=,|~ -", r) || strings.ContainsRune(extra, r)
		if !ok {
			return "", fmt.Errorf("%q: character %q cannot be quoted safely in a config", s, r)
		}
	}
	return quote + s + quote, nil
}
