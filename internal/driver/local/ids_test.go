package local

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// newJournal is an empty journal of stack under d's root.
func newJournal(t *testing.T, d *Driver, stack string) *journal {
	t.Helper()
	j, err := loadJournal(filepath.Join(d.root(), stack, "state.json"), stack)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestAllocateIDs gives every node a block of its own, never a block
// another stack on the host holds, never one that reaches into the ids of
// the host's accounts, and keeps each node's block across ups.
func TestAllocateIDs(t *testing.T) {
	d := &Driver{Root: t.TempDir()}
	seen := map[uint32]string{}
	take := func(stack string, p *plan.Plan) *journal {
		j := newJournal(t, d, stack)
		if err := d.sandbox(p, j, false); err != nil {
			t.Fatal(err)
		}
		for _, n := range p.Nodes {
			m := j.nodeIDs(n.Name)
			if m.Size != idRange || m.Host < idFirst || m.Host%idRange != 0 {
				t.Errorf("%s/%s: block %+v", stack, n.Name, m)
			}
			if other, ok := seen[m.Host]; ok {
				t.Errorf("%s/%s shares block %d with %s", stack, n.Name, m.Host, other)
			}
			seen[m.Host] = stack + "/" + n.Name
		}
		return j
	}
	a := take("a", planWithApps(t, 2))
	take("b", planWithApps(t, 3))

	// Stack a again, scaled up: its nodes keep their blocks, the new one
	// gets a block nobody holds.
	before := a.nodeIDs("app-1")
	a2 := newJournal(t, d, "a")
	if err := d.sandbox(planWithApps(t, 3), a2, false); err != nil {
		t.Fatal(err)
	}
	if got := a2.nodeIDs("app-1"); got != before {
		t.Errorf("app-1 of a moved from %+v to %+v", before, got)
	}
	if owner, ok := seen[a2.nodeIDs("app-3").Host]; ok {
		t.Errorf("a's new app-3 got %s's block", owner)
	}
	if hostID(before, 33) != int(before.Host)+33 || hostID(a2.nodeIDs("none"), 33) != 33 {
		t.Error("hostID maps wrong")
	}
}

// TestSandboxMode refuses to switch a stack between sandboxed and not,
// since its files belong to the ids of the mode it was made in.
func TestSandboxMode(t *testing.T) {
	d := &Driver{Root: t.TempDir()}
	p := planWithApps(t, 1)
	j := newJournal(t, d, "n")
	if err := d.sandbox(p, j, true); err != nil {
		t.Fatal(err)
	}
	if j.sandboxed() || j.nodeIDs("db").Size != 0 {
		t.Fatalf("an unsandboxed stack has id blocks or says it is sandboxed")
	}
	if err := d.sandbox(p, newJournal(t, d, "n"), false); err == nil || !strings.Contains(err.Error(), "down --purge") {
		t.Errorf("switching an unsandboxed stack to sandboxed: %v", err)
	}
	s := newJournal(t, d, "s")
	if err := d.sandbox(p, s, false); err != nil {
		t.Fatal(err)
	}
	if err := d.sandbox(p, newJournal(t, d, "s"), true); err == nil || !strings.Contains(err.Error(), "without") {
		t.Errorf("switching a sandboxed stack off: %v", err)
	}
}

// TestRemoveSharedWaitsForUps: the last purge leaves the files stacks
// share while another up holds the host lock, removes them once none
// does, and never removes a stack's directory.
func TestRemoveSharedWaitsForUps(t *testing.T) {
	d := &Driver{Root: filepath.Join(t.TempDir(), "root")}
	ps := d.paths("")
	for _, dir := range []string{ps.rootfs(), filepath.Dir(ps.binary())} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unlock, ok, err := d.lockHost(syscall.LOCK_SH)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := d.removeShared(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(ps.binary())); err != nil {
		t.Errorf("the binary's directory went while an up held the host lock: %v", err)
	}
	unlock()
	// A stack directory keeps everything.
	if err := os.Mkdir(filepath.Join(d.root(), "other"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.removeShared(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.root(), "other")); err != nil {
		t.Errorf("another stack's directory went: %v", err)
	}
	os.Remove(filepath.Join(d.root(), "other"))
	if err := d.removeShared(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.root()); !os.IsNotExist(err) {
		t.Errorf("the root is still there after the last stack: %v", err)
	}
}
