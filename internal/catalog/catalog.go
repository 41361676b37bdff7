// Package catalog is what bulkhead knows about each piece of software it can
// run: one Descriptor per (role, software), with the ports it serves, the
// Debian packages it needs, the accounts it runs as and the privileges it
// needs beyond every node's base set. Other packages ask the catalog instead
// of switching on a software name. It is pure data: no I/O, and it imports
// nothing of bulkhead's, so that spec, plan and render can all depend on it.
package catalog

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Roles in the order the plan lays nodes out. spec re-exports them; the
// order is part of its contract.
const (
	RoleEdge    = "edge"
	RoleStatic  = "static"
	RoleCache   = "cache"
	RoleDB      = "db"
	RoleStorage = "storage"
	RoleApp     = "app"
	// RoleMonitor scrapes every node's metrics. It is optional, last in
	// plan order, so that it changes no other node's address.
	RoleMonitor = "monitor"
	// RoleMail relays the app nodes' outbound mail. It is optional and
	// after the monitor in plan order, for the same reason.
	RoleMail = "mail"
)

// SMTPPort is where the mail relay takes the app nodes' mail.
const SMTPPort = 25

// Storage protocols. The storage tier has no choice of daemon, only of
// protocol, so its descriptors are keyed by protocol.
const (
	ProtocolNFS  = "nfs"
	ProtocolSFTP = "sftp"
)

// Port is a transport port a daemon serves.
type Port struct {
	Proto  string
	Number int
}

// Descriptor is one piece of software playing one role.
type Descriptor struct {
	// Role and Software name it: "db", "postgresql". For storage,
	// Software is the protocol.
	Role     string
	Software string
	// Ports are the ports the node serves, its main service first.
	Ports []Port
	// Packages are the Debian packages the node needs.
	Packages []string
	// HostPackages are what the host itself needs to use the node, such as
	// the client that mounts storage's files.
	HostPackages []string
	// PHPClient is the PHP extension app nodes need to reach this node;
	// empty when they need none.
	PHPClient string
	// PDODriver is the PDO driver name PHP connects to this database with.
	PDODriver string
	// PHPSessionHandler is PHP's session.save_handler for keeping
	// sessions in this cache, and PHPSessionPath its save_path, with
	// %s for the cache's host:port.
	PHPSessionHandler, PHPSessionPath string
	// Accounts are the users the node's daemons run as; they must exist in
	// the /etc the nodes see.
	Accounts []string
	// Groups are groups the node's daemons need besides their accounts'
	// own, such as postfix's postdrop; they too must exist in that /etc.
	Groups []string
	// DirOwner is the account that owns the node's writable directories;
	// empty means root.
	DirOwner string
	// SecretGroup is the group that reads the node's group-readable
	// secrets; empty means root.
	SecretGroup string
	// Capabilities are the Linux capabilities the node needs beyond the
	// base set every node gets (BaseCapabilities).
	Capabilities []string
	// Durable says the node keeps data that must outlive it (a
	// database's tables, the site's files), so a backend gives it a
	// volume of its own rather than scratch space.
	Durable bool
	// Sysctls are settings of the node's own network namespace (keys
	// under net.) that its daemons need, set before the node starts.
	Sysctls map[string]string
	// SiteCheck, if set, is how up checks the site's code this node
	// runs before the code goes live.
	SiteCheck *SiteCheck
	// Backup, for a database, is how its data is dumped into a backup
	// archive and loaded back; nil for the other roles.
	Backup *Backup
	// Exporter is the Prometheus exporter that reads the daemon's own
	// figures inside the node, for the monitor to scrape: a Debian
	// package, or the daemon's own (haproxy's); nil where Debian packages
	// none for it (memcached, php-fpm, lighttpd, caddy). It runs only in
	// a stack with a monitor.
	Exporter *Exporter
	// Stats, where Debian packages no exporter, names the figures the
	// node's agent reads from the daemon and serves as metrics on its
	// own port, only in a stack with a monitor: StatsMemcached or
	// StatsPHPFPM; empty for none.
	Stats string
}

