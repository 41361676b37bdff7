package local

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

func planWithApps(t *testing.T, apps int) *plan.Plan {
	t.Helper()
	return planFrom(t, fmt.Sprintf("name: n\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: %d}\n", apps))
}

// planFrom builds the plan of a stack file's text.
func planFrom(t *testing.T, src string) *plan.Plan {
	t.Helper()
	st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNeighbourNeed checks the estimate against the pairs that talk: the
// edge to static and to each app, each app to cache, db and storage,
// static to storage, and the host to every node.
func TestNeighbourNeed(t *testing.T) {
	for _, c := range []struct{ apps, want int }{
		{2, 2*(2+2+3*2) + 2*(7+1)},
		{101, 2*(2+101+3*101) + 2*(106+1)},
	} {
		if got := neighbourNeed(planWithApps(t, c.apps)); got != c.want {
			t.Errorf("%d apps: need %d entries, want %d", c.apps, got, c.want)
		}
	}
	// The default stack fits the kernel's default cap; 101 apps do not.
	if n := neighbourNeed(planWithApps(t, 2)); 2*n > 1024 {
		t.Errorf("the default stack would raise the host's limit (%d entries)", n)
	}
	if n := neighbourNeed(planWithApps(t, 101)); 2*n <= 1024 {
		t.Errorf("101 apps fit in 1024 entries twice over (%d)? the estimate is off", n)
	}
}

// TestNeighbourRoom raises the limits in a stand-in for /proc/sys, records
// what it found, and down's restore puts it back, unless someone else has
// changed the value since.
func TestNeighbourRoom(t *testing.T) {
	dir := t.TempDir() + "/"
	old := neighDir
	neighDir = dir
	t.Cleanup(func() { neighDir = old })
	write := func(key string, v int) {
		if err := os.WriteFile(dir+key, []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(key string) int {
		v, err := readInt(dir + key)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	write("gc_thresh3", 1024)
	write("gc_thresh2", 512)
	j := &journal{path: filepath.Join(t.TempDir(), "state.json"), Stack: "n"}
	// A root of its own: a stack running on this host may have raised
	// the limits, and this stack would share that.
	d := &Driver{Root: t.TempDir()}
	// The default stack changes nothing.
	if err := d.neighbourRoom(planWithApps(t, 2), j); err != nil {
		t.Fatal(err)
	}
	if len(j.list(KindSysctl)) != 0 || read("gc_thresh3") != 1024 {
		t.Fatalf("the default stack touched the limits: %v", j.Objects)
	}
	big := planWithApps(t, 101)
	for range 2 { // twice: a second up keeps the first value found
		if err := d.neighbourRoom(big, j); err != nil {
			t.Fatal(err)
		}
	}
	if read("gc_thresh3") != 3072 || read("gc_thresh2") != 1536 {
		t.Fatalf("limits are %d/%d, want 3072/1536", read("gc_thresh3"), read("gc_thresh2"))
	}
	objs := j.list(KindSysctl)
	if len(objs) != 2 || objs[0].Detail != "1024 3072" || objs[1].Detail != "512 1536" {
		t.Fatalf("journal: %+v", objs)
	}
	// Someone else moved gc_thresh2 since: leave theirs.
	write("gc_thresh2", 4000)
	for _, o := range objs {
		if err := d.restoreSysctl(j.Stack, o); err != nil {
			t.Fatal(err)
		}
	}
	if read("gc_thresh3") != 1024 || read("gc_thresh2") != 4000 {
		t.Errorf("after restore: %d/%d, want 1024/4000", read("gc_thresh3"), read("gc_thresh2"))
	}
}
