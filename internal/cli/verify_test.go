package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyImport: verify --import on recorded cluster results passes
// on clean ones (exit 0) and fails on a hole (exit 1), with the same
// text, JSON and JUnit output as local verify.
func TestVerifyImport(t *testing.T) {
	dir := t.TempDir()
	stack := filepath.Join(dir, "bulkhead.yaml")
	if err := os.WriteFile(stack, []byte("name: bulkhead\n# The results were recorded from a cluster without the monitor.\ntiers:\n  monitor: off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join("..", "verify", "testdata", "cluster")
	for _, c := range []struct {
		dir    string
		want   int
		stdout string
	}{
		{"clean", exitOK, "PASS: stack bulkhead is isolated as planned"},
		{"hole", exitFailure, "static -> db:3306: denied, but 10.244.1.13:3306 is open"},
	} {
		var out, errOut bytes.Buffer
		junit := filepath.Join(dir, c.dir+".xml")
		code := Main(context.Background(), []string{"verify", "-f", stack, "--import", filepath.Join(results, c.dir), "--junit", junit}, &out, &errOut)
		if code != c.want || !strings.Contains(out.String(), c.stdout) {
			t.Errorf("%s: exit %d, want %d; stdout:\n%s\nstderr:\n%s", c.dir, code, c.want, out.String(), errOut.String())
		}
		if data, err := os.ReadFile(junit); err != nil || !bytes.Contains(data, []byte("<testsuites")) {
			t.Errorf("%s: JUnit %v: %.200s", c.dir, err, data)
		}
		out.Reset()
		Main(context.Background(), []string{"verify", "-f", stack, "--import", filepath.Join(results, c.dir), "--output", "json"}, &out, &errOut)
		var r struct {
			Counts struct{ Failures int } `json:"counts"`
		}
		if err := json.Unmarshal(out.Bytes(), &r); err != nil || (r.Counts.Failures == 0) != (c.want == exitOK) {
			t.Errorf("%s: JSON report %v, failures %d", c.dir, err, r.Counts.Failures)
		}
	}
}
