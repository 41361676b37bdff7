package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	if err := writeFile(dir, "edge", "secrets/tls.key", []byte("one"), 0o400); err != nil {
		t.Fatal(err)
	}
	// A second render replaces a read-only file and takes the new mode.
	if err := writeFile(dir, "edge", "secrets/tls.key", []byte("two"), 0o440); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "edge", "secrets", "tls.key")
	data, err := os.ReadFile(p)
	if err != nil || string(data) != "two" {
		t.Errorf("read back %q, %v; want \"two\"", data, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v, %v; want 0440", fi.Mode(), err)
	}
	for _, bad := range []string{"../escape", "/etc/passwd", "a/../../b"} {
		if err := writeFile(dir, "edge", bad, nil, 0o644); err == nil {
			t.Errorf("writeFile(%q) wrote outside the node's directory", bad)
		}
	}
}

func poolPlan(t *testing.T, replicas int) *plan.Plan {
	t.Helper()
	st := spec.Default()
	st.ByRole(spec.RoleApp).Replicas = replicas
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	spec.ApplyDefaults(st) // the storage node's defaults follow the pool
	if err := spec.Validate(st, spec.Env{}); err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// matrixRows returns the first field of each line of the printed matrix.
func matrixRows(t *testing.T, p *plan.Plan) []string {
	t.Helper()
	var b bytes.Buffer
	if err := printPlan(&b, p); err != nil {
		t.Fatal(err)
	}
	_, m, ok := strings.Cut(b.String(), "\nREACHABILITY")
	if !ok {
		t.Fatalf("no matrix in:\n%s", b.String())
	}
	var rows []string
	for _, l := range strings.Split(m, "\n")[3:] { // title and two heading lines
		if f := strings.Fields(l); len(f) > 0 {
			rows = append(rows, f[0])
		}
	}
	return rows
}

func TestMatrixCollapse(t *testing.T) {
	tests := []struct {
		replicas int
		want     []string
	}{
		{2, []string{"outside", "edge", "static", "cache", "db", "storage", "app-1", "app-2"}},
		{4, []string{"outside", "edge", "static", "cache", "db", "storage", "app-1", "app-2", "app-3", "app-4"}},
		{5, []string{"outside", "edge", "static", "cache", "db", "storage", "app-1..app-5"}},
		{100, []string{"outside", "edge", "static", "cache", "db", "storage", "app-1..app-100"}},
	}
	for _, tt := range tests {
		got := matrixRows(t, poolPlan(t, tt.replicas))
		if !slices.Equal(got, tt.want) {
			t.Errorf("%d app nodes: rows %q, want %q", tt.replicas, got, tt.want)
		}
	}
}

// TestMatrixMixed checks that a pool whose nodes do not all answer alike is
// shown node by node rather than hiding the difference.
func TestMatrixMixed(t *testing.T) {
	p := poolPlan(t, 5)
	allow := slices.DeleteFunc(slices.Clone(p.Matrix.Allow), func(c plan.Cell) bool {
		return c.From == "app-3" && c.To == "db"
	})
	p.Matrix = plan.Matrix{Sources: p.Matrix.Sources, Dests: p.Matrix.Dests, Ports: p.Matrix.Ports, Allow: allow}
	got := matrixRows(t, p)
	want := []string{"outside", "edge", "static", "cache", "db", "storage", "app-1", "app-2", "app-3", "app-4", "app-5"}
	if !slices.Equal(got, want) {
		t.Errorf("rows %q, want %q", got, want)
	}
}
