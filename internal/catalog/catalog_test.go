package catalog

import (
	"slices"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, c := range []struct {
		role, software string
		port           Port
		ok             bool
	}{
		{RoleEdge, "haproxy", tcp(80), true},
		{RoleStatic, "lighttpd", tcp(80), true},
		{RoleApp, "apache2", tcp(80), true},
		{RoleCache, "redis", tcp(6379), true},
		{RoleCache, "memcached", tcp(11211), true},
		{RoleDB, "postgresql", tcp(5432), true},
		{RoleDB, "mariadb", tcp(3306), true},
		{RoleStorage, ProtocolNFS, tcp(2049), true},
		{RoleStorage, ProtocolSFTP, tcp(22), true},
		{RoleDB, "redis", Port{}, false},
		{RoleCache, "", Port{}, false},
		{RoleMail, "postfix", tcp(25), true},
		{"fax", "hylafax", Port{}, false},
	} {
		d, err := Lookup(c.role, c.software)
		if (err == nil) != c.ok {
			t.Errorf("Lookup(%q, %q): err %v, want ok %v", c.role, c.software, err, c.ok)
			continue
		}
		if c.ok && d.Ports[0] != c.port {
			t.Errorf("Lookup(%q, %q).Ports[0] = %v, want %v", c.role, c.software, d.Ports[0], c.port)
		}
	}
}

func TestDefaults(t *testing.T) {
	want := map[string]string{
		RoleEdge: "nginx", RoleStatic: "lighttpd", RoleApp: "apache2",
		RoleCache: "memcached", RoleDB: "mariadb", RoleStorage: ProtocolSFTP, RoleMail: "postfix", "fax": "",
	}
	for role, sw := range want {
		if got := Default(role); got != sw {
			t.Errorf("Default(%q) = %q, want %q", role, got, sw)
		}
	}
	if got := Softwares(RoleDB); !slices.Equal(got, []string{"mariadb", "postgresql"}) {
		t.Errorf("Softwares(db) = %q", got)
	}
}

// TestEveryDescriptor: a choice the catalog offers but does not fill in
// would silently install nothing for its node, or leave app nodes unable
// to reach it.
func TestEveryDescriptor(t *testing.T) {
	seen := map[[2]string]bool{}
	for _, d := range All() {
		key := [2]string{d.Role, d.Software}
		if seen[key] {
			t.Errorf("%s %s is described twice", d.Role, d.Software)
		}
		seen[key] = true
		if len(d.Packages) == 0 {
			t.Errorf("no packages for %s %s", d.Role, d.Software)
		}
		if len(d.Ports) == 0 {
			t.Errorf("no ports for %s %s", d.Role, d.Software)
		}
		if (d.Role == RoleDB || d.Role == RoleCache) && d.PHPClient == "" {
			t.Errorf("no PHP client for %s %s", d.Role, d.Software)
		}
		for _, a := range []string{d.DirOwner, d.SecretGroup} {
			if a != "" && !slices.Contains(d.Accounts, a) {
				t.Errorf("%s %s uses account %s it does not list", d.Role, d.Software, a)
			}
		}
		// Only the network namespace is the node's own to tune; any
		// other sysctl would be the host's.
		for k := range d.Sysctls {
			if !strings.HasPrefix(k, "net.") {
				t.Errorf("%s %s sets sysctl %s, which is not its network namespace's", d.Role, d.Software, k)
			}
		}
	}
}

// TestHostUnits: every package a node needs that runs a daemon on the
// host has its units listed, so that up can disable them.
func TestHostUnits(t *testing.T) {
	daemons := map[string]bool{}
	for _, d := range All() {
		for _, p := range d.Packages {
			// Clients and plug-in libraries (libsasl2-modules) run none.
			if !strings.HasSuffix(p, "-client") && !strings.HasSuffix(p, "-modules") && !strings.HasPrefix(p, "nfs-ganesha-") {
				daemons[p] = true
			}
		}
		if d.Exporter != nil && d.Exporter.Package != "" {
			daemons[d.Exporter.Package] = true
		}
	}
	for p := range daemons {
		if len(HostUnits([]string{p})) == 0 {
			t.Errorf("package %s runs a daemon, but the catalog lists no unit of it to disable on the host", p)
		}
	}
	if got := HostUnits([]string{"apache2", "php8.2-fpm", "nginx", "sshfs"}); !slices.Equal(got, []string{"apache-htcacheclean.service", "apache2.service", "nginx.service", "php8.2-fpm.service"}) {
		t.Errorf("HostUnits = %q", got)
	}
}

