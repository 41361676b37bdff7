package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/spec"
)

// TestCheckDisk: up measures free space where the driver keeps its data,
// or its nearest existing parent before the first up, and refuses a stack
// that does not fit with spec errors, which exit 2.
func TestCheckDisk(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "var", "lib", "bulkhead")
	var measured string
	free := int64(0)
	defer func(f func(string) (int64, error)) { freeSpace = f }(freeSpace)
	freeSpace = func(dir string) (int64, error) { measured = dir; return free, nil }

	st := spec.Default()
	need := st.DiskNeeds()
	free = need
	if err := checkDisk(st, root); err != nil {
		t.Fatalf("with %d free for %d: %v", free, need, err)
	}
	if measured != parent {
		t.Errorf("measured %s, want the nearest existing parent %s", measured, parent)
	}

	free = need - 1
	err := checkDisk(st, root)
	if spec.AsErrors(err) == nil {
		t.Fatalf("with %d free for %d: %v, want spec errors", free, need, err)
	}
	if want := "bulkhead.yaml:1:1: tiers.db.disk: the stack needs 10368M of disk, 4G of it for db, but " + root + " has 10367M free; "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error:\n%v\nwant it to start %q", err, want)
	}

	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	free = need
	if err := checkDisk(st, root); err != nil || measured != root {
		t.Errorf("measured %s (%v), want %s itself once it exists", measured, err, root)
	}
}

// TestFreeSpace: statfs answers for an existing directory, and not for a
// missing one.
func TestFreeSpace(t *testing.T) {
	free, err := freeSpace(t.TempDir())
	if err != nil || free < 0 {
		t.Fatalf("freeSpace = %d, %v", free, err)
	}
	if _, err := freeSpace(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("freeSpace of a missing directory succeeded")
	}
}
