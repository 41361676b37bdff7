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
		{"mail", "postfix", Port{}, false},
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
		RoleCache: "memcached", RoleDB: "mariadb", RoleStorage: ProtocolSFTP, "mail": "",
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
	}
}

// TestHostUnits: every package a node needs that runs a daemon on the
// host has its units listed, so that up can disable them.
func TestHostUnits(t *testing.T) {
	daemons := map[string]bool{}
	for _, d := range All() {
		for _, p := range d.Packages {
			if !strings.HasSuffix(p, "-client") && !strings.HasPrefix(p, "nfs-ganesha-") {
				daemons[p] = true
			}
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
