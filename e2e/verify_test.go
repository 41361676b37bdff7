package e2e

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// verifyJSON is the part of `verify --output json` the tests read.
type verifyJSON struct {
	Pass   bool `json:"pass"`
	Probes int  `json:"probes"`
	Counts struct {
		Cells         int `json:"cells"`
		AllowedOpen   int `json:"allowed_open"`
		DeniedBlocked int `json:"denied_blocked"`
		Failures      int `json:"failures"`
	} `json:"counts"`
	Cells []struct {
		From    string `json:"from"`
		To      string `json:"to"`
		Port    int    `json:"port"`
		Allow   bool   `json:"allow"`
		OK      bool   `json:"ok"`
		Targets []struct {
			Status string `json:"status"`
		} `json:"targets"`
	} `json:"cells"`
	Listeners []struct {
		Node     string `json:"node"`
		Expected bool   `json:"expected"`
	} `json:"listeners"`
	Checks []struct {
		Name string `json:"name"`
		OK   bool   `json:"ok"`
	} `json:"checks"`
	Failures []string `json:"failures"`
}

func (s *stack) verify(t *testing.T, args ...string) (verifyJSON, string, error) {
	t.Helper()
	out, errOut, err := s.stdout(append([]string{"verify", "--output", "json"}, args...)...)
	var v verifyJSON
	if jerr := json.Unmarshal([]byte(out), &v); jerr != nil {
		t.Fatalf("verify --output json: %v\n%s\n%s", jerr, out, errOut)
	}
	return v, out + errOut, err
}

