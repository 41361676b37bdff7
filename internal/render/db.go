package render

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// pgBin is where Debian's postgresql-15 keeps the server's programs; they
// are not on PATH.
const pgBin = "/usr/lib/postgresql/15/bin"

// mariadbPrivileges is what the site user may do in the site's database: run
// the app and its schema migrations. Nothing on other databases, nothing
// global (no FILE, PROCESS, SUPER), no GRANT OPTION.
const mariadbPrivileges = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, " +
	"CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER, EXECUTE"

// mariadbOtherPrivileges are the database-level privileges outside
// mariadbPrivileges. The init file revokes them, and every global one,
// after granting: revoking all and granting again would leave a running
// app node without rights for a moment every time the init runs again
// (a reload for a scaled pool), and its requests would fail.
const mariadbOtherPrivileges = "GRANT OPTION, CREATE ROUTINE, ALTER ROUTINE, EVENT, DELETE HISTORY"

// dbReserved is how many connections beyond the app pool's a database
// allows: the node's own admin and init steps.
const dbReserved = 10

// dbClient is an app node that may log in to the database, at the address
// the database sees it from; on a cluster, every app pod, from the pod
// network.
type dbClient struct {
	Node    string
	Net     netip.Prefix // the node's address/32, or the pod network
	Account string       // MariaDB's 'user'@'host'
}

// dbConf is what the db templates see. Every path comes from the Layout and
// every SQL name or literal is quoted here, so templates only format.
type dbConf struct {
	Node     string
	Bind     []string
	Port     int
	MemoryMB int64
	Workers  int
	// MariaDB: what the init file revokes after granting Privileges.
	OtherPrivileges string
	Users           []dbClient

	MaxConnections int
	DataDir        string
	Socket         string
	Pid            string
	TmpDir         string
	InitFile       string
	BufferPoolMB   int64

	// SQL, already quoted for the engine at hand.
	DB, User, Password, Privileges string
	Hosts                          string // MariaDB: the clients' addresses as a list of literals
	DBLit, UserLit                 string // PostgreSQL: the names as string literals
	CreateRole, CreateDB           string // PostgreSQL: statements as string literals, for \gexec

	// PostgreSQL's files.
	HBA, Ident, Run          string
	SharedBuffersMB, CacheMB int64

	// Monitor is the account of the role exporter, quoted for the
	// engine, which logs in as the system user of the same name on the
	// local socket; MonitorLit is the name as a literal. Empty without
	// a monitor: the account is dropped.
	Monitor, MonitorLit string
	// PostgreSQL: the monitor's name as a string literal, and the
	// statement that creates its role, as one, for \gexec.
	MonitorName, CreateMonitor string
}

// BackupVars are the values of the catalog's backup placeholders (see
// catalog.Backup) for the database node n of p, rendered with layout l: the
// paths its server reads and listens on, the port, and the site's
// database and user.
func BackupVars(p *plan.Plan, n *plan.Node, l Layout) catalog.BackupVars {
	v := catalog.BackupVars{Conf: l.Conf, Run: l.Run, DB: p.Site.DBName, User: p.Site.DBUser}
	if len(n.Listens) > 0 {
		v.Port = n.Listens[0].Number
	}
	return v
}

