// Package arch holds tests about the shape of the code base itself.
package arch

import (
	"go/build"
	"strings"
	"testing"
)

// pure are the packages that must do no I/O on the host: the core that turns
// a stack file into a plan and configs.
var pure = []string{"spec", "plan", "render", "catalog"}

// TestPureCoreDoesNoIO lists what spec, plan and render import. Directly they
// may not import packages that reach the host (os, os/exec, net, syscall);
// through any path they may not pull in the kernel wrappers (netlink,
// nftables, runc) or a process launcher.
func TestPureCoreDoesNoIO(t *testing.T) {
	forbiddenDirect := []string{"os", "os/exec", "net", "net/http", "syscall", "io/ioutil", "unsafe"}
	forbiddenDeps := []string{"os/exec", "net", "net/http", "github.com/vishvananda/", "github.com/google/nftables", "github.com/opencontainers/", "github.com/bulkhead/bulkhead/internal/driver", "github.com/bulkhead/bulkhead/internal/cli"}
	for _, pkg := range pure {
		path := "github.com/bulkhead/bulkhead/internal/" + pkg
		direct := imports(t, path)
		for _, imp := range direct {
			for _, f := range forbiddenDirect {
				if imp == f {
					t.Errorf("%s imports %s; keep host I/O out of the pure core", pkg, imp)
				}
			}
		}
		for _, dep := range deps(t, path) {
			for _, f := range forbiddenDeps {
				module := strings.Contains(f, ".") // a module path covers its subpackages
				if dep == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) || (module && strings.HasPrefix(dep, f+"/")) {
					t.Errorf("%s depends on %s; keep host I/O out of the pure core", pkg, dep)
				}
			}
		}
	}
}

// imports lists a package's direct imports. It reads the sources through
// go/build, in this process, so that go test's cache sees the files and
// reruns the test when one changes.
func imports(t *testing.T, path string) []string {
	t.Helper()
	p, err := build.Import(path, ".", 0)
	if err != nil {
		t.Fatalf("import %s: %v", path, err)
	}
	return p.Imports
}

// deps lists every package path imports, directly or not.
func deps(t *testing.T, path string) []string {
	t.Helper()
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		for _, imp := range imports(t, p) {
			if imp == "C" || seen[imp] {
				continue
			}
			seen[imp] = true
			walk(imp)
		}
	}
	walk(path)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	return out
}