// TestVerify runs verify on a real default stack: it passes, with the
// matrix the plan expects, and its self-test catches each planted hole,
// one by one, and leaves the stack verifying clean.
func TestVerify(t *testing.T) {
	s := newStack(t, "e2ev", 238, 18780, unwatched)
	s.run("up")
	// Verify's probes open many connections at once; when a node runs out
	// of memory, the kernel must kill a daemon (which the agent restarts),
	// never the agent, whose death would end the whole container.
	state, err := exec.Command("runc", "state", "bh-e2ev-storage").Output()
	if err != nil {
		t.Fatalf("runc state: %v", err)
	}
	var agent struct{ Pid int }
	json.Unmarshal(state, &agent)
	agentAdj, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", agent.Pid))
	// Children are listed under the thread that forked them.
	var kids []byte
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", agent.Pid))
	for _, f := range tasks {
		k, _ := os.ReadFile(f)
		kids = append(kids, k...)
	}
	if strings.TrimSpace(string(agentAdj)) != "0" || len(strings.Fields(string(kids))) == 0 {
		t.Errorf("storage agent (pid %d) has oom_score_adj %q and children %q; want 0 and its daemons", agent.Pid, agentAdj, kids)
	}
	for _, kid := range strings.Fields(string(kids)) {
		if adj, _ := os.ReadFile("/proc/" + kid + "/oom_score_adj"); strings.TrimSpace(string(adj)) != "500" {
			t.Errorf("storage daemon %s has oom_score_adj %q, want 500: the OOM killer must pick it before the agent", kid, adj)
		}
	}

	junit := filepath.Join(s.dir, "verify.xml")
	v, out, err := s.verify(t, "--junit", junit)
	if err != nil || !v.Pass || v.Counts.Failures != 0 {
		t.Fatalf("verify of a fresh default stack failed (%v):\n%s", err, out)
	}
	// 7 nodes and 2 vantages: every ordered pair but the host to outside.
	if v.Counts.Cells == 0 || v.Counts.AllowedOpen+v.Counts.DeniedBlocked != v.Counts.Cells {
		t.Errorf("counts do not add up: %+v", v.Counts)
	}
	open := map[string]bool{}
	for _, c := range v.Cells {
		if c.Allow {
			open[c.From+">"+c.To+":"+strconv.Itoa(c.Port)] = true
		}
	}
	for _, want := range []string{"outside>edge:80", "outside>edge:443", "host>edge:80", "edge>static:80", "edge>app-2:80",
		"app-1>db:3306", "app-2>cache:11211", "app-1>storage:22", "static>storage:22"} {
		if !open[want] {
			t.Errorf("allowed and open cells lack %s", want)
		}
	}
	if len(open) != v.Counts.AllowedOpen {
		t.Errorf("%d allowed cells, %d counted open", len(open), v.Counts.AllowedOpen)
	}
	for _, l := range v.Listeners {
		if !l.Expected {
			t.Errorf("unexpected listener in a fresh stack: %+v", l)
		}
	}
	if len(v.Checks) < 4 {
		t.Errorf("bypass checks missing: %+v", v.Checks)
	}
	data, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil || len(suites.Suites) == 0 {
		t.Fatalf("junit file: %v\n%s", err, data)
	}
	if got := suites.Suites[0]; got.Tests != v.Counts.Cells || got.Failures != 0 {
		t.Errorf("junit matrix suite %+v, want %d tests and no failure", got, v.Counts.Cells)
	}

	text := s.run("verify")
	for _, want := range []string{"REACHABILITY (rows are sources", "ports probed: ", "PASS: stack e2ev is isolated as planned", "cells probed: "} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q:\n%s", want, text)
		}
	}
	// The matrix is the plan's: the host and the outside reach the edge's
	// 80 and 443, and nothing failed.
	for _, row := range []string{"host", "outside"} {
		if !regexp.MustCompile(`(?m)^` + row + ` +✔ +✔ +[·✔ ]+$`).MatchString(text) {
			t.Errorf("text report has no %s row that reaches the edge and nothing else fails:\n%s", row, text)
		}
	}

	// The self-test, each mutation asserted on its own.
	out, errOut, err := s.stdout("verify", "--self-test", "--output", "json")
	if err != nil {
		t.Fatalf("verify --self-test: %v\n%s\n%s", err, out, errOut)
	}
	var st struct {
		Mutations []struct {
			Mutation string   `json:"mutation"`
			Caught   bool     `json:"caught"`
			Failures []string `json:"failures"`
			Stray    []string `json:"stray"`
		} `json:"mutations"`
		After struct {
			Counts struct{ Failures int } `json:"counts"`
		} `json:"after"`
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&st); err != nil {
		t.Fatalf("self-test json: %v\n%s", err, out)
	}
	want := []struct{ mutation, failure string }{
		{"one rule widened: edge also accepts tcp/22", "host -> edge:22: denied, but 10.238.1.2:22 is open"},
		{"a rogue listener: tcp/8081 in app-1", "unexpected listener: app-1 tcp/8081 on 0.0.0.0"},
		{"accept-all: db's ruleset", "host -> db:3306: denied, but 10.238.0.5:3306 is open"},
		{"host guard removed", "outside -> host:22: denied, but 10.238.1.1:22 is open"},
		{"a published port leads elsewhere: 127.0.0.1:18780 rewritten to app-1", "published ports reach only the edge: "},
		{"a UDP hole: cache also accepts udp/11211", "host -> cache:11211/udp: denied, but 10.238.0.4:11211/udp is open"},
		{"anti-spoofing removed for app-1", "spoofed sources are dropped: app-1 sent a SYN as static (10.238.0.3) to storage 10.238.0.6:22 and it arrived"},
	}
	if len(st.Mutations) != len(want) {
		t.Fatalf("self-test ran %d mutations, want %d:\n%s", len(st.Mutations), len(want), out)
	}
	for i, w := range want {
		m := st.Mutations[i]
		if !strings.HasPrefix(m.Mutation, w.mutation) {
			t.Errorf("mutation %d is %q, want %q", i+1, m.Mutation, w.mutation)
		}
		if !m.Caught || len(m.Stray) > 0 {
			t.Errorf("mutation %q: caught=%v, failures %q, not explained %q", m.Mutation, m.Caught, m.Failures, m.Stray)
		}
		found := false
		for _, f := range m.Failures {
			found = found || strings.HasPrefix(f, w.failure)
		}
		if !found {
			t.Errorf("mutation %q: failures %q lack %q", m.Mutation, m.Failures, w.failure)
		}
	}
	if st.After.Counts.Failures != 0 {
		t.Errorf("after the self-test: %d failures", st.After.Counts.Failures)
	}
	// And independently of the self-test's own last run.
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Fatalf("verify after the self-test failed (%v):\n%s", err, out)
	}

	// A self-test interrupted with the host's guard removed is repaired by
	// up, which checks for that table too.
	if out, err := exec.Command("nft", "delete", "table", "inet", "bulkhead_e2ev").CombinedOutput(); err != nil {
		t.Fatalf("delete the host table: %v: %s", err, out)
	}
	if out := s.run("up"); strings.Contains(out, "nothing changed") {
		t.Errorf("up with the host table gone changed nothing:\n%s", out)
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Fatalf("verify after up restored the host table failed (%v):\n%s", err, out)
	}

	// A real rogue process inside a node, as a web shell would start one:
	// verify names it, and exits 1.
	pid := strings.TrimSpace(s.run("exec", "app-2", "--", "sh", "-c", "php8.2 -S 0.0.0.0:8082 -t /tmp >/dev/null 2>&1 & echo $!"))
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("start a rogue php: got %q", pid)
	}
	t.Cleanup(func() { s.exec("exec", "app-2", "--", "kill", pid) })
	var failed verifyJSON
	hosttest.Eventually(t, 10*time.Second, "the rogue listener shows", func() bool {
		failed, out, err = s.verify(t)
		return !failed.Pass
	})
	if err == nil {
		t.Errorf("verify exited 0 with a rogue listener:\n%s", out)
	}
	if len(failed.Failures) != 1 || failed.Failures[0] != "unexpected listener: app-2 tcp/8082 on 0.0.0.0 (php8.2)" {
		t.Errorf("failures = %q, want the rogue php alone", failed.Failures)
	}
	s.run("exec", "app-2", "--", "kill", pid)
	hosttest.Eventually(t, 10*time.Second, "verify passes once the rogue is gone", func() bool {
		v, _, _ := s.verify(t)
		return v.Pass
	})

	// A stack that is down is said to be down, not probed.
	s.run("down")
	if out, err := s.exec("verify"); err == nil || !strings.Contains(out, "stack e2ev is down; run 'bulkhead up' first") {
		t.Errorf("verify of a stack that is down (%v):\n%s", err, out)
	}
}
