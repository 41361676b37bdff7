package render_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// trickyPassword has every character that SQL quoting must get right.
const trickyPassword = `it's a \ "tricky" pass; --`

// TestMariaDBLive initialises a datadir with the rendered Setup, starts
// mariadbd with the rendered config on loopback, and checks through the
// socket that init.sql made exactly the plan's accounts. It then plants
// accounts the plan does not name and restarts twice: init.sql must run
// again without error and remove them, and a changed password and a changed
// app address must take effect.
func TestMariaDBLive(t *testing.T) {
	hosttest.RequireRoot(t) // the daemon runs as its own user and the test chowns its directories
	requireTool(t, "mariadbd")
	requireTool(t, "mariadb-install-db")
	requireTool(t, "mariadb")
	p, n, l := renderRole(t, "default", spec.RoleDB)
	if len(n.Services) != 1 {
		t.Fatalf("services = %+v, want one", n.Services)
	}
	svc := n.Services[0]
	conf := filepath.Join(l.Conf, "my.cnf")
	cnf := string(fileOf(t, n, "my.cnf").Data)
	for _, want := range []string{
		"bind-address = " + p.Role(spec.RoleDB)[0].Addr(plan.NetPrivate).String() + "\n",
		"socket = " + filepath.Join(l.Run, "mysqld.sock") + "\n",
		"datadir = " + filepath.Join(l.Data, "mysql") + "\n",
		"init-file = " + filepath.Join(l.Conf, render.SecretsDir, "mariadb-init.sql") + "\n",
		"skip-name-resolve\n",
		"innodb_buffer_pool_size = 512M\n", // half of the default 1G
	} {
		if !strings.Contains(cnf, want) {
			t.Errorf("my.cnf lacks %q", want)
		}
	}
	if f := fileOf(t, n, "secrets/mariadb-init.sql"); f.Mode != 0o440 {
		t.Errorf("init.sql has mode %o, want 0440: it holds the password, and mysql reads it through its group", f.Mode)
	}
	ownLayout(t, l, "mysql", "secrets/mariadb-init.sql")

	mustRun(t, svc.Setup...)
	if _, err := os.Stat(svc.Creates); err != nil {
		t.Fatalf("Setup did not create %s: %v", svc.Creates, err)
	}
	port := strconv.Itoa(freePort(t, "127.0.0.1"))
	sql := func(q string) (string, error) {
		out, err := exec.Command("mariadb", "--defaults-file="+conf, "-N", "-B", "-e", q).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	must := func(q string) string {
		t.Helper()
		out, err := sql(q)
		if err != nil {
			t.Fatalf("%s: %v\n%s", q, err, out)
		}
		return out
	}
	start := func() *daemon {
		t.Helper()
		d := startDaemon(t, append(slices.Clone(svc.Argv), "--bind-address=127.0.0.1", "--port="+port)...)
		d.waitFor(t, "mariadb answering on its socket", func() error { _, err := sql("SELECT 1"); return err })
		return d
	}
	appAddrs := func(p *plan.Plan) []string {
		var out []string
		for _, a := range p.Role(spec.RoleApp) {
			out = append(out, a.Addr(plan.NetPrivate).String())
		}
		slices.Sort(out)
		return out
	}
	check := func(want []string) {
		t.Helper()
		if got := must("SHOW DATABASES LIKE 'site'"); got != "site" {
			t.Errorf("database site: got %q", got)
		}
		if got := strings.Fields(must("SELECT Host FROM mysql.user WHERE User = 'site' ORDER BY Host")); !slices.Equal(got, want) {
			t.Errorf("site user exists at %v, want exactly %v", got, want)
		}
		for _, h := range want {
			grants := strings.Split(must(fmt.Sprintf("SHOW GRANTS FOR 'site'@'%s'", h)), "\n")
			if len(grants) != 2 || !strings.HasPrefix(grants[0], "GRANT USAGE ON *.* TO `site`@") ||
				!strings.Contains(grants[1], " ON `site`.* TO `site`@") || strings.Contains(grants[1], "GRANT OPTION") {
				t.Errorf("grants of site@%s are not exactly rights on site.*:\n%s", h, strings.Join(grants, "\n"))
			}
		}
		// One password for all: after a change, the accounts that already
		// existed have the new one too (the new account proves which).
		if got := must("SELECT COUNT(DISTINCT authentication_string) FROM mysql.user WHERE User = 'site'"); got != "1" {
			t.Errorf("site accounts have %s different passwords, want 1", got)
		}
		if got := must("SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User = '' OR (User = 'root' AND Host <> 'localhost')"); got != "" {
			t.Errorf("accounts that must not exist: %s", got)
		}
		if got := must("SELECT plugin FROM mysql.user WHERE User = 'root'"); got != "unix_socket" {
			t.Errorf("root authenticates with %q, want unix_socket only", got)
		}
	}

	d := start()
	want := appAddrs(p)
	check(want)
	// The reload a scaled pool brings runs the init file on the running
	// server, as root over the socket, and changes nothing here.
	if svc.Reload == nil || len(svc.Reload.Argv) == 0 {
		t.Fatalf("mariadb's service has no reload command: %+v", svc.Reload)
	}
	mustRun(t, svc.Reload.Argv...)
	check(want)
	// Plant what init.sql must remove: an account of a node that left the
	// pool, an anonymous user, root from anywhere, and a global grant.
	must("CREATE USER 'site'@'10.77.0.99' IDENTIFIED BY 'x'; CREATE USER ''@'localhost'; CREATE USER 'root'@'%' IDENTIFIED BY 'x'; " +
		"GRANT ALL ON *.* TO 'site'@'" + want[0] + "'")
	d.stop(t)

	d = start()
	check(want)
	d.stop(t)

	// app-1 moves to 127.0.0.1 and the password changes: the old account
	// goes, and the new one logs in over TCP with the new password.
	moveToLoopback(p, p.Node("app-1"), plan.NetPrivate, "127.0.0.1")
	rerenderRole(t, p, spec.RoleDB, l, withPassword(testSecrets(p), trickyPassword))
	ownLayout(t, l, "mysql", "secrets/mariadb-init.sql")
	d = start()
	check(appAddrs(p))
	site := func(q string) (string, error) {
		out, err := exec.Command("mariadb", "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", port,
			"-u", "site", "--password="+trickyPassword, "-N", "-B", "site", "-e", q).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := site("SELECT CURRENT_USER(); CREATE TABLE t (id INT PRIMARY KEY); DROP TABLE t"); err != nil || out != "site@127.0.0.1" {
		t.Errorf("site user over TCP with the new password: %v\n%s", err, out)
	}
	if out, err := site("CREATE DATABASE other"); err == nil || !strings.Contains(out, "denied") {
		t.Errorf("site user created another database (%v): %s", err, out)
	}
	if out, err := exec.Command("mariadb", "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", port,
		"-u", "site", "--password=golden-db-password", "site", "-e", "SELECT 1").CombinedOutput(); err == nil {
		t.Errorf("the old password still works: %s", out)
	}
	d.stop(t)

	// With a monitor, the exporter's account logs in as the system user
	// it runs as, on the socket alone, and holds no privilege: it reads
	// the server's status, not the site. Without one, it is gone.
	_, err := user.Lookup(catalog.MonitorAccount)
	hosttest.Require(t, err == nil, "the %s account (apt-get install prometheus): %v", catalog.MonitorAccount, err)
	db := p.Role(spec.RoleDB)[0]
	db.Exporter = &plan.Exporter{Package: "prometheus-mysqld-exporter", Addr: netip.MustParseAddrPort("127.0.0.1:9104")}
	rerenderRole(t, p, spec.RoleDB, l, withPassword(testSecrets(p), trickyPassword))
	ownLayout(t, l, "mysql", "secrets/mariadb-init.sql")
	d = start()
	monitor := func(as, q string) (string, error) {
		argv := []string{"setpriv", "--reuid=" + as, "--regid=" + as, "--init-groups", "--", "mariadb", "--no-defaults",
			"--socket=" + filepath.Join(l.Run, "mysqld.sock"), "-u", catalog.MonitorAccount, "-N", "-B", "-e", q}
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := monitor(catalog.MonitorAccount, "SHOW GRANTS; SHOW GLOBAL STATUS LIKE 'Uptime'"); err != nil ||
		!strings.HasPrefix(out, "GRANT USAGE ON *.* TO `prometheus`@`localhost` IDENTIFIED VIA unix_socket WITH MAX_USER_CONNECTIONS 3\nUptime\t") {
		t.Errorf("the exporter's account: %v: %q, want USAGE alone, reading the status", err, out)
	}
	if out, err := monitor(catalog.MonitorAccount, "USE site"); err == nil {
		t.Errorf("the exporter's account reached the site's database: %s", out)
	}
	if out, err := monitor("mysql", "SELECT 1"); err == nil {
		t.Errorf("another system user logged in as the exporter's account: %s", out)
	}
	d.stop(t)
	db.Exporter = nil
	rerenderRole(t, p, spec.RoleDB, l, withPassword(testSecrets(p), trickyPassword))
	ownLayout(t, l, "mysql", "secrets/mariadb-init.sql")
	d = start()
	if got := must("SELECT COUNT(*) FROM mysql.user WHERE User = 'prometheus'"); got != "0" {
		t.Errorf("without a monitor, the exporter's account still exists")
	}
	d.stop(t)
}

// TestPostgresHBA checks that pg_hba.conf lets the site user in from exactly
// the app nodes' addresses, and the superuser only over the local socket.
func TestPostgresHBA(t *testing.T) {
	for _, stack := range []string{"alt"} {
		p := loadPlan(t, stack)
		db := p.Role(spec.RoleDB)[0]
		n, err := render.RenderNode(p, db, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)})
		if err != nil {
			t.Fatal(err)
		}
		// The alt stack has a monitor: its exporter logs in as itself on
		// the socket, to the postgres database alone.
		want := []string{"local all postgres peer", "local postgres \"prometheus\" peer"}
		for _, a := range p.Role(spec.RoleApp) {
			want = append(want, fmt.Sprintf("host %q %q %s/32 scram-sha-256", p.Site.DBName, p.Site.DBUser, a.Addr(plan.NetPrivate)))
		}
		if got := confLines(string(fileOf(t, n, "pg_hba.conf").Data)); !slices.Equal(got, want) {
			t.Errorf("%s: pg_hba.conf rules:\n%s\nwant:\n%s", stack, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// On a cluster: the pod network, once, whatever the app pods.
		n, err = render.RenderNode(p, db, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p), Cluster: testCluster})
		if err != nil {
			t.Fatal(err)
		}
		want = []string{want[0], want[1], fmt.Sprintf("host %q %q %s scram-sha-256", p.Site.DBName, p.Site.DBUser, testCluster.PodCIDR)}
		if got := confLines(string(fileOf(t, n, "pg_hba.conf").Data)); !slices.Equal(got, want) {
			t.Errorf("%s on a cluster: pg_hba.conf rules:\n%s\nwant:\n%s", stack, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if conf := string(fileOf(t, n, "postgresql.conf").Data); !strings.Contains(conf, "listen_addresses = '0.0.0.0'\n") {
			t.Errorf("%s on a cluster: postgresql.conf does not listen on any address:\n%s", stack, conf)
		}
	}
}

// TestPostgresLive initialises a cluster with the rendered Setup, starts
// postgres with the rendered config on loopback and runs the rendered
// init.sql twice through psql, as the driver's post-start step would. The
// site role must exist without superpowers and own the site's database;
// pg_hba.conf must refuse it from an address that is no app node's and admit
// it, with the current password, once an app node has that address.
func TestPostgresLive(t *testing.T) {
	hosttest.RequireRoot(t) // the daemon runs as its own user and the test chowns its directories
	bin := "/usr/lib/postgresql/15/bin"
	_, err := os.Stat(filepath.Join(bin, "postgres"))
	hosttest.Require(t, err == nil, "postgresql-15 (apt-get install postgresql): %v", err)
	requireTool(t, "setpriv")
	p, n, l := renderRole(t, "alt", spec.RoleDB)
	svc := n.Services[len(n.Services)-1] // after the monitor's exporter
	ownLayout(t, l, "postgres", "secrets/postgresql-init.sql")
	mustRun(t, svc.Setup...)
	if _, err := os.Stat(svc.Creates); err != nil {
		t.Fatalf("Setup did not create %s: %v", svc.Creates, err)
	}
	port := strconv.Itoa(freePort(t, "127.0.0.1"))
	asPostgres := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	psql := func(args ...string) (string, error) {
		argv := append(slices.Clone(asPostgres), filepath.Join(bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
			"-h", l.Run, "-p", port, "-U", "postgres", "-d", "postgres")
		out, err := exec.Command(argv[0], append(argv[1:], args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	must := func(q string) string {
		t.Helper()
		out, err := psql("-A", "-t", "-c", q)
		if err != nil {
			t.Fatalf("%s: %v\n%s", q, err, out)
		}
		return out
	}
	initSQL := func() {
		t.Helper()
		if out, err := psql("-f", filepath.Join(l.Conf, render.SecretsDir, "postgresql-init.sql")); err != nil {
			t.Fatalf("init.sql: %v\n%s", err, out)
		}
	}
	site := func(pw, db string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", port, "-U", p.Site.DBUser, "-d", db,
			"-c", "SELECT current_user; CREATE TABLE t (id int); DROP TABLE t")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pw, "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	d := startDaemon(t, append(slices.Clone(svc.Argv), "-c", "listen_addresses=127.0.0.1", "-c", "port="+port)...)
	d.waitFor(t, "postgres answering on its socket", func() error { _, err := psql("-c", "SELECT 1"); return err })
	initSQL()
	initSQL()
	if got := must(fmt.Sprintf("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '%s'", p.Site.DBUser)); got != "t|f|f|f" {
		t.Errorf("site role login|super|createdb|createrole = %q, want t|f|f|f", got)
	}
	if got := must(fmt.Sprintf("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '%s'", p.Site.DBName)); got != p.Site.DBUser {
		t.Errorf("site database is owned by %q, want %q", got, p.Site.DBUser)
	}
	if out, err := site("golden-db-password", p.Site.DBName); err == nil || !strings.Contains(out, "no pg_hba.conf entry") {
		t.Errorf("the site user logged in from 127.0.0.1, which is no app node's address (%v): %s", err, out)
	}

	// The monitor's exporter logs in as the system user it runs as, to
	// the postgres database alone, and reads the statistics; it is no
	// superuser and cannot reach the site's data.
	_, err = user.Lookup(catalog.MonitorAccount)
	hosttest.Require(t, err == nil, "the %s account (apt-get install prometheus): %v", catalog.MonitorAccount, err)
	monitor := func(db string) (string, error) {
		argv := []string{"setpriv", "--reuid=" + catalog.MonitorAccount, "--regid=" + catalog.MonitorAccount, "--init-groups", "--",
			filepath.Join(bin, "psql"), "-X", "-A", "-t", "-h", l.Run, "-p", port, "-U", catalog.MonitorAccount, "-d", db,
			"-c", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user; SELECT count(*) > 0 FROM pg_stat_database"}
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := monitor("postgres"); err != nil || out != "f\nt" {
		t.Errorf("the exporter's account on postgres: %v: %q, want no superuser that reads pg_stat_database", err, out)
	}
	if out, err := monitor(p.Site.DBName); err == nil {
		t.Errorf("the exporter's account reached the site's database: %s", out)
	}

	// app-1 moves to 127.0.0.1 and the password changes; the driver would
	// reload the server and rerun init.sql.
	moveToLoopback(p, p.Node("app-1"), plan.NetPrivate, "127.0.0.1")
	rerenderRole(t, p, spec.RoleDB, l, withPassword(testSecrets(p), trickyPassword))
	ownLayout(t, l, "postgres", "secrets/postgresql-init.sql")
	if err := syscall.Kill(d.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	initSQL()
	// The reload is asynchronous: wait until the site user gets in.
	d.waitFor(t, "the site user logged in from app-1's address with the new password", func() error {
		out, err := site(trickyPassword, p.Site.DBName)
		if err == nil && !strings.HasPrefix(out, p.Site.DBUser) {
			err = fmt.Errorf("logged in as %q", out)
		}
		return err
	})
	if out, err := site(trickyPassword, "postgres"); err == nil {
		t.Errorf("site user reached database postgres: %s", out)
	}
	if out, err := site("golden-db-password", p.Site.DBName); err == nil {
		t.Errorf("the old password still works: %s", out)
	}
	d.stopWith(t, syscall.SIGINT)
}

// TestDBRejectsBadInput renders the db node with inputs it must refuse.
func TestDBRejectsBadInput(t *testing.T) {
	bad := func(conf, run string) render.Layout {
		return render.Layout{Conf: conf, Run: run, Log: "/log", Data: "/data", Site: "/site"}
	}
	for _, c := range []struct {
		name   string
		stacks []string
		in     func(render.Secrets) render.Input
	}{
		{"no password", []string{"default", "alt"}, func(s render.Secrets) render.Input {
			return render.Input{Layout: render.DefaultLayout(), Secrets: withPassword(s, "")}
		}},
		{"a newline in the password", []string{"default", "alt"}, func(s render.Secrets) render.Input {
			return render.Input{Layout: render.DefaultLayout(), Secrets: withPassword(s, "a\nb")}
		}},
		// my.cnf cannot quote a path (postgresql.conf can).
		{"a space in a path", []string{"default"}, func(s render.Secrets) render.Input {
			return render.Input{Layout: bad("/etc/bulk head", "/run"), Secrets: s}
		}},
		{"a comment in a path", []string{"default"}, func(s render.Secrets) render.Input {
			return render.Input{Layout: bad("/etc", "/run#x"), Secrets: s}
		}},
	} {
		for _, stack := range c.stacks {
			p := loadPlan(t, stack)
			if _, err := render.RenderNode(p, p.Role(spec.RoleDB)[0], c.in(testSecrets(p))); err == nil {
				t.Errorf("%s: rendered the db node with %s", stack, c.name)
			}
		}
	}
}

// ownLayout does what the driver does for a daemon that runs as user: its
// run, log and data directories are its own, and it reads the given secrets
// through their group. writeNode has already opened the directories above
// the layout to other users, as /var/lib and /etc are in a node.
func ownLayout(t *testing.T, l render.Layout, name string, secrets ...string) {
	t.Helper()
	u, err := user.Lookup(name)
	hosttest.Require(t, err == nil, "user %s, which its daemon's package creates: %v", name, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range []string{l.Run, l.Log, l.Data} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range secrets {
		if err := os.Chown(filepath.Join(l.Conf, s), 0, gid); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupPrograms keeps the catalog's backup commands in step with the
// rendered database: mariadb's read the my.cnf the server and its reload
// read, and PostgreSQL's run, as postgres, from the directory the server
// runs from, over its socket and port.
func TestBackupPrograms(t *testing.T) {
	for _, stack := range []string{"default", "alt"} {
		p := loadPlan(t, stack)
		db := p.Role(spec.RoleDB)[0]
		l := render.DefaultLayout()
		n, err := render.RenderNode(p, db, render.Input{Layout: l, Secrets: testSecrets(p)})
		if err != nil {
			t.Fatal(err)
		}
		d, err := catalog.Lookup(spec.RoleDB, db.Software)
		if err != nil {
			t.Fatal(err)
		}
		vars := render.BackupVars(p, db, l)
		if want := (catalog.BackupVars{Conf: l.Conf, Run: l.Run, DB: p.Site.DBName, User: p.Site.DBUser, Port: db.Listens[0].Number}); vars != want {
			t.Errorf("%s: BackupVars %+v, want %+v", stack, vars, want)
		}
		svc := n.Services[len(n.Services)-1] // the server, after any exporter
		for _, argv := range [][]string{d.Backup.Dump, d.Backup.Restore} {
			got, err := vars.Expand(argv)
			if err != nil {
				t.Fatalf("%s: %v", db.Software, err)
			}
			switch db.Software {
			case "mariadb":
				if want := svc.Argv[1]; got[1] != want {
					t.Errorf("%s: %s reads %s, the server %s", stack, got[0], got[1], want)
				}
			case "postgresql":
				i := slices.Index(svc.Argv, "--")
				if i < 0 || !slices.Equal(got[:i+1], svc.Argv[:i+1]) {
					t.Errorf("%s: %q does not run as the server does, %q", stack, got, svc.Argv)
					continue
				}
				if filepath.Dir(got[i+1]) != filepath.Dir(svc.Argv[i+1]) {
					t.Errorf("%s: %s is not beside the server, %s", stack, got[i+1], svc.Argv[i+1])
				}
				if !slices.Contains(got, "--host="+l.Run) || !slices.Contains(got, "--port="+strconv.Itoa(db.Listens[0].Number)) {
					t.Errorf("%s: %q does not use the server's socket in %s", stack, got, l.Run)
				}
			default:
				t.Errorf("%s: no check for %s's backup", stack, db.Software)
			}
		}
	}
}
