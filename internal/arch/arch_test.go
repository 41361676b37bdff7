// Package arch holds tests about the shape of the code base itself.
package arch

import (
	"errors"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// pure are the packages that must do no I/O on the host: the core that turns
// a stack file into a plan and configs.
var pure = []string{"spec", "plan", "render", "catalog", "service", "matrix"}

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

// TestAgentNeedsNoRenderer keeps the node agent, PID 1 of every node, from
// linking the renderer and everything behind it. The agent reads
// services.json through the neutral service package, which render writes.
func TestAgentNeedsNoRenderer(t *testing.T) {
	const agent = "github.com/bulkhead/bulkhead/internal/agent"
	forbidden := []string{
		"github.com/bulkhead/bulkhead/internal/render",
		"github.com/bulkhead/bulkhead/internal/plan",
		"github.com/bulkhead/bulkhead/internal/spec",
	}
	// Only the module's own packages can lead to render, and the standard
	// library's vendored packages do not resolve from here, so the walk
	// stays inside the module.
	const module = "github.com/bulkhead/bulkhead/"
	seen := map[string]bool{}
	var walk func(pkg string, via []string)
	walk = func(pkg string, via []string) {
		for _, imp := range imports(t, pkg) {
			if !strings.HasPrefix(imp, module) || seen[imp] {
				continue
			}
			seen[imp] = true
			path := append(slices.Clip(via), strings.TrimPrefix(imp, module))
			if slices.Contains(forbidden, imp) {
				t.Errorf("agent depends on %s (agent -> %s); share types through internal/service instead", strings.TrimPrefix(imp, module), strings.Join(path, " -> "))
			}
			walk(imp, path)
		}
	}
	walk(agent, nil)
}

// TestOnlyCLIParsesFlags keeps command-line parsing in internal/cli: other
// packages take options structs, as nerdctl's do. Test files may import flag
// (-update), and so may the main packages under cmd/ and bench/.
func TestOnlyCLIParsesFlags(t *testing.T) {
	const root = "../.." // the module, from internal/arch
	err := filepath.WalkDir(root, func(dir string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if dir != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir // the go command ignores these too
		}
		p, err := build.ImportDir(dir, 0)
		if errors.As(err, new(*build.NoGoError)) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("import %s: %w", dir, err)
		}
		rel, _ := filepath.Rel(root, dir)
		rel = filepath.ToSlash(rel)
		exempt := rel == "internal/cli" ||
			p.Name == "main" && (strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "bench/"))
		if !exempt && slices.Contains(p.Imports, "flag") {
			t.Errorf("%s imports flag; parse flags in internal/cli and pass an options struct", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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

// softwareNames are the names the catalog describes. Code outside it that
// compares against one of them, or switches on it, holds knowledge of one
// piece of software that belongs in the catalog's descriptor.
var softwareNames = []string{"mariadb", "postgresql", "memcached", "redis", "nginx", "haproxy", "lighttpd", "apache2", "sftp", "nfs"}

// softwareNameExceptions are the files, relative to the module root, that
// may still compare with software names, and why. The list only shrinks:
// remove a file once it asks the catalog instead.
var softwareNameExceptions = map[string]string{
	// "nfs" here is a filesystem type in /proc/filesystems, not the
	// storage protocol.
	"internal/kernel/nfs.go": "not a software name",
}

// TestNoSoftwareNameSwitches fails when a Go file outside internal/catalog
// compares a value with a software name (== or != against a string
// literal) or lists one in a switch case. Test files may name software
// freely: they pin what the catalog says.
func TestNoSoftwareNameSwitches(t *testing.T) {
	root := moduleRoot(t)
	names := map[string]bool{}
	for _, n := range softwareNames {
		names[n] = true
	}
	named := func(e ast.Expr) bool {
		lit, ok := ast.Unparen(e).(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return false
		}
		s, err := strconv.Unquote(lit.Value)
		return err == nil && names[s]
	}
	fset := token.NewFileSet()
	found := map[string]int{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor" || rel == "internal/catalog") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BinaryExpr:
				if (n.Op == token.EQL || n.Op == token.NEQ) && (named(n.X) || named(n.Y)) {
					found[rel]++
					if softwareNameExceptions[rel] == "" {
						t.Errorf("%s: compares with a software name; ask internal/catalog instead", fset.Position(n.Pos()))
					}
				}
			case *ast.CaseClause:
				for _, e := range n.List {
					if named(e) {
						found[rel]++
						if softwareNameExceptions[rel] == "" {
							t.Errorf("%s: switches on a software name; ask internal/catalog instead", fset.Position(e.Pos()))
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel, why := range softwareNameExceptions {
		if found[rel] == 0 {
			t.Errorf("%s no longer compares with software names; remove it from softwareNameExceptions", rel)
		} else {
			t.Logf("%s: %d comparisons with software names (%s)", rel, found[rel], why)
		}
	}
}

// moduleRoot is the directory that holds go.mod, found from this package's
// own directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the arch test")
		}
		dir = parent
	}
}