// dbMariaDB renders MariaDB: my.cnf and the init file that creates the
// site's database and users at every start.
func dbMariaDB(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	l := in.Layout
	c, err := newDBConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	c.DataDir = path.Join(l.Data, "mysql")
	c.Socket = path.Join(l.Run, "mysqld.sock")
	c.Pid = path.Join(l.Run, "mysqld.pid")
	// The node's tmpfs: temporary tables that spill count against its
	// memory, which is what the limit is for.
	c.TmpDir = l.Run
	c.InitFile = l.secret("mariadb-init.sql")
	if err := plainPaths(c.DataDir, c.Socket, c.Pid, c.TmpDir, c.InitFile); err != nil {
		return nil, nil, err
	}
	c.BufferPoolMB = max(n.Memory>>20/2, 8)
	c.DB = mariadbIdent(p.Site.DBName)
	c.User = mariadbString(p.Site.DBUser)
	if c.Password, err = dbPassword(in.Secrets.DBPassword, mariadbString); err != nil {
		return nil, nil, err
	}
	c.Privileges = mariadbPrivileges
	c.OtherPrivileges = mariadbOtherPrivileges
	hosts := make([]string, len(c.Users))
	for i := range c.Users {
		u := &c.Users[i]
		hosts[i] = mariadbString(mariadbHost(u.Net))
		u.Account = c.User + "@" + hosts[i]
	}
	c.Hosts = strings.Join(hosts, ", ")
	c.MonitorLit = mariadbString(catalog.MonitorAccount) + "@'localhost'"
	if n.Exporter != nil {
		c.Monitor = c.MonitorLit
	}

	cnf, err := execTemplate("db-mariadb.cnf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	initSQL, err := execTemplate("db-mariadb-init.sql.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	conf := l.conf("my.cnf")
	files := []File{
		{Path: "my.cnf", Mode: 0o644, Data: cnf},
		// 0440: mariadbd reads it after it has become mysql, so the driver
		// must chown it root:mysql.
		{Path: SecretsDir + "/mariadb-init.sql", Mode: 0o440, Data: initSQL, OnChange: Reload},
	}
	svc := service.Service{
		Name: "mariadb",
		// user = mysql in my.cnf: mariadbd drops root itself.
		Argv: []string{"mariadbd", "--defaults-file=" + conf},
		// Reads user and datadir from my.cnf and chowns the datadir to mysql.
		Setup:   []string{"mariadb-install-db", "--defaults-file=" + conf, "--auth-root-authentication-method=socket", "--skip-test-db"},
		Creates: path.Join(c.DataDir, "mysql"),
		// The init file is idempotent: run again, over the socket as
		// root, it applies changed grants to a running server.
		Reload: &service.Reload{Argv: []string{"mariadb", "--defaults-file=" + conf, "--batch", "--execute=source " + c.InitFile}},
	}
	svcs, err := withExporter(n, in, exporterDaemon{Socket: c.Socket}, []service.Service{svc})
	return files, svcs, err
}

// dbPostgres renders PostgreSQL 15: postgresql.conf, pg_hba.conf and the
// SQL that creates the site's role and database, which has to be run once the
// server is up (PostgreSQL has no init file).
func dbPostgres(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	l := in.Layout
	c, err := newDBConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	c.DataDir = path.Join(l.Data, "postgresql")
	c.HBA = l.conf("pg_hba.conf")
	c.Ident = l.conf("pg_ident.conf")
	c.Pid = path.Join(l.Run, "postgresql.pid")
	c.Run = l.Run
	c.SharedBuffersMB = max(n.Memory>>20/4, 1)
	c.CacheMB = max(n.Memory>>20/2, 1)
	c.DB = pgIdent(p.Site.DBName)
	c.User = pgIdent(p.Site.DBUser)
	c.DBLit = pgString(p.Site.DBName)
	c.UserLit = pgString(p.Site.DBUser)
	c.CreateRole = pgString("CREATE ROLE " + c.User)
	c.CreateDB = pgString("CREATE DATABASE " + c.DB + " OWNER " + c.User + " ENCODING 'UTF8' LOCALE 'C.UTF-8' TEMPLATE template0")
	if c.Password, err = dbPassword(in.Secrets.DBPassword, pgString); err != nil {
		return nil, nil, err
	}
	c.MonitorLit = pgIdent(catalog.MonitorAccount)
	if n.Exporter != nil {
		c.Monitor = c.MonitorLit
		c.MonitorName = pgString(catalog.MonitorAccount)
		c.CreateMonitor = pgString("CREATE ROLE " + c.Monitor)
	}
	conf, err := execTemplate("db-postgresql.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	hba, err := execTemplate("db-pg_hba.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	ident, err := execTemplate("db-pg_ident.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	initSQL, err := execTemplate("db-postgresql-init.sql.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	files := []File{
		{Path: "postgresql.conf", Mode: 0o644, Data: conf},
		// The server re-reads both on HUP.
		{Path: "pg_hba.conf", Mode: 0o644, Data: hba, OnChange: Reload},
		{Path: "pg_ident.conf", Mode: 0o644, Data: ident, OnChange: Reload},
		// 0440: psql runs as postgres (peer authentication), so the driver
		// must chown it root:postgres.
		{Path: SecretsDir + "/postgresql-init.sql", Mode: 0o440, Data: initSQL, OnChange: Reload},
	}
	// PostgreSQL refuses to run as root and has no option to drop it, so
	// setpriv (util-linux) becomes postgres and execs it: same PID, so the
	// agent's signals reach the server.
	asPostgres := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	datadir := c.DataDir
	initSQLRun := append(slices.Clone(asPostgres), path.Join(pgBin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", l.Run, "-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", "postgres",
		"-f", l.secret("postgresql-init.sql"))
	svc := service.Service{
		Name: "postgresql",
		Argv: append(slices.Clone(asPostgres), path.Join(pgBin, "postgres"), "-c", "config_file="+l.conf("postgresql.conf")),
		Setup: append(slices.Clone(asPostgres), path.Join(pgBin, "initdb"), "--pgdata="+datadir,
			"--username=postgres", "--auth-local=peer", "--auth-host=scram-sha-256",
			"--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"),
		Creates: path.Join(datadir, "PG_VERSION"),
		// The site's role and database, over the local socket as postgres.
		Init: initSQLRun,
		// HUP re-reads pg_hba.conf; the idempotent init applies what
		// else changed for the pool.
		Reload: &service.Reload{Signal: "HUP", Argv: initSQLRun},
	}
	svcs, err := withExporter(n, in, exporterDaemon{Socket: l.Run, Port: c.Port}, []service.Service{svc})
	return files, svcs, err
}

// newDBConf gathers what both databases share: the addresses to listen on,
// the app nodes that may log in and how many connections they need.
func newDBConf(p *plan.Plan, n *plan.Node, in Input) (*dbConf, error) {
	if len(n.Listens) != 1 {
		return nil, fmt.Errorf("a database node serves one port, not %v", n.Listens)
	}
	port := n.Listens[0]
	c := &dbConf{Node: n.Name, Port: port.Number, MemoryMB: n.Memory >> 20}
	var counted []string // app nodes whose workers are counted
	for _, f := range p.Flows {
		if f.To != n.Tier || f.Port != port {
			continue
		}
		if a := in.bind(n, f.Network).String(); !slices.Contains(c.Bind, a) {
			c.Bind = append(c.Bind, a)
		}
		for _, d := range p.Tier(f.From) {
			// Only app nodes get an account: an explicit flow from
			// another tier opens the firewall, not the database.
			if d.Role != spec.RoleApp || slices.Contains(counted, d.Name) {
				continue
			}
			counted = append(counted, d.Name)
			c.Workers += dbAppWorkers(d)
			u := dbClient{Node: d.Name, Net: in.client(d, f.Network)}
			if in.Cluster != nil {
				// Pods get their addresses as they start: the grant is
				// the pod network's, and the NetworkPolicies let only
				// app pods reach the port.
				u.Node = "the app pods"
			}
			if !slices.ContainsFunc(c.Users, func(o dbClient) bool { return o.Net == u.Net }) {
				c.Users = append(c.Users, u)
			}
		}
	}
	if len(c.Users) == 0 {
		return nil, fmt.Errorf("no app node reaches %s on %s/%d, so nobody could use the database", n.Name, port.Proto, port.Number)
	}
	if p.Site.DBUser == catalog.MonitorAccount {
		return nil, fmt.Errorf("the site's database user is %s, the monitor's account; name it otherwise (site.database.user)", catalog.MonitorAccount)
	}
	c.MaxConnections = connectionSlots(c.Workers + dbReserved)
	return c, nil
}

// connectionSlots rounds a database's connection need up to a power of
// two, at least 128: the limit is read only at start, and a pool that
// grows within the same slots changes no config, so scaling the app pool
// does not restart the database. An idle slot costs a few kilobytes.
func connectionSlots(need int) int {
	n := 128
	for n < need {
		n *= 2
	}
	return n
}

// dbAppWorkers is how many PHP workers an app node runs, each of which may
// hold one database connection. It follows php-fpm's pm.max_children in
// newAppConf (app.go); keep the two in step.
func dbAppWorkers(app *plan.Node) int {
	return min(max(int((app.Memory-192<<20)/(48<<20)), 2), 64)
}

// dbPassword quotes the site user's password as a string literal. A control
// character has no business in a generated password and would break the
// line-by-line readers of init files, so it is an error rather than escaped.
func dbPassword(pw string, quote func(string) string) (string, error) {
	if pw == "" {
		return "", fmt.Errorf("no database password in the secrets")
	}
	if strings.ContainsFunc(pw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("the database password contains a control character")
	}
	return quote(pw), nil
}

// mariadbString quotes s as a MariaDB string literal (in the default
// sql_mode, where backslash escapes).
func mariadbString(s string) string { return "'" + mariadbEscaper.Replace(s) + "'" }

var mariadbEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`)

// mariadbIdent quotes s as a MariaDB identifier.
func mariadbIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// pgString quotes s as a PostgreSQL escape string literal, E'...', whose
// meaning does not depend on standard_conforming_strings.
func pgString(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// pgConfString quotes s as a string value in postgresql.conf, which has no
// E-prefixed form but reads backslash escapes and doubled quotes.
func pgConfString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// pgIdent quotes s as a PostgreSQL identifier.
func pgIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// plainRE matches the paths that can go unquoted into my.cnf, sshd_config
// and ganesha.conf. mariadb-install-db word-splits my.cnf's values in
// shell, sshd expands % in some paths, and '#' starts a comment in all
// three: refusing such paths is simpler and safer than quoting for each.
var plainRE = regexp.MustCompile(`^/[A-Za-z0-9._/+-]*$`)

// plainPaths checks that every path can be written unquoted into a config.
func plainPaths(paths ...string) error {
	for _, p := range paths {
		if !plainRE.MatchString(p) {
			return fmt.Errorf("path %q has characters that configs cannot hold unquoted; use letters, digits and . _ / + -", p)
		}
	}
	return nil
}

// mariadbHost writes a client's network as MariaDB's account host: an
// address alone, or address/netmask, the form MariaDB matches a network
// with (it has no /bits).
func mariadbHost(c netip.Prefix) string {
	if c.IsSingleIP() {
		return c.Addr().String()
	}
	// The mask is the address whose first Bits bits are set.
	var m [4]byte
	for i := range c.Bits() {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return c.Masked().Addr().String() + "/" + netip.AddrFrom4(m).String()
}