// Exporter is a role's Prometheus exporter.
type Exporter struct {
	// Package is the Debian package, which installs the exporter as
	// /usr/bin/Package and the prometheus account it runs as; empty
	// when the daemon serves Prometheus's format itself.
	Package string
	// Port is where the exporter serves /metrics, on the same address as
	// the node's agent.
	Port Port
	// Status is the port of the daemon's status page on the node's
	// loopback, which the exporter reads; zero if it needs none. An app
	// node's web server serves php-fpm's status there too, for the
	// agent (StatsPHPFPM).
	Status Port
}

// The figures the agent translates into metrics (Descriptor.Stats).
const (
	// StatsMemcached is memcached's "stats" command, which the agent
	// sends to the daemon's service port on the node's own address.
	StatsMemcached = "memcached"
	// StatsPHPFPM is php-fpm's status page in JSON, which the agent
	// reads through the web server's status server (Exporter.Status)
	// at StatusPathPHPFPM.
	StatsPHPFPM = "php-fpm"
)

// StatusPathPHPFPM is php-fpm's pm.status_path, which an app node's web
// server serves on its loopback status server alone.
const StatusPathPHPFPM = "/fpm-status"

// MonitorAccount is the account every packaged exporter runs as: it owns
// nothing in the node. The databases let it in by who it is on their
// local socket (MariaDB's unix_socket, PostgreSQL's peer), with no
// password to keep, and grant it nothing but their status.
const MonitorAccount = "prometheus"

// SiteCheck parses each new or changed site file whose name ends in one
// of Extensions: Argv with the file's path appended, run on the host,
// exits 0 when the file parses and prints the error when it does not.
type SiteCheck struct {
	Extensions []string
	Argv       []string
}

// phpCheck is PHP's own parser (php8.2-cli, which php8.2-fpm depends on),
// without php.ini so that the host's settings change nothing.
var phpCheck = &SiteCheck{Extensions: []string{".php", ".phtml", ".inc"}, Argv: []string{"php8.2", "-n", "-l"}}

// Backup is how a database's data goes into a backup archive and back.
// Dump and Restore are argv run inside the db node through its agent (as
// exec does), as root: Dump writes the dump to stdout, Restore reads one
// from stdin. Their arguments may hold placeholders, which Expand fills in
// from what the renderer knows:
//
//	{conf}  the node's rendered configs (render.Layout.Conf)
//	{run}   the node's run directory, which holds the server's socket (Layout.Run)
//	{port}  the port the server listens on
//	{db}    the site's database (plan.Site.DBName)
//	{user}  the site's database user (plan.Site.DBUser)
type Backup struct {
	// DumpFormat names what Dump writes and Restore reads. A restore
	// refuses a dump of another format (see AcceptsDump).
	DumpFormat string
	// DumpFile is the dump's file name in an archive, under db/.
	DumpFile string
	Dump     []string
	Restore  []string

	// Version prints the server's version. A backup runs it in the db
	// node and records the version with the dump; a restore runs it on
	// the host before it changes anything (a node runs the host's /usr,
	// so the host's server is the one the node will run).
	Version []string
	// VersionRE finds the version number in Version's output, as its
	// first group.
	VersionRE *regexp.Regexp
	// Series is how many leading numbers of a version name its release
	// series, whose servers all load each other's dumps: 2 for MariaDB
	// (10.11), 1 for PostgreSQL since 10 (15).
	Series int
}

// ParseVersion finds the server's version in what Version printed.
func (b *Backup) ParseVersion(out string) (string, error) {
	m := b.VersionRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in %s's output %q", b.Version[0], strings.TrimSpace(out))
	}
	return m[1], nil
}

// series is the release series of version v: its first Series numbers.
func (b *Backup) series(v string) ([]int, error) {
	parts := strings.Split(v, ".")
	if len(parts) < b.Series {
		return nil, fmt.Errorf("version %q has fewer than %d numbers", v, b.Series)
	}
	out := make([]int, b.Series)
	for i := range out {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return nil, fmt.Errorf("version %q: %q is not a number", v, parts[i])
		}
		out[i] = n
	}
	return out, nil
}

