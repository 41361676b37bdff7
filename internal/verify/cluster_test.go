package verify

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// clusterPlan is the default stack as export plans it, without the
// monitor: testdata/cluster's results were recorded from such a cluster.
func clusterPlan(t *testing.T) *plan.Plan {
	t.Helper()
	st, err := spec.Load("bulkhead.yaml", []byte("tiers:\n  monitor: off\n"), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readResults reads the recorded results in testdata/cluster/DIR.
// They are fixtures in the shape the probe Jobs print, written for these
// tests: no cluster was run to make them.
func readResults(t *testing.T, dir string) []ClusterResult {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "cluster", dir, "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no results in %s: %v", dir, err)
	}
	var out []ClusterResult
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := ReadClusterResults(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rs...)
	}
	return out
}

// TestImportClean: results that match the plan pass, with every cell of
// the six node tiers' rows judged.
func TestImportClean(t *testing.T) {
	p := clusterPlan(t)
	r, err := Import(p, readResults(t, "clean"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Counts.Failures != 0 {
		t.Fatalf("clean results fail: %v", r.Failures())
	}
	// One row per tier (app's pod stands for app-1), to the 6 other
	// nodes, on every port of the matrix.
	if want := 6 * 6 * len(p.Matrix.Ports); r.Counts.Cells != want {
		t.Errorf("%d cells judged, want %d", r.Counts.Cells, want)
	}
	if r.Counts.AllowedOpen == 0 || r.Counts.DeniedBlocked == 0 {
		t.Errorf("counts %+v: both kinds of cell should be there", r.Counts)
	}
	var text, js, junit bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "PASS: stack bulkhead is isolated as planned") {
		t.Errorf("text report:\n%s", text.String())
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Counts != r.Counts {
		t.Errorf("JSON report reads back as %+v, %v", back.Counts, err)
	}
	if err := r.WriteJUnit(&junit); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(junit.Bytes(), new(junitSuites)); err != nil {
		t.Errorf("JUnit: %v", err)
	}
}

// TestImportHole: a probe that reached where the plan denies is a
// failure, open or refused alike, and so is an allowed flow that was
// dropped; nothing else is reported.
func TestImportHole(t *testing.T) {
	r, err := Import(clusterPlan(t), readResults(t, "hole"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"static -> db:3306: denied, but 10.244.1.13:3306 is open",
		"static -> cache:11211: denied, but 10.244.1.12:11211 is refused",
		"app-1 -> db:3306: allowed, but 10.244.1.13:3306 is filtered",
	}
	got := r.Failures()
	if strings.Join(got, "\n") != strings.Join(want, "\n") && !sameSet(got, want) {
		t.Errorf("failures:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "FAIL: stack bulkhead has 3 failures") {
		t.Errorf("text report:\n%s", text.String())
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestImportRefuses: a tier without results fails a check; results of
// another stack or of a node the plan lacks are errors.
func TestImportRefuses(t *testing.T) {
	p := clusterPlan(t)
	results := readResults(t, "clean")
	var noDB []ClusterResult
	for _, r := range results {
		if r.Source != "db" {
			noDB = append(noDB, r)
		}
	}
	r, err := Import(p, noDB)
	if err != nil {
		t.Fatal(err)
	}
	if fails := r.Failures(); len(fails) != 1 || !strings.Contains(fails[0], "no results from tier db") {
		t.Errorf("without db's results: %v", fails)
	}
	other := append([]ClusterResult(nil), results...)
	other[0].Stack = "other"
	if _, err := Import(p, other); err == nil || !strings.Contains(err.Error(), `stack "other"`) {
		t.Errorf("another stack's results: %v", err)
	}
	ghost := append([]ClusterResult(nil), results...)
	ghost[0].Source = "app-9"
	if _, err := Import(p, ghost); err == nil || !strings.Contains(err.Error(), "app-9") {
		t.Errorf("a node the plan lacks: %v", err)
	}
	if _, err := ReadClusterResults(strings.NewReader(`{"stack":"bulkhead","source":"db","probes":[{"to":"edge","status":"maybe"}]}`)); err == nil {
		t.Errorf("an unknown status was read")
	}
}

// TestNodes: pods pair with the plan's nodes by tier and name order, and
// a tier short of pods is an error.
func TestNodes(t *testing.T) {
	p := clusterPlan(t)
	pods := clusterPods(p)
	got, err := Nodes(p, pods)
	if err != nil {
		t.Fatal(err)
	}
	if got["app-1"].Name != "app-7d9-a" || got["app-2"].Name != "app-7d9-b" {
		t.Errorf("app pods: %v %v", got["app-1"], got["app-2"])
	}
	if _, err := Nodes(p, pods[:len(pods)-1]); err == nil {
		t.Errorf("a missing app pod went unnoticed")
	}
}

// clusterPods are the pods of the recorded results.
func clusterPods(p *plan.Plan) []Pod {
	var out []Pod
	names := map[string]string{"app-1": "app-7d9-b", "app-2": "app-7d9-a"}
	for i, n := range p.Nodes {
		name := n.Name + "-0"
		if v, ok := names[n.Name]; ok {
			name = v
		}
		out = append(out, Pod{Name: name, Tier: n.Tier, Addr: mustAddr(10, 244, 1, byte(10+i))})
	}
	return out
}

func mustAddr(a, b, c, d byte) netip.Addr { return netip.AddrFrom4([4]byte{a, b, c, d}) }
