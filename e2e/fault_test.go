package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestFaults kills one part of a running stack at a time while visitors
// in the outside namespace send GET / without pause, and records for each
// fault how many requests failed (none may) and how long the stack took to
// be whole again, with nothing lost:
//   - an app node's container killed: the edge sends to the other one,
//     and the supervisor restarts it;
//   - the cache node's container killed: pages come from the database;
//   - the supervisor killed: its keeper starts another, which the journal
//     records and which takes over the site mounts, with no up (the
//     published ports are the kernel's and never stop);
//   - its keeper killed: the supervisor starts another.
func TestFaults(t *testing.T) {
	s := newStack(t, "e2eq", 246, 18660, unwatched)
	s.run("up")
	ns, url := s.outsideURL(t)
	const patience = 2 * time.Minute

	fault := func(name string, do func(), whole func() error) {
		t.Helper()
		l := startLoad(t, ns, url, 8)
		time.Sleep(time.Second)
		t0 := time.Now()
		do()
		hosttest.Eventually(t, patience, name+": the stack whole again", whole)
		recovered := time.Since(t0)
		time.Sleep(2 * time.Second)
		r := l.stop()
		t.Logf("fault %s: whole again after %s; %d requests, p99 %s, %d failed", name, recovered.Round(10*time.Millisecond), r.requests, r.p99, len(r.failures))
		if r.requests == 0 {
			t.Errorf("fault %s: no request was made", name)
		}
		if len(r.failures) > 0 {
			t.Errorf("fault %s: %d of %d requests failed; want none; the first: %q", name, len(r.failures), r.requests, r.failures[:min(len(r.failures), 5)])
		}
	}
	healthy := func(node string) func() error {
		return func() error {
			if st := status(t, s)[node]; st.State != "running" || !st.Healthy {
				return fmt.Errorf("%s is %s, healthy %v", node, st.State, st.Healthy)
			}
			return nil
		}
	}
	kill := func(node string) func() {
		return func() {
			if out, err := exec.Command("runc", "kill", "bh-"+s.name+"-"+node, "KILL").CombinedOutput(); err != nil {
				t.Fatalf("kill %s: %v: %s", node, err, out)
			}
		}
	}

	fault("app-1 killed", kill("app-1"), healthy("app-1"))
	fault("cache killed", kill("cache"), healthy("cache"))

	for _, kind := range []string{"process", "keeper"} {
		old := pairPID(t, s, kind)
		fault(map[string]string{"process": "supervisor", "keeper": "keeper"}[kind]+" killed", func() {
			if out, err := exec.Command("kill", "-9", old).CombinedOutput(); err != nil {
				t.Fatalf("kill the %s: %v: %s", kind, err, out)
			}
		}, func() error {
			out, err := s.exec("status")
			if now := pairPID(t, s, kind); now == old {
				ps, _ := exec.Command("ps", "-eo", "pid,ppid,stat,lstart,args").Output()
				return fmt.Errorf("the journal still records %s %s (all it records of the pair: %v); status (%v):\n%s\nthe pair's processes:\n%s", kind, old, pairPIDs(t, s), err, out, grep(string(ps), "--stack "+s.name+" "))
			}
			if pids := pairPIDs(t, s)[kind]; len(pids) != 1 {
				return fmt.Errorf("the journal records %v as the %s; want only the one that took %s's place", pids, kind, old)
			}
			if !strings.HasPrefix(out, "stack "+s.name+": supervisor running\n") {
				return fmt.Errorf("status (%v):\n%s", err, out)
			}
			return nil
		})
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify after the faults (%v): failures %q\n%.3000s", err, v.Failures, out)
	}
}

// pairPID is the pid of the stack's supervisor (kind "process") or its
// keeper ("keeper"), from its journal: the first it records.
func pairPID(t *testing.T, s *stack, kind string) string {
	t.Helper()
	if pids := pairPIDs(t, s)[kind]; len(pids) > 0 {
		return pids[0]
	}
	t.Fatalf("the journal names no %s", kind)
	return ""
}

// pairPIDs are the pids the stack's journal records of each kind of the
// supervisor's pair.
func pairPIDs(t *testing.T, s *stack) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/var/lib/bulkhead", s.name, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Objects []struct{ Kind, Name string } `json:"objects"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, o := range j.Objects {
		if o.Kind == "process" || o.Kind == "keeper" {
			out[o.Kind] = append(out[o.Kind], o.Name)
		}
	}
	return out
}
