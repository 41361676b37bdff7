package e2e

import (
	"encoding/json"
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
//   - the supervisor killed: the nodes serve on, status says what to run,
//     and up starts it again.
func TestFaults(t *testing.T) {
	s := newStack(t, "e2eq", 246, 18660, "")
	s.run("up")
	ns, url := s.outsideURL(t)
	const patience = 2 * time.Minute

	fault := func(name string, do func(), whole func() bool) {
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
	healthy := func(node string) func() bool {
		return func() bool {
			st := status(t, s)[node]
			return st.State == "running" && st.Healthy
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

	sup := supervisorPID(t, s)
	fault("supervisor killed", func() {
		if out, err := exec.Command("kill", "-9", sup).CombinedOutput(); err != nil {
			t.Fatalf("kill the supervisor: %v: %s", err, out)
		}
		hosttest.Eventually(t, patience, "status to say the supervisor is not running", func() bool {
			out, _ := s.exec("status")
			return strings.Contains(out, "supervisor NOT RUNNING") && strings.Contains(out, "run 'bulkhead up'")
		})
		s.run("up")
	}, func() bool {
		out, _ := s.exec("status")
		return strings.Contains(out, "supervisor running")
	})
	if got := supervisorPID(t, s); got == sup {
		t.Errorf("the supervisor is still pid %s", got)
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify after the faults (%v): failures %q\n%.3000s", err, v.Failures, out)
	}
}

// supervisorPID is the pid of the stack's supervisor, from its journal.
func supervisorPID(t *testing.T, s *stack) string {
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
	for _, o := range j.Objects {
		if o.Kind == "process" {
			return o.Name
		}
	}
	t.Fatal("the journal names no supervisor")
	return ""
}
