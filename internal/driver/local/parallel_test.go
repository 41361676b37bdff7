package local

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUpParallel makes the same stack one node at a time and eight at
// once: the ops must be the same, each node's in the same order, and the
// hosts must end alike. A parallel up that fails part way on a fresh host
// must leave it as it found it.
func TestUpParallel(t *testing.T) {
	p := planWithApps(t, 6)
	serial := newFakeStack(t)
	want, _ := serial.mustUp(t, p)
	par := newFakeStack(t)
	par.d.workers = 8
	got, res := par.mustUp(t, p)

	if s, g := slices.Sorted(slices.Values(want)), slices.Sorted(slices.Values(got)); !slices.Equal(s, g) {
		t.Errorf("a parallel up made other ops than a serial one:\n%s", lineDiff(s, g))
	}
	for _, n := range p.Nodes {
		if s, g := nodeOps(want, n.Name), nodeOps(got, n.Name); !slices.Equal(s, g) {
			t.Errorf("node %s's ops came in another order:\n%s", n.Name, lineDiff(s, g))
		}
	}
	if !slices.Equal(res.Restarted, []string{"storage", "cache", "db", "static", "app-1", "app-2", "app-3", "app-4", "app-5", "app-6", "edge"}) {
		t.Errorf("restarted %q, want every node in start order", res.Restarted)
	}
	// Each rank of startOrder starts only after the one before it.
	rank := func(id string) int {
		for r, tier := range startOrder(p) {
			for _, n := range tier {
				if n.Container == id {
					return r
				}
			}
		}
		t.Fatalf("no node has container %s", id)
		return 0
	}
	last := 0
	for _, op := range matching(got, "runc run ") {
		r := rank(strings.TrimPrefix(op, "runc run "))
		if r < last {
			t.Errorf("%s started after a node of a later rank", op)
		}
		last = r
	}
	if s, g := serial.state(t, "n"), par.state(t, "n"); s != g {
		t.Errorf("the host after a parallel up differs from after a serial one:\n%s", lineDiff(strings.Split(s, "\n"), strings.Split(g, "\n")))
	}
	par.checkJournal(t, "n")
	if ops, _ := par.mustUp(t, p); len(ops) > 0 {
		t.Errorf("a second parallel up changed the host:\n%s", strings.Join(ops, "\n"))
	}

	for _, failOn := range []string{"netns add bh-n-app-3", "veth add n-9p", "mkfs.ext4 n/nodes/app-4", "runc run bh-n-app-5", "runc run bh-n-cache"} {
		t.Run("fail "+failOn, func(t *testing.T) {
			s := newFakeStack(t)
			s.d.workers = 8
			s.f.failOn = failOn
			if _, _, err := s.up(t, p); err == nil {
				t.Fatalf("the up went through though %q failed", failOn)
			}
			if held := s.f.leftovers(); len(held) > 0 {
				t.Errorf("the failed parallel up left on the host: %q", held)
			}
		})
	}
}

// nodeOps are the ops that name node's namespace, container or files.
func nodeOps(ops []string, node string) []string {
	var out []string
	for _, op := range ops {
		for _, f := range strings.Fields(op) {
			if f == "bh-n-"+node || strings.Contains(f, "/"+node+"/") || strings.HasSuffix(f, "/"+node) {
				out = append(out, op)
				break
			}
		}
	}
	return out
}

// TestWaitHealthy: up asks again only the nodes it has not yet seen
// healthy, but goes on only when one round finds every node healthy at
// once; a node that never is is named.
func TestWaitHealthy(t *testing.T) {
	p := planWithApps(t, 3)
	s := newFakeStack(t)
	s.d.workers = 8
	s.mustUp(t, p)
	j, err := loadJournal(s.d.paths(p.Stack).journal(), p.Stack)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	asked := map[string]int{}
	s.f.healthy = func(node string) bool {
		mu.Lock()
		defer mu.Unlock()
		asked[node]++
		switch node {
		case "app-2":
			// Slow to start: sick at the first three questions.
			return asked[node] > 3
		case "app-1":
			// Healthy at first, then sick once: at the round that asks
			// everyone again after app-2 came up.
			return asked[node] != 2
		}
		return true
	}
	if err := s.d.waitHealthy(context.Background(), p, j, time.Minute); err != nil {
		t.Fatalf("waitHealthy: %v", err)
	}
	// app-2: three sick answers, one healthy, then the round of all
	// (sick app-1 fails it), the next round's app-1 only, and the
	// second round of all.
	if asked["app-2"] != 6 {
		t.Errorf("app-2 was asked %d times, want 6", asked["app-2"])
	}
	// app-1: once at the start, sick at the first round of all, asked
	// alone, then the second round of all.
	if asked["app-1"] != 4 {
		t.Errorf("app-1 was asked %d times, want 4: the first round, both rounds of all, and alone once when it was sick", asked["app-1"])
	}
	// edge: healthy at the start, asked again only at the rounds of all.
	if asked["edge"] != 3 {
		t.Errorf("edge was asked %d times, want 3: the first round and both rounds of all", asked["edge"])
	}

	s.f.healthy = func(node string) bool { return node != "app-3" }
	err = s.d.waitHealthy(context.Background(), p, j, 600*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not healthy") || !strings.Contains(err.Error(), "app-3") || strings.Contains(err.Error(), "app-2") {
		t.Errorf("with app-3 never healthy: %v; want an error naming app-3 alone", err)
	}
}

