// Package arch holds tests about the shape of the code base itself.
package arch

import (
	"os/exec"
	"strings"
	"testing"
)

// pure are the packages that must do no I/O on the host: the core that turns
// a stack file into a plan and configs.
var pure = []string{"spec", "plan", "render"}

// TestPureCoreDoesNoIO lists what spec, plan and render import. Directly they
// may not import packages that reach the host (os, os/exec, net, syscall);
// through any path they may not pull in the kernel wrappers (netlink,
// nftables, runc) or a process launcher.
func TestPureCoreDoesNoIO(t *testing.T) {
	forbiddenDirect := []string{"os", "os/exec", "net", "net/http", "syscall", "io/ioutil", "unsafe"}
	forbiddenDeps := []string{"os/exec", "net", "net/http", "github.com/vishvananda/", "github.com/google/nftables", "github.com/opencontainers/", "github.com/bulkhead/bulkhead/internal/driver", "github.com/bulkhead/bulkhead/internal/cli"}
	for _, pkg := range pure {
		path := "github.com/bulkhead/bulkhead/internal/" + pkg
		direct := goList(t, "-f", "{{join .Imports \"\\n\"}}", path)
		for _, imp := range direct {
			for _, f := range forbiddenDirect {
				if imp == f {
					t.Errorf("%s imports %s; keep host I/O out of the pure core", pkg, imp)
				}
			}
		}
		for _, dep := range goList(t, "-deps", path) {
			for _, f := range forbiddenDeps {
				module := strings.Contains(f, ".") // a module path covers its subpackages
				if dep == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) || (module && strings.HasPrefix(dep, f+"/")) {
					t.Errorf("%s depends on %s; keep host I/O out of the pure core", pkg, dep)
				}
			}
		}
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}
