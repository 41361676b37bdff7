package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// benchPlan is the plan of bench/dataplane.sh's split stack.
func benchPlan(t *testing.T) *plan.Plan {
	t.Helper()
	site := t.TempDir()
	stack := "name: bench\nnetworks:\n  private: 10.240.0.0/24\n  public: 10.240.1.0/28\nsite:\n  dir: " + site + "\ntiers:\n  monitor: off\n"
	yes := func(string) bool { return true }
	st, err := spec.Load("bulkhead.yaml", []byte(stack), spec.Env{DirExists: yes, FileExists: yes})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.ByRole(spec.RoleStorage); s != nil && s.Protocol == spec.ProtocolAuto {
		s.Protocol = spec.ProtocolSFTP
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRenderLeavesNothingOfTheSplit: the baseline's configs name no node
// path and no address of the split stack, app-1 is called mono, and the
// daemons listen on the loopback.
func TestRenderLeavesNothingOfTheSplit(t *testing.T) {
	p := benchPlan(t)
	dir := t.TempDir()
	nodes, err := Render(p, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, " "); got != "mono db cache" {
		t.Fatalf("nodes: %s, want mono db cache", got)
	}
	split := regexp.MustCompile(`/(etc|run|srv|var/log|var/lib)/bulkhead|/srv/site|\b10\.240\.[01]\.\d+|"app-1"`)
	files := map[string]bool{}
	for _, n := range nodes {
		for _, f := range n.Files {
			files[f.Path] = true
			if m := split.Find(f.Data); m != nil {
				t.Errorf("%s of %s names the split's %q", f.Path, n.Name, m)
			}
		}
		for _, s := range n.Services {
			for _, a := range s.Ready {
				if ap, err := netip.ParseAddrPort(a); err != nil || !ap.Addr().IsLoopback() {
					t.Errorf("%s of %s is ready on %s, not the loopback", s.Name, n.Name, a)
				}
			}
		}
	}
	for _, f := range []string{"apache2.conf", "php-fpm.conf", "my.cnf", "secrets/db_password", "secrets/mariadb-init.sql"} {
		if !files[f] {
			t.Errorf("no %s rendered", f)
		}
	}
	if files["nftables.nft"] || files["hosts"] {
		t.Error("a firewall or hosts file rendered; the baseline has neither")
	}
	if p.Node("app-1") == nil || p.Node("app-1").Addr("private").IsLoopback() {
		t.Error("Render changed the plan it was given")
	}
}

// TestRun: from the plan's JSON to the files bench/dataplane.sh reads.
func TestRun(t *testing.T) {
	data, err := json.Marshal(benchPlan(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	planFile := filepath.Join(dir, "plan.json")
	if err := os.WriteFile(planFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(planFile, filepath.Join(dir, "mono"), ""); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"etc/apache2.conf", "etc/secrets/mariadb-init.sql", "services/mono.json", "services/db.json", "services/cache.json"} {
		if _, err := os.Stat(filepath.Join(dir, "mono", f)); err != nil {
			t.Error(err)
		}
	}
}
