package matrix_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/matrix"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// poolPlan is the default stack with n app nodes, without its monitor:
// the matrix's layout is what these tests look at, in DESIGN.md's seven
// nodes.
func poolPlan(t testing.TB, n int) *plan.Plan {
	t.Helper()
	st := spec.Default()
	delete(st.Tiers, spec.RoleMonitor)
	st.ByRole(spec.RoleApp).Replicas = n
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

func labels(gs []matrix.Group) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Label)
	}
	return out
}

func text(t *testing.T, g *matrix.Grid) string {
	t.Helper()
	var b bytes.Buffer
	if err := g.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v; run go test -update to write it", err)
	}
	if got != string(want) {
		t.Errorf("%s differs; got:\n%s\nwant:\n%s", file, got, want)
	}
}

// TestGolden prints the expected matrix of a 2-app and a 12-app stack,
// and the 12-app one as verify would show it with a break in one node.
func TestGolden(t *testing.T) {
	for _, n := range []int{2, 12} {
		p := poolPlan(t, n)
		golden(t, fmt.Sprintf("expected-%d.txt", n), text(t, matrix.Layout(p, matrix.Expected(&p.Matrix), nil)))
	}
	// app-7 also answers on 8081, and db does not answer app-3: the two
	// show as themselves between the runs of the app tier that read alike.
	p := poolPlan(t, 12)
	want := matrix.Expected(&p.Matrix)
	mark := func(from, to string, port plan.Port) string {
		switch {
		case to == "app-7" && port.Number == 8081 && from == "edge":
			return matrix.Breach
		case from == "app-3" && to == "db" && port.Number == 3306:
			return matrix.Closed
		}
		return want(from, to, port)
	}
	more := map[string][]plan.Port{"app-7": {{Proto: "tcp", Number: 8081}}}
	golden(t, "observed-12.txt", text(t, matrix.Layout(p, mark, more)))
}

// TestUDPColumns: a stack file's UDP flow is a column of its own, next to
// a TCP one on the same number, labelled with its protocol; a stack
// without one prints as before (expected-2.txt has no UDP).
func TestUDPColumns(t *testing.T) {
	st := spec.Default()
	delete(st.Tiers, spec.RoleMonitor)
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	st.Flows = append(st.Flows, spec.Flow{From: "app", To: "cache", Port: 11211, Proto: "udp"})
	spec.ApplyDefaults(st)
	if err := spec.Validate(st, spec.Env{}); err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	g := matrix.Layout(p, matrix.Expected(&p.Matrix), nil)
	out := text(t, g)
	golden(t, "expected-udp.txt", out)
	udp := plan.Port{Proto: "udp", Number: 11211}
	if !g.Shows("cache", udp) || !g.Shows("cache", plan.Port{Proto: "tcp", Number: 11211}) {
		t.Errorf("cache lacks its tcp or its udp 11211 column:\n%s", out)
	}
	if !strings.Contains(out, " 11211  11211/udp ") {
		t.Errorf("the udp column is not labelled 11211/udp:\n%s", out)
	}
	for _, from := range []string{"app-1", "app-2", "static", "outside"} {
		want := matrix.Denied
		if strings.HasPrefix(from, "app-") {
			want = matrix.Allowed
		}
		if got := matrix.Expected(&p.Matrix)(from, "cache", udp); got != want {
			t.Errorf("%s -> cache:11211/udp reads %s, want %s", from, got, want)
		}
	}
	if p2 := poolPlan(t, 2); strings.Contains(text(t, matrix.Layout(p2, matrix.Expected(&p2.Matrix), nil)), "/udp") {
		t.Errorf("a stack without UDP flows has a UDP column")
	}
}

func TestCollapse(t *testing.T) {
	nodes := []string{"host", "outside", "edge", "static", "cache", "db", "storage"}
	tests := []struct {
		replicas int
		apps     []string
	}{
		{2, []string{"app-1", "app-2"}},
		{4, []string{"app-1", "app-2", "app-3", "app-4"}},
		{5, []string{"app-1..app-5"}},
		{12, []string{"app-1..app-12"}},
		{100, []string{"app-1..app-100"}},
	}
	for _, tt := range tests {
		p := poolPlan(t, tt.replicas)
		g := matrix.Layout(p, matrix.Expected(&p.Matrix), nil)
		want := append(slices.Clone(nodes), tt.apps...)
		if got := labels(g.Rows); !slices.Equal(got, want) {
			t.Errorf("%d app nodes: rows %q, want %q", tt.replicas, got, want)
		}
		// Columns: edge 80 and 443, then one per other destination
		// group, each on its one port.
		if got, want := len(g.Cols), 2+4+len(tt.apps); got != want {
			t.Errorf("%d app nodes: %d columns, want %d", tt.replicas, got, want)
		}
		if len(g.Marks) != len(g.Rows) {
			t.Fatalf("%d rows of marks for %d rows", len(g.Marks), len(g.Rows))
		}
		for i, r := range g.Marks {
			if len(r) != len(g.Cols) {
				t.Errorf("row %s has %d marks for %d columns", g.Rows[i].Label, len(r), len(g.Cols))
			}
			if slices.Contains(r, matrix.Mixed) {
				t.Errorf("row %s has a mixed cell: %q", g.Rows[i].Label, r)
			}
		}
	}
}

