package local

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// TestOwnerAndCapabilities pins what each node's daemon owns and may do
// beyond the base capabilities, as the catalog describes it.
func TestOwnerAndCapabilities(t *testing.T) {
	base := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	for _, c := range []struct {
		role, software string
		dirs, secrets  string
		extra          []string
	}{
		{spec.RoleEdge, "nginx", "", "", nil},
		{spec.RoleEdge, "haproxy", "", "", nil},
		{spec.RoleStatic, "lighttpd", "", "", nil},
		{spec.RoleApp, "apache2", "", "www-data", nil},
		{spec.RoleApp, "nginx", "", "www-data", nil},
		{spec.RoleCache, "redis", "", "", nil},
		{spec.RoleDB, "mariadb", "mysql", "mysql", nil},
		{spec.RoleDB, "postgresql", "postgres", "postgres", nil},
		{spec.RoleStorage, spec.ProtocolSFTP, "", "", []string{"CAP_SYS_CHROOT", "CAP_AUDIT_WRITE"}},
		{spec.RoleStorage, spec.ProtocolNFS, "", "", []string{"CAP_DAC_READ_SEARCH"}},
	} {
		n := &plan.Node{Role: c.role, Software: c.software}
		if dirs, secrets := owner(n); dirs != c.dirs || secrets != c.secrets {
			t.Errorf("owner(%s %s) = %q, %q; want %q, %q", c.role, c.software, dirs, secrets, c.dirs, c.secrets)
		}
		if got, want := capabilities(n), append(slices.Clone(base), c.extra...); !slices.Equal(got, want) {
			t.Errorf("capabilities(%s %s) = %q, want %q", c.role, c.software, got, want)
		}
	}
}

func TestAccounts(t *testing.T) {
	want := []string{"daemon", "haproxy", "memcache", "mysql", "nobody", "postfix", "postgres", "prometheus", "redis", "root", "sshd", "www-data"}
	got := slices.Sorted(slices.Values(accounts))
	if !slices.Equal(got, want) {
		t.Errorf("accounts = %q, want %q", got, want)
	}
}

// TestSiteMounts: one sshfs mount per node the plan gives a site mount,
// with the plan's account and access; an explicit flow from app to the
// storage node's port, or from another tier, mounts nothing more.
func TestSiteMounts(t *testing.T) {
	src := "name: n\nflows:\n  - {from: app, to: storage, port: 8080}\n  - {from: cache, to: storage, port: 22}\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 2}\n"
	p := planFrom(t, src)
	d := &Driver{Root: t.TempDir()}
	var got []string
	for _, m := range d.siteMounts(p, newJournal(t, d, "n")) {
		got = append(got, fmt.Sprintf("%s %s@%s:%d ro=%t", filepath.Base(filepath.Dir(filepath.Dir(m.Target))), m.User, m.Host, m.Port, m.ReadOnly))
	}
	want := []string{
		"static site-ro@10.77.0.6:22 ro=true",
		"app-1 site-rw@10.77.0.6:22 ro=false",
		"app-2 site-rw@10.77.0.6:22 ro=false",
	}
	if !slices.Equal(got, want) {
		t.Errorf("site mounts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestNodeSysctls: up sets what the catalog says a node's software needs
// of its namespace there, before the node starts, and nothing in the
// other nodes' namespaces.
func TestNodeSysctls(t *testing.T) {
	s := newFakeStack(t)
	p := planWithApps(t, 1)
	p.Role(spec.RoleStatic)[0].Software = "caddy"
	ops, _ := s.mustUp(t, p)
	want := "sysctl in bh-n-static net.ipv4.tcp_migrate_req=1"
	if got := matching(ops, "sysctl in "); !slices.Equal(got, []string{want}) {
		t.Errorf("namespace sysctls %q, want %q", got, want)
	}
	if i, j := slices.Index(ops, want), slices.Index(ops, "runc run bh-n-static"); i < 0 || j < 0 || i > j {
		t.Errorf("%q at %d, the static node started at %d: the setting must come first", want, i, j)
	}
}