// LoadsVersion says whether d's server at version here can load a dump
// that a server at version dumped wrote. A dump of the same release
// series or an older one loads; one of a newer series may use what this
// server lacks (pg_restore refuses a newer archive outright), so it is
// refused. An archive that records no version (before bulkhead recorded
// it) is not checked.
func (d *Descriptor) LoadsVersion(dumped, here string) error {
	if d.Backup == nil || dumped == "" {
		return nil
	}
	a, err := d.Backup.series(dumped)
	if err != nil {
		return fmt.Errorf("the dump's %s version: %w", d.Software, err)
	}
	b, err := d.Backup.series(here)
	if err != nil {
		return fmt.Errorf("this host's %s version: %w", d.Software, err)
	}
	if slices.Compare(a, b) > 0 {
		return fmt.Errorf("the dump was made by %s %s, a newer release than this host's %s %s, which may not load it; restore it on a host whose %s is %s or newer",
			d.Software, dumped, d.Software, here, d.Software, joinInts(a))
	}
	return nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ".")
}

// BackupVars are the values of Backup's placeholders for one stack.
type BackupVars struct {
	Conf, Run, DB, User string
	Port                int
}

// Expand returns argv with its placeholders filled in. A placeholder it
// does not know, or one without a value, is an error. A value that makes
// up a whole argument must not start with "-", so that no value can turn
// into an option of the tool.
func (v BackupVars) Expand(argv []string) ([]string, error) {
	vals := map[string]string{"conf": v.Conf, "run": v.Run, "db": v.DB, "user": v.User}
	if v.Port > 0 {
		vals["port"] = strconv.Itoa(v.Port)
	}
	out := make([]string, len(argv))
	for i, arg := range argv {
		var b strings.Builder
		rest := arg
		for {
			open := strings.IndexByte(rest, '{')
			if open < 0 {
				b.WriteString(rest)
				break
			}
			end := strings.IndexByte(rest[open:], '}')
			if end < 0 {
				return nil, fmt.Errorf("argument %q: unclosed placeholder", arg)
			}
			name := rest[open+1 : open+end]
			val, known := vals[name]
			if _, ok := placeholders[name]; !ok {
				return nil, fmt.Errorf("argument %q: unknown placeholder {%s}", arg, name)
			}
			if !known || val == "" {
				return nil, fmt.Errorf("argument %q: no value for {%s}", arg, name)
			}
			if strings.ContainsAny(val, "\x00\n") {
				return nil, fmt.Errorf("argument %q: the value of {%s} holds a NUL or a newline", arg, name)
			}
			if arg == "{"+name+"}" && strings.HasPrefix(val, "-") {
				return nil, fmt.Errorf("argument %q: the value of {%s}, %q, would read as an option", arg, name, val)
			}
			b.WriteString(rest[:open])
			b.WriteString(val)
			rest = rest[open+end+1:]
		}
		out[i] = b.String()
	}
	return out, nil
}

var placeholders = map[string]bool{"conf": true, "run": true, "port": true, "db": true, "user": true}

// AcceptsDump says whether d's database can restore a dump of format,
// and if not, which software could.
func (d *Descriptor) AcceptsDump(format string) error {
	if d.Backup == nil {
		return fmt.Errorf("%s %s has no data to restore", d.Role, d.Software)
	}
	if format == d.Backup.DumpFormat {
		return nil
	}
	var makers []string
	for _, o := range descriptors {
		if o.Backup != nil && o.Backup.DumpFormat == format {
			makers = append(makers, o.Software)
		}
	}
	if len(makers) == 0 {
		return fmt.Errorf("the dump's format %q is unknown to this bulkhead; %s restores %s dumps only", format, d.Software, d.Backup.DumpFormat)
	}
	return fmt.Errorf("the dump is %s, made by %s, but this stack's %s runs %s, which restores %s dumps only; restore it on a stack whose %s is %s",
		format, strings.Join(makers, " or "), d.Role, d.Software, d.Backup.DumpFormat, d.Role, strings.Join(makers, " or "))
}

// asPostgres runs a PostgreSQL client as the postgres account, which peer
// authentication on the local socket admits, as render's init does.
var asPostgres = []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}

// pgBin is where Debian's postgresql-15 keeps its programs; it follows
// render's pgBin (TestBackupPrograms there keeps the two in step).
const pgBin = "/usr/lib/postgresql/15/bin/"

