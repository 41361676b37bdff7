package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestScaleUnderLoad changes a live stack while visitors use it: wrk runs
// from the stack's outside namespace against the edge's public address
// (the internet's path to the edge) for the whole of each phase, and no
// request may fail in any of them: steady load with no change, the app
// pool scaled from 2 to 6 with up, and back from 6 to 2. The figures of
// each phase are logged; no assertion depends on how fast the machine is.
func TestScaleUnderLoad(t *testing.T) {
	_, err := exec.LookPath("wrk")
	hosttest.Require(t, err == nil, "wrk (apt-get install wrk): %v", err)
	pool := func(n int) string {
		return fmt.Sprintf("tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: %d\n", n)
	}
	s := newStack(t, "e2el", 244, 18620, pool(2))
	s.run("up")
	file := filepath.Join(s.dir, "bulkhead.yaml")
	setPool := func(n int) {
		t.Helper()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		i := strings.Index(string(data), "tiers:")
		if err := os.WriteFile(file, []byte(string(data)[:i]+pool(n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ns, url := s.outsideURL(t)

	// The load must reach the app pool: GET / is PHP, not a file the
	// edge could answer from its cache.
	resp, err := http.Get("http://" + s.http + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "app-") {
		t.Fatalf("GET / answered %d from %q, want 200 from an app node", resp.StatusCode, resp.Header.Get("X-Served-By"))
	}

	phase := func(name string, change func()) {
		t.Helper()
		w := startWrk(t, ns, url)
		// Let the load settle before the change, and keep it on after
		// the change returns: whatever up leaves to finish in the
		// background (a drain, a reload) happens under load too.
		time.Sleep(time.Second)
		t0 := time.Now()
		change()
		took := time.Since(t0)
		time.Sleep(2 * time.Second)
		r := w.stop(t)
		t.Logf("phase %s: change took %s; wrk: %d requests in %s, p99 %s, non-2xx/3xx %d, socket errors: connect %d, read %d, write %d, timeout %d",
			name, took.Round(10*time.Millisecond), r.requests, r.duration, r.p99, r.non2xx, r.connect, r.read, r.write, r.timeout)
		if r.requests == 0 {
			t.Errorf("phase %s: wrk made no request:\n%s", name, r.out)
		}
		if r.failed() != 0 {
			t.Errorf("phase %s: %d failed requests (non-2xx/3xx %d; socket errors: connect %d, read %d, write %d, timeout %d); want none:\n%s",
				name, r.failed(), r.non2xx, r.connect, r.read, r.write, r.timeout, r.out)
		}
	}
	phase("steady", func() { time.Sleep(5 * time.Second) })
	phase("scale 2 to 6", func() {
		setPool(6)
		s.run("up")
	})
	s.assertApps(t, 6)
	phase("scale 6 to 2", func() {
		setPool(2)
		s.run("up")
	})
	s.assertApps(t, 2)
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify after scaling back to 2 (%v):\n%.3000s", err, out)
	}
}

// outsideURL reads from the plan the namespace of the stack's outside
// vantage point and the edge's public address, the internet's view of the
// edge.
func (s *stack) outsideURL(t *testing.T) (netns, url string) {
	t.Helper()
	out, errOut, err := s.stdout("plan", "--output", "json")
	if err != nil {
		t.Fatalf("plan --output json: %v\n%s", err, errOut)
	}
	var p struct {
		Nodes []struct {
			Name       string `json:"name"`
			Interfaces []struct {
				Network string `json:"network"`
				Addr    string `json:"addr"`
			} `json:"interfaces"`
		} `json:"nodes"`
		Outside struct {
			Netns string `json:"netns"`
		} `json:"outside"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --output json: %v\n%s", err, out)
	}
	for _, n := range p.Nodes {
		for _, i := range n.Interfaces {
			if n.Name == "edge" && i.Network == "public" {
				url = "http://" + i.Addr + "/"
			}
		}
	}
	// Traffic goes only into namespaces this stack made: the vantage
	// point must be the stack's own.
	if url == "" || !strings.HasPrefix(p.Outside.Netns, "bh-"+s.name+"-") {
		t.Fatalf("no outside namespace of stack %s (%q) or no public address of its edge (%q) in the plan", s.name, p.Outside.Netns, url)
	}
	if _, err := os.Stat("/run/netns/" + p.Outside.Netns); err != nil {
		t.Fatalf("up made no namespace %s: %v", p.Outside.Netns, err)
	}
	return p.Outside.Netns, url
}

// assertApps checks that status shows exactly app-1 to app-n among the
// nodes, each running and healthy.
func (s *stack) assertApps(t *testing.T, n int) {
	t.Helper()
	var got, want []string
	for name, st := range status(t, s) {
		if strings.HasPrefix(name, "app-") {
			got = append(got, name)
			if st.State != "running" || !st.Healthy {
				t.Errorf("%s is %s, healthy %v", name, st.State, st.Healthy)
			}
		}
	}
	for i := 1; i <= n; i++ {
		want = append(want, "app-"+strconv.Itoa(i))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("status shows app nodes %v, want %v", got, want)
	}
}

// wrk is a load that runs until stopped: 2 threads and 8 connections
// with keepalive, as a handful of browsers would. A request is given 10
// s before wrk counts it as a timeout: one that takes longer has failed
// its visitor, on any machine.
type wrk struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

func startWrk(t *testing.T, netns, url string) *wrk {
	t.Helper()
	w := &wrk{}
	// -d only bounds a run that is never stopped; ip execs wrk, in a
	// process group of its own so that the signal reaches it either way.
	w.cmd = exec.Command("ip", "netns", "exec", netns, "wrk", "-t2", "-c8", "-d600s", "--timeout", "10s", "--latency", url)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start wrk: %v", err)
	}
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
			w.cmd.Wait()
		}
	})
	return w
}

// wrkResult is what wrk reported.
type wrkResult struct {
	requests                      int
	duration, p99                 string
	non2xx                        int // wrk counts statuses of 400 and above
	connect, read, write, timeout int
	out                           string
}

func (r wrkResult) failed() int { return r.non2xx + r.connect + r.read + r.write + r.timeout }

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+\w+),`)
	wrkSocket   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkP99      = regexp.MustCompile(`(?m)^\s*99%\s+(\S+)`)
)

// stop ends the load with SIGINT, on which wrk prints its figures for the
// time it ran, and reads them.
func (w *wrk) stop(t *testing.T) wrkResult {
	t.Helper()
	if err := syscall.Kill(-w.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatalf("stop wrk: %v\n%s", err, w.out.String())
	}
	err := w.cmd.Wait()
	r := wrkResult{out: w.out.String()}
	m := wrkRequests.FindStringSubmatch(r.out)
	if err != nil || m == nil {
		t.Fatalf("wrk: %v\n%s", err, r.out)
	}
	r.requests, _ = strconv.Atoi(m[1])
	r.duration = m[2]
	if m := wrkSocket.FindStringSubmatch(r.out); m != nil {
		r.connect, _ = strconv.Atoi(m[1])
		r.read, _ = strconv.Atoi(m[2])
		r.write, _ = strconv.Atoi(m[3])
		r.timeout, _ = strconv.Atoi(m[4])
	}
	if m := wrkNon2xx.FindStringSubmatch(r.out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkP99.FindStringSubmatch(r.out); m != nil {
		r.p99 = m[1]
	}
	return r
}