// TestMixed checks that a pool whose nodes do not all read alike shows
// the odd ones node by node, and folds only the runs that read alike.
func TestMixed(t *testing.T) {
	p := poolPlan(t, 5)
	want := matrix.Expected(&p.Matrix)
	for _, tt := range []struct {
		name string
		mark matrix.Mark
		apps []string
	}{
		{"app-3 as a source", func(from, to string, port plan.Port) string {
			if from == "app-3" && to == "db" {
				return matrix.Closed
			}
			return want(from, to, port)
		}, []string{"app-1..app-2", "app-3", "app-4..app-5"}},
		{"app-3 as a destination", func(from, to string, port plan.Port) string {
			if from == "outside" && to == "app-3" {
				return matrix.Breach
			}
			return want(from, to, port)
		}, []string{"app-1..app-2", "app-3", "app-4..app-5"}},
		// A pair that reads alike from everywhere else but not towards
		// each other does not fold either.
		{"app-3 towards app-4", func(from, to string, port plan.Port) string {
			if from == "app-3" && to == "app-4" {
				return matrix.Breach
			}
			return want(from, to, port)
		}, []string{"app-1..app-2", "app-3", "app-4", "app-5"}},
		{"app-1 and app-5", func(from, to string, port plan.Port) string {
			if from == "db" && (to == "app-1" || to == "app-5") {
				return matrix.Breach
			}
			return want(from, to, port)
		}, []string{"app-1", "app-2..app-4", "app-5"}},
	} {
		g := matrix.Layout(p, tt.mark, nil)
		if got := labels(g.Rows)[7:]; !slices.Equal(got, tt.apps) {
			t.Errorf("%s: app rows %q, want %q", tt.name, got, tt.apps)
		}
		if slices.ContainsFunc(g.Marks, func(r []string) bool { return slices.Contains(r, matrix.Mixed) }) {
			t.Errorf("%s: a mixed cell in\n%s", tt.name, text(t, g))
		}
	}
}

// TestTierFromPlan: nodes are grouped by the plan's tier, never by their
// names. Five single-node tiers named like replicas stay five rows,, and
// a tier's nodes fold whatever they are called.
func TestTierFromPlan(t *testing.T) {
	src := "tiers:\n"
	for i, role := range []string{"edge", "static", "cache", "db", "storage"} {
		src += fmt.Sprintf("  web-%d: {role: %s}\n", i+1, role)
	}
	src += "  pool: {role: app, replicas: 5}\n"
	st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	g := matrix.Layout(p, matrix.Expected(&p.Matrix), nil)
	got := labels(g.Rows)
	for i := 1; i <= 5; i++ {
		if !slices.Contains(got, fmt.Sprintf("web-%d", i)) {
			t.Errorf("rows %q lack web-%d", got, i)
		}
	}
	if !slices.Contains(got, "pool-1..pool-5") {
		t.Errorf("rows %q do not fold the pool", got)
	}
	if len(got) != 2+5+1 {
		t.Errorf("rows %q, want host, outside, five web tiers and the pool", got)
	}
}

// TestMore: the ports more names are columns, for the host and outside too,
// and a column with no mark at all is left out.
func TestMore(t *testing.T) {
	p := poolPlan(t, 2)
	want := matrix.Expected(&p.Matrix)
	mark := func(from, to string, port plan.Port) string {
		switch {
		case port.Proto == "udp":
			return "" // not probed
		case from == "outside" && to == "host" && port.Number == 22:
			return matrix.Breach
		case to == "host" || to == "outside" || from == "host" && to == "outside":
			return matrix.Denied
		}
		return want(from, to, port)
	}
	more := map[string][]plan.Port{"host": {{Proto: "tcp", Number: 22}}, "db": {{Proto: "udp", Number: 53}}}
	g := matrix.Layout(p, mark, more)
	if !g.Shows("host", plan.Port{Proto: "tcp", Number: 22}) || g.Cols[0].Dest.Label != "host" {
		t.Errorf("no host column first:\n%s", text(t, g))
	}
	if g.Shows("db", plan.Port{Proto: "udp", Number: 53}) || g.Shows("outside", plan.Port{Proto: "tcp", Number: 22}) {
		t.Errorf("a column without marks, or one not asked for:\n%s", text(t, g))
	}
	out := text(t, g)
	if !strings.Contains(out, "\noutside  "+matrix.Breach+" ") {
		t.Errorf("the breach is not in outside's row, under host:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(l, " ") {
			t.Errorf("line %q ends in a space", l)
		}
	}
}