// mariadbBackup dumps with mariadb-dump as root over the socket that my.cnf's
// [client] names. --single-transaction reads every InnoDB table in one
// consistent snapshot without locking the site out. The dump drops and
// re-creates each table it holds; tables it does not hold are left alone.
// mariadb-backup (a physical copy of the datadir, faster for large
// databases) is the alternative; it needs the server's datadir rather than
// a stream, and its copy only fits the same server version.
var mariadbBackup = &Backup{
	DumpFormat: "mariadb-sql",
	DumpFile:   "mariadb.sql",
	Dump: []string{"mariadb-dump", "--defaults-file={conf}/my.cnf",
		"--single-transaction", "--routines", "--triggers", "--events", "{db}"},
	Restore: []string{"mariadb", "--defaults-file={conf}/my.cnf", "{db}"},
	// "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu ..."
	Version:   []string{"mariadbd", "--version"},
	VersionRE: regexp.MustCompile(`\bVer (\d+\.\d+\.\d+)-MariaDB`),
	Series:    2,
}

// postgresBackup dumps in pg_dump's custom format, compressed and
// restorable selectively. The restore connects as postgres and creates
// objects as the site's user (--no-owner --role), whom the app logs in as;
// --single-transaction makes it all or nothing.
var postgresBackup = &Backup{
	DumpFormat: "postgresql-custom",
	DumpFile:   "postgresql.dump",
	Dump: append(slices.Clone(asPostgres), pgBin+"pg_dump", "--format=custom",
		"--host={run}", "--port={port}", "--username=postgres", "--dbname={db}"),
	Restore: append(slices.Clone(asPostgres), pgBin+"pg_restore", "--clean", "--if-exists", "--no-owner",
		"--role={user}", "--single-transaction",
		"--host={run}", "--port={port}", "--username=postgres", "--dbname={db}"),
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	Version:   []string{pgBin + "postgres", "--version"},
	VersionRE: regexp.MustCompile(`\(PostgreSQL\) (\d+(?:\.\d+)+)`),
	Series:    1,
}

// BaseCapabilities are every node's only privileges. Daemons start as
// root to bind port 80 and then drop to their own users; none may touch
// the network stack (NET_ADMIN, NET_RAW), mount (SYS_ADMIN) or trace
// (SYS_PTRACE). A descriptor's Capabilities add what a daemon needs
// beyond them, such as sshd's chroot.
var BaseCapabilities = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE"}

// AllCapabilities are the capabilities a node running d gets: the base
// set, then d's own.
func (d *Descriptor) AllCapabilities() []string {
	return append(slices.Clone(BaseCapabilities), d.Capabilities...)
}

func tcp(n int) Port { return Port{Proto: "tcp", Number: n} }

// MetricsPort is where every node's agent serves the node's own metrics,
// on the node's address on the network the monitor scrapes it over. It is
// node_exporter's port: the agent plays that part for its node.
var MetricsPort = tcp(9100)