// TestDownParallel brings the same stack down one object at a time and
// eight at once, the latter with one container's delete failing: every
// running container is asked to stop before any is deleted, the error
// names the container, that container stays recorded, and a second down
// finishes the job, leaving the host as the serial down does.
func TestDownParallel(t *testing.T) {
	p := planWithApps(t, 6)
	serial := newFakeStack(t)
	serial.mustUp(t, p)
	want := serial.mustDown(t, "n")
	par := newFakeStack(t)
	par.mustUp(t, p)
	par.d.workers = 8

	par.f.failOn = "runc delete bh-n-app-3"
	err := par.d.Down(context.Background(), "n", false)
	if err == nil || !strings.Contains(err.Error(), "bh-n-app-3") {
		t.Fatalf("down with app-3's delete failing: %v, want an error naming bh-n-app-3", err)
	}
	got := par.f.take()
	kills, deletes := matching(got, "runc kill "), matching(got, "runc delete ")
	if len(kills) != len(p.Nodes) || len(deletes) != len(p.Nodes) {
		t.Errorf("down killed %d and deleted %d containers, want %d each:\n%s", len(kills), len(deletes), len(p.Nodes), strings.Join(got, "\n"))
	}
	if k, d := slices.Index(got, kills[len(kills)-1]), slices.Index(got, deletes[0]); k > d {
		t.Errorf("a container was deleted (op %d) before every one was asked to stop (op %d)", d, k)
	}
	if j := par.state(t, "n"); !strings.Contains(j, "journal container bh-n-app-3") {
		t.Errorf("after the failed delete, the journal does not hold bh-n-app-3:\n%s", j)
	}
	again := par.mustDown(t, "n")
	if !slices.Contains(again, "runc delete bh-n-app-3") {
		t.Errorf("the second down did not delete bh-n-app-3:\n%s", strings.Join(again, "\n"))
	}
	// The two downs together do what the serial one does, once, and
	// the delete that failed.
	if s, g := slices.Sorted(slices.Values(append(want, "runc delete bh-n-app-3 (fails)"))), slices.Sorted(slices.Values(append(got, again...))); !slices.Equal(s, g) {
		t.Errorf("ops of a serial down, and of a parallel one and its retry:\n%s", lineDiff(s, g))
	}
	if s, g := serial.state(t, "n"), par.state(t, "n"); s != g {
		t.Errorf("the host after a parallel down and its retry differs from after a serial down:\n%s", lineDiff(strings.Split(s, "\n"), strings.Split(g, "\n")))
	}
}

// TestDownInterrupted interrupts a parallel down as it asks the first
// container to stop: it stops there, keeping recorded what it has not
// removed, and the next down finishes the job.
func TestDownInterrupted(t *testing.T) {
	p := planWithApps(t, 6)
	serial := newFakeStack(t)
	serial.mustUp(t, p)
	serial.mustDown(t, "n")
	par := newFakeStack(t)
	par.mustUp(t, p)
	par.d.workers = 8

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	par.f.onOp = func(line string) {
		if strings.HasPrefix(line, "runc kill ") {
			cancel()
		}
	}
	if err := par.d.Down(ctx, "n", false); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted down: %v, want context.Canceled", err)
	}
	par.f.onOp = nil
	got := par.f.take()
	for _, op := range got {
		if strings.HasPrefix(op, "netns ") || strings.HasPrefix(op, "link ") || strings.HasPrefix(op, "nft ") {
			t.Errorf("the interrupted down went on past the containers: %s", op)
		}
	}
	if j := par.state(t, "n"); !strings.Contains(j, "journal container ") || !strings.Contains(j, "journal netns ") {
		t.Errorf("after the interrupted down, the journal lost what is still there:\n%s", j)
	}
	par.mustDown(t, "n")
	if s, g := serial.state(t, "n"), par.state(t, "n"); s != g {
		t.Errorf("the host after an interrupted down and its retry differs from after a serial down:\n%s", lineDiff(strings.Split(s, "\n"), strings.Split(g, "\n")))
	}
}