// TestMetrics: every role that serves visitors or the app has its figures
// read, by an exporter or by the agent; an exporter's port is its own on
// the node, and the agent reads php-fpm's status through a status server.
func TestMetrics(t *testing.T) {
	for _, d := range All() {
		name := d.Role + "/" + d.Software
		switch d.Role {
		case RoleEdge, RoleApp, RoleCache, RoleDB:
			if d.Exporter == nil && d.Stats == "" {
				t.Errorf("%s: no exporter and nothing the agent translates", name)
			}
		}
		if d.Stats != "" && d.Stats != StatsMemcached && d.Stats != StatsPHPFPM {
			t.Errorf("%s: Stats %q is none the agent knows", name, d.Stats)
		}
		if d.Stats == StatsPHPFPM && (d.Exporter == nil || d.Exporter.Status.Number == 0) {
			t.Errorf("%s: php-fpm's status needs the web server's status server (Exporter.Status)", name)
		}
		e := d.Exporter
		if e == nil {
			continue
		}
		ports := []Port{MetricsPort}
		ports = append(ports, d.Ports...)
		if slices.Contains(ports, e.Port) || (e.Status.Number != 0 && (slices.Contains(ports, e.Status) || e.Status == e.Port)) {
			t.Errorf("%s: exporter ports %v/%v clash with the node's %v", name, e.Port, e.Status, ports)
		}
		if e.Package != "" && !strings.HasPrefix(e.Package, "prometheus-") {
			t.Errorf("%s: exporter package %q", name, e.Package)
		}
	}
}

// TestBackup: every database can be dumped and restored, each in a format
// of its own, and its commands expand to what the db node runs.
func TestBackup(t *testing.T) {
	vars := BackupVars{Conf: "/etc/bulkhead", Run: "/run/bulkhead", DB: "site", User: "site", Port: 5432}
	for _, c := range []struct {
		software      string
		format        string
		dump, restore string
	}{
		{"mariadb", "mariadb-sql",
			"mariadb-dump --defaults-file=/etc/bulkhead/my.cnf --single-transaction --routines --triggers --events site",
			"mariadb --defaults-file=/etc/bulkhead/my.cnf site"},
		{"postgresql", "postgresql-custom",
			"setpriv --reuid=postgres --regid=postgres --init-groups -- /usr/lib/postgresql/15/bin/pg_dump --format=custom --host=/run/bulkhead --port=5432 --username=postgres --dbname=site",
			"setpriv --reuid=postgres --regid=postgres --init-groups -- /usr/lib/postgresql/15/bin/pg_restore --clean --if-exists --no-owner --role=site --single-transaction --host=/run/bulkhead --port=5432 --username=postgres --dbname=site"},
	} {
		d, err := Lookup(RoleDB, c.software)
		if err != nil {
			t.Fatal(err)
		}
		if d.Backup == nil {
			t.Fatalf("%s has no backup", c.software)
		}
		if d.Backup.DumpFormat != c.format {
			t.Errorf("%s: DumpFormat %q, want %q", c.software, d.Backup.DumpFormat, c.format)
		}
		for _, cmd := range []struct {
			name string
			argv []string
			want string
		}{{"dump", d.Backup.Dump, c.dump}, {"restore", d.Backup.Restore, c.restore}} {
			got, err := vars.Expand(cmd.argv)
			if err != nil {
				t.Errorf("%s %s: %v", c.software, cmd.name, err)
				continue
			}
			if s := strings.Join(got, " "); s != cmd.want {
				t.Errorf("%s %s:\n got %s\nwant %s", c.software, cmd.name, s, cmd.want)
			}
		}
	}
	formats := map[string]string{}
	for _, d := range All() {
		if (d.Role == RoleDB) != (d.Backup != nil) {
			t.Errorf("%s %s: backup %v; every database and nothing else has one", d.Role, d.Software, d.Backup)
			continue
		}
		if d.Backup == nil {
			continue
		}
		if other, ok := formats[d.Backup.DumpFormat]; ok {
			t.Errorf("%s and %s both write %s dumps", other, d.Software, d.Backup.DumpFormat)
		}
		formats[d.Backup.DumpFormat] = d.Software
		if d.Backup.DumpFile == "" || strings.Contains(d.Backup.DumpFile, "/") {
			t.Errorf("%s: dump file %q is not a plain name", d.Software, d.Backup.DumpFile)
		}
		if len(d.Backup.Version) == 0 || d.Backup.VersionRE == nil || d.Backup.Series < 1 {
			t.Errorf("%s: no way to tell its version (Version %q, Series %d)", d.Software, d.Backup.Version, d.Backup.Series)
		}
	}
}