// descriptors lists every choice; within a role the first is the default.
var descriptors = []Descriptor{
	// nginx's stub_status counts requests and connections, no status
	// codes and no times: the agent reads those from the access log.
	{Role: RoleEdge, Software: "nginx", Ports: []Port{tcp(80), tcp(443)},
		Packages: []string{"nginx"}, Accounts: []string{"www-data"},
		Exporter: &Exporter{Package: "prometheus-nginx-exporter", Port: tcp(9113), Status: tcp(8079)}},
	// haproxy serves Prometheus's format itself (Debian builds it with
	// USE_PROMEX), from its own counters: upstream retired
	// haproxy_exporter, which scrapes the CSV stats page, in its favour.
	{Role: RoleEdge, Software: "haproxy", Ports: []Port{tcp(80), tcp(443)},
		Packages: []string{"haproxy"}, Accounts: []string{"haproxy"},
		Exporter: &Exporter{Port: tcp(8405)}},

	{Role: RoleStatic, Software: "lighttpd", Ports: []Port{tcp(80)},
		Packages: []string{"lighttpd"}, Accounts: []string{"www-data"}},
	{Role: RoleStatic, Software: "nginx", Ports: []Port{tcp(80)},
		Packages: []string{"nginx"}, Accounts: []string{"www-data"}},
	// Caddy never drops root itself: setpriv starts it as www-data with
	// the base set's bind capability kept ambient, and it writes its log,
	// pid file, state and admin socket as www-data, so the node's
	// directories are www-data's.
	//
	// A reload binds a second listening socket with SO_REUSEPORT and
	// closes the old one, and the kernel resets the connections still
	// queued on it, unless tcp_migrate_req (Linux 5.14) hands them to the
	// new socket. As of 2026-11, without it, Caddy 2.6.2 reset one to
	// nine of about two thousand requests on new connections across four
	// reloads (TestStaticCaddyReload).
	{Role: RoleStatic, Software: "caddy", Ports: []Port{tcp(80)},
		Packages: []string{"caddy"}, Accounts: []string{"www-data"}, DirOwner: "www-data",
		Sysctls: map[string]string{"net.ipv4.tcp_migrate_req": "1"}},

	// The app's choices name the web server in front of php-fpm, which
	// reads the app's secrets as www-data.
	// The exporter reads mod_status (or nginx's stub_status); the agent
	// reads php-fpm's status, for which Debian packages no exporter,
	// through the same loopback status server.
	{Role: RoleApp, Software: "apache2", Ports: []Port{tcp(80)},
		Packages: []string{"apache2", "php8.2-fpm"}, Accounts: []string{"www-data"}, SecretGroup: "www-data", SiteCheck: phpCheck,
		Exporter: &Exporter{Package: "prometheus-apache-exporter", Port: tcp(9117), Status: tcp(8079)}, Stats: StatsPHPFPM},
	{Role: RoleApp, Software: "nginx", Ports: []Port{tcp(80)},
		Packages: []string{"nginx", "php8.2-fpm"}, Accounts: []string{"www-data"}, SecretGroup: "www-data", SiteCheck: phpCheck,
		Exporter: &Exporter{Package: "prometheus-nginx-exporter", Port: tcp(9113), Status: tcp(8079)}, Stats: StatsPHPFPM},

	{Role: RoleCache, Software: "memcached", Ports: []Port{tcp(11211)},
		Packages: []string{"memcached"}, PHPClient: "php8.2-memcached", Accounts: []string{"memcache"},
		PHPSessionHandler: "memcached", PHPSessionPath: "%s", Stats: StatsMemcached},
	{Role: RoleCache, Software: "redis", Ports: []Port{tcp(6379)},
		Packages: []string{"redis-server"}, PHPClient: "php8.2-redis", Accounts: []string{"redis"},
		PHPSessionHandler: "redis", PHPSessionPath: "tcp://%s",
		Exporter: &Exporter{Package: "prometheus-redis-exporter", Port: tcp(9121)}},

	{Role: RoleDB, Software: "mariadb", Ports: []Port{tcp(3306)},
		Packages: []string{"mariadb-server", "mariadb-client"}, PHPClient: "php8.2-mysql", PDODriver: "mysql",
		Accounts: []string{"mysql"}, DirOwner: "mysql", SecretGroup: "mysql", Backup: mariadbBackup, Durable: true,
		Exporter: &Exporter{Package: "prometheus-mysqld-exporter", Port: tcp(9104)}},
	{Role: RoleDB, Software: "postgresql", Ports: []Port{tcp(5432)},
		Packages: []string{"postgresql"}, PHPClient: "php8.2-pgsql", PDODriver: "pgsql",
		Accounts: []string{"postgres"}, DirOwner: "postgres", SecretGroup: "postgres", Backup: postgresBackup, Durable: true,
		Exporter: &Exporter{Package: "prometheus-postgres-exporter", Port: tcp(9187)}},

	// The host mounts SFTP with sshfs, which depends on fuse3 and
	// openssh-client. sshd chroots each user and writes login records.
	{Role: RoleStorage, Software: ProtocolSFTP, Ports: []Port{tcp(22)},
		Packages: []string{"openssh-server"}, HostPackages: []string{"openssh-client", "sshfs"},
		Accounts: []string{"sshd"}, Capabilities: []string{"CAP_SYS_CHROOT", "CAP_AUDIT_WRITE"}, Durable: true},
	// ganesha's VFS backend opens files by handle. The export lives on the
	// node's own data directory.
	{Role: RoleStorage, Software: ProtocolNFS, Ports: []Port{tcp(2049)},
		Packages: []string{"nfs-ganesha", "nfs-ganesha-vfs"}, Capabilities: []string{"CAP_DAC_READ_SEARCH"}, Durable: true},
}