// TestBackupVersion reads each database's version from what its server
// prints (as Debian 12's packages print it), and refuses a dump of a newer
// release series than the server that would load it.
func TestBackupVersion(t *testing.T) {
	for _, c := range []struct {
		software, out, want string
	}{
		{"mariadb", "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n", "10.11.19"},
		{"mariadb", "mariadbd  Ver 11.4.2-MariaDB-ubu2404 for debian-linux-gnu on x86_64\n", "11.4.2"},
		{"postgresql", "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15.18"},
		{"postgresql", "postgres (PostgreSQL) 17.2\n", "17.2"},
		{"postgresql", "bash: postgres: command not found\n", ""},
	} {
		d, err := Lookup(RoleDB, c.software)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.Backup.ParseVersion(c.out)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("%s: ParseVersion(%q) = %q, %v; want %q", c.software, c.out, got, err, c.want)
		}
	}
	for _, c := range []struct {
		software, dumped, here string
		ok                     bool
	}{
		{"mariadb", "10.11.19", "10.11.19", true},
		{"mariadb", "10.11.20", "10.11.6", true}, // same series, newer patch
		{"mariadb", "10.6.18", "10.11.19", true},
		{"mariadb", "11.4.2", "10.11.19", false},
		{"mariadb", "10.12.1", "10.11.19", false},
		{"mariadb", "", "10.11.19", true}, // an archive from before versions
		{"mariadb", "ten", "10.11.19", false},
		{"postgresql", "15.18", "15.2", true},
		{"postgresql", "13.4", "15.18", true},
		{"postgresql", "16.1", "15.18", false},
		{"postgresql", "9.6.24", "15.18", true},
	} {
		d, _ := Lookup(RoleDB, c.software)
		err := d.LoadsVersion(c.dumped, c.here)
		if (err == nil) != c.ok {
			t.Errorf("%s: LoadsVersion(%q, %q) = %v; want ok %v", c.software, c.dumped, c.here, err, c.ok)
		}
		if err != nil && c.dumped != "ten" && (!strings.Contains(err.Error(), c.dumped) || !strings.Contains(err.Error(), c.here) || !strings.Contains(err.Error(), "or newer")) {
			t.Errorf("%s: %v; want both versions named, and what to do", c.software, err)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := BackupVars{Conf: "/etc/bulkhead", Run: "/run/bulkhead", DB: "site", User: "site", Port: 3306}
	for _, c := range []struct {
		name string
		vars BackupVars
		argv []string
		want string // joined by spaces, or the error's text
		ok   bool
	}{
		{"plain", vars, []string{"a", "b"}, "a b", true},
		{"inside an argument", vars, []string{"--socket={run}/x.sock", "--port={port}"}, "--socket=/run/bulkhead/x.sock --port=3306", true},
		{"two in one", vars, []string{"{db}.{user}"}, "site.site", true},
		{"unknown", vars, []string{"{dbname}"}, "unknown placeholder {dbname}", false},
		{"unclosed", vars, []string{"--x={db"}, "unclosed placeholder", false},
		{"no value", BackupVars{Conf: "/etc"}, []string{"{db}"}, "no value for {db}", false},
		{"no port", BackupVars{DB: "x"}, []string{"--port={port}"}, "no value for {port}", false},
		{"an option", BackupVars{DB: "--all-databases"}, []string{"{db}"}, "would read as an option", false},
		{"a dash inside an argument", BackupVars{DB: "-x"}, []string{"--db={db}"}, "--db=-x", true},
		{"a newline", BackupVars{DB: "a\nb"}, []string{"{db}"}, "NUL or a newline", false},
	} {
		got, err := c.vars.Expand(c.argv)
		if (err == nil) != c.ok {
			t.Errorf("%s: Expand(%q) = %q, %v; want ok %v", c.name, c.argv, got, err, c.ok)
			continue
		}
		if c.ok && strings.Join(got, " ") != c.want {
			t.Errorf("%s: Expand(%q) = %q, want %q", c.name, c.argv, got, c.want)
		}
		if !c.ok && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Expand(%q) error %q, want it to say %q", c.name, c.argv, err, c.want)
		}
	}
}

func TestAcceptsDump(t *testing.T) {
	for _, c := range []struct {
		software, format string
		want             string // "" when accepted, else part of the error
	}{
		{"mariadb", "mariadb-sql", ""},
		{"postgresql", "postgresql-custom", ""},
		{"postgresql", "mariadb-sql", "the dump is mariadb-sql, made by mariadb, but this stack's db runs postgresql, which restores postgresql-custom dumps only; restore it on a stack whose db is mariadb"},
		{"mariadb", "postgresql-custom", "made by postgresql"},
		{"mariadb", "oracle-exp", `the dump's format "oracle-exp" is unknown`},
	} {
		d, err := Lookup(RoleDB, c.software)
		if err != nil {
			t.Fatal(err)
		}
		err = d.AcceptsDump(c.format)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s refuses %s: %v", c.software, c.format, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s, %s dump: error %v, want it to say %q", c.software, c.format, err, c.want)
		}
	}
	cache, _ := Lookup(RoleCache, "redis")
	if err := cache.AcceptsDump("mariadb-sql"); err == nil {
		t.Error("a cache accepts a database dump")
	}
}