// monitorDescriptors are the monitor's choices. Prometheus drops root
// itself only with help: setpriv starts it as prometheus, which owns the
// node's data directory where its time series live.
var monitorDescriptors = []Descriptor{
	{Role: RoleMonitor, Software: "prometheus", Ports: []Port{tcp(9090)},
		Packages: []string{"prometheus"}, Accounts: []string{"prometheus"}, DirOwner: "prometheus"},
}

// mailDescriptors are the mail relay's choices. Postfix runs unprivileged
// apart from its master, which starts as root, binds port 25 and hands
// every other job to processes that run as postfix (chroot off: a node has
// no CAP_SYS_CHROOT, and its container is already a smaller world). Its
// queue lives on the node's own disk, so held mail outlives a restart.
// OpenSMTPD was the alternative; as of 2026-11, Debian 12's 6.8 has no
// foreground mode that keeps its privilege-separated children in one
// process group, and no JSON view of its queue, which postqueue -j gives.
var mailDescriptors = []Descriptor{
	{Role: RoleMail, Software: "postfix", Ports: []Port{tcp(SMTPPort)},
		Packages: []string{"postfix", "libsasl2-modules"}, Accounts: []string{"postfix"}, Groups: []string{"postdrop"}, Durable: true},
}

func init() {
	descriptors = append(descriptors, monitorDescriptors...)
	descriptors = append(descriptors, mailDescriptors...)
}

// Lookup returns the descriptor of software playing role. The descriptor
// is shared: callers must not change it.
func Lookup(role, software string) (*Descriptor, error) {
	for i := range descriptors {
		if d := &descriptors[i]; d.Role == role && d.Software == software {
			return d, nil
		}
	}
	if names := Softwares(role); len(names) > 0 {
		return nil, fmt.Errorf("unknown software %q for role %s (use one of: %s)", software, role, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("unknown role %q", role)
}

// Default names the software a role runs when the stack file names none,
// or "" for an unknown role.
func Default(role string) string {
	if names := Softwares(role); len(names) > 0 {
		return names[0]
	}
	return ""
}

// Softwares lists the choices for role, the default first.
func Softwares(role string) []string {
	var out []string
	for _, d := range descriptors {
		if d.Role == role {
			out = append(out, d.Software)
		}
	}
	return out
}

// All returns every descriptor, grouped by role, each role's default
// first. The descriptors are shared: callers must not change them.
func All() []*Descriptor {
	out := make([]*Descriptor, len(descriptors))
	for i := range descriptors {
		out[i] = &descriptors[i]
	}
	return out
}

// Accounts lists every account some node's daemons run as, sorted.
func Accounts() []string {
	var out []string
	for _, d := range descriptors {
		out = append(out, d.Accounts...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Groups lists every group some node's daemons need besides their
// accounts' own, sorted.
func Groups() []string {
	var out []string
	for _, d := range descriptors {
		out = append(out, d.Groups...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hostUnits are the systemd units that Debian packages the nodes need
// enable on the host itself. The nodes run the daemons; the host's own
// copies would serve on the host's addresses after a reboot.
var hostUnits = map[string][]string{
	"nginx":          {"nginx.service"},
	"haproxy":        {"haproxy.service"},
	"lighttpd":       {"lighttpd.service"},
	"caddy":          {"caddy.service"},
	"apache2":        {"apache2.service", "apache-htcacheclean.service"},
	"php8.2-fpm":     {"php8.2-fpm.service"},
	"memcached":      {"memcached.service"},
	"redis-server":   {"redis-server.service"},
	"mariadb-server": {"mariadb.service"},
	"postgresql":     {"postgresql.service"},
	"openssh-server": {"ssh.service"},
	"nfs-ganesha":    {"nfs-ganesha.service"},
	"prometheus":     {"prometheus.service"},
	"postfix":        {"postfix.service"},

	"prometheus-nginx-exporter":    {"prometheus-nginx-exporter.service"},
	"prometheus-apache-exporter":   {"prometheus-apache-exporter.service"},
	"prometheus-mysqld-exporter":   {"prometheus-mysqld-exporter.service"},
	"prometheus-postgres-exporter": {"prometheus-postgres-exporter.service"},
	"prometheus-redis-exporter":    {"prometheus-redis-exporter.service"},
}

// HostUnits lists the host's own service units that installing packages
// brings, sorted, for up to disable.
func HostUnits(packages []string) []string {
	var out []string
	for _, p := range packages {
		out = append(out, hostUnits[p]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
