package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// TestChangeUnderLoad changes a live stack while visitors use it: clients
// in the stack's outside namespace (the internet's side of the edge) send
// GET / without pause over keep-alive connections, for the whole of each
// phase, and no request may fail in any of them: steady load with no
// change, the app pool scaled from 2 to 6 with up, and back from 6 to 2;
// a good release deployed; a release with a PHP syntax error refused; a
// release whose health check fails rolled back; and a rollback to the
// first release.
//
// The clients are Go's HTTP client, which does what browsers do (RFC 9112,
// 9.3.1): a GET sent on a kept-alive connection that the server closed
// before answering is sent again on a new one. An edge that reloads closes
// its idle keep-alive connections, and a visitor never sees that. Every
// other error, and every answer but 200, is a failed request. The figures
// of each phase are logged, the new connections among them; no assertion
// depends on how fast the machine is.
func TestChangeUnderLoad(t *testing.T) {
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
		l := startLoad(t, ns, url, 8)
		// Let the load settle before the change, and keep it on after
		// the change returns: whatever up leaves to finish in the
		// background (a drain, a reload) happens under load too.
		time.Sleep(time.Second)
		t0 := time.Now()
		change()
		took := time.Since(t0)
		time.Sleep(2 * time.Second)
		r := l.stop()
		t.Logf("phase %s: change took %s; %d requests, p99 %s, %d failed, %d connections opened", name, took.Round(10*time.Millisecond), r.requests, r.p99, len(r.failures), r.dials)
		if r.requests == 0 {
			t.Errorf("phase %s: no request was made", name)
		}
		if len(r.failures) > 0 {
			t.Errorf("phase %s: %d of %d requests failed; want none; the first: %q", name, len(r.failures), r.requests, r.failures[:min(len(r.failures), 5)])
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

	site := filepath.Join(s.dir, "site")
	first := s.liveRelease(t)
	writeFile(t, filepath.Join(site, "version.php"), "<?php echo 'release two';\n")
	writeFile(t, filepath.Join(site, "assets", "two.css"), "body { color: teal }\n")
	phase("deploy a good release", func() { s.run("deploy") })
	second := s.liveRelease(t)
	if second == first {
		t.Fatalf("deploy left release %s live", first)
	}
	if got := s.get(t, "/version.php"); got != "200 release two" {
		t.Errorf("GET /version.php after the deploy: %q, want 200 release two", got)
	}
	if got := s.get(t, "/assets/two.css"); !strings.HasPrefix(got, "200 body") {
		t.Errorf("GET /assets/two.css (static) after the deploy: %q", got)
	}
	s.assertApps(t, 2) // the surge node came and went

	writeFile(t, filepath.Join(site, "broken.php"), "<?php\nfunction f( {\n")
	phase("deploy a release with a PHP syntax error", func() {
		out, err := s.exec("deploy")
		if err == nil || !strings.Contains(out, "broken.php: PHP Parse error") && !strings.Contains(out, "broken.php: Parse error") {
			t.Errorf("deploy of code that does not parse: %v; want it refused naming broken.php:\n%s", err, out)
		}
	})
	if got := s.get(t, "/broken.php"); !strings.HasPrefix(got, "404") {
		t.Errorf("GET /broken.php after the refused deploy: %q, want 404", got)
	}
	os.Remove(filepath.Join(site, "broken.php"))

	index := filepath.Join(site, "index.php")
	good, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, index, "<?php http_response_code(500); error_log('release three: the database is gone'); echo 'release three is broken';\n")
	phase("deploy a release whose health check fails", func() {
		out, err := s.exec("deploy")
		if err == nil || !strings.Contains(out, "answered GET /healthz with 500") || !strings.Contains(out, "release three is broken") || !strings.Contains(out, "rolling back") {
			t.Errorf("deploy of a failing release: %v; want exit 1 naming the check, its answer and the rollback:\n%s", err, out)
		}
	})
	if live := s.liveRelease(t); live != second {
		t.Errorf("after the failed deploy release %s is live, want %s", live, second)
	}
	if out := s.run("releases"); !strings.Contains(grep(out, "failed"), "failed") {
		t.Errorf("releases does not show the failed release:\n%s", out)
	}
	writeFile(t, index, string(good))
	s.assertApps(t, 2)

	phase("roll back", func() { s.run("rollback", first) })
	if live := s.liveRelease(t); live != first {
		t.Errorf("after rollback release %s is live, want %s", live, first)
	}
	if got := s.get(t, "/version.php"); !strings.HasPrefix(got, "404") {
		t.Errorf("GET /version.php after rolling back to the first release: %q, want 404", got)
	}
	// The site still holds release two's code, but up does not roll
	// forward behind the operator's back.
	if out := s.run("up"); strings.Contains(out, "is live on every node") || strings.Contains(out, "deploy: release") {
		t.Errorf("up after the rollback deployed again:\n%s", out)
	}
	if live := s.liveRelease(t); live != first {
		t.Errorf("after up, release %s is live, want %s", live, first)
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify after the releases (%v):\n%.3000s", err, out)
	}
}

// liveRelease is the release bulkhead releases shows live.
func (s *stack) liveRelease(t *testing.T) string {
	t.Helper()
	for _, l := range strings.Split(s.run("releases"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasSuffix(l, " live") {
			return f[0]
		}
	}
	t.Fatalf("no live release in:\n%s", s.run("releases"))
	return ""
}

// get asks the stack's published port for path and returns "STATUS BODY".
func (s *stack) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + s.http + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
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
// load is clients sending GET url without pause from a network
// namespace, each over its own keep-alive connection.
type load struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	res   loadResult
	lat   []time.Duration
}

type loadResult struct {
	requests   int
	failures   []string
	failedFrom []time.Time   // when each failed request began
	lastFailed time.Time     // when the last failed request ended
	dials      int           // connections opened
	p99        time.Duration // of the requests that succeeded
}

// startLoad starts clients in the namespace ns; the test's end stops them.
func startLoad(t *testing.T, ns, url string, clients int) *load {
	t.Helper()
	h, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	l := &load{stopc: make(chan struct{})}
	var d net.Dialer
	for range clients {
		tr := &http.Transport{
			// Sockets are made inside ns, on a thread of their own.
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := netns.Do(h, func() (err error) {
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				l.mu.Lock()
				l.res.dials++
				l.mu.Unlock()
				return c, err
			},
			MaxIdleConnsPerHost: 1,
		}
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		l.wg.Go(func() {
			defer tr.CloseIdleConnections()
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				t0 := time.Now()
				resp, err := c.Get(url)
				took := time.Since(t0)
				fail := ""
				if err != nil {
					fail = err.Error()
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						fail = resp.Status
					}
				}
				l.mu.Lock()
				l.res.requests++
				if fail != "" {
					l.res.failures = append(l.res.failures, fail)
					l.res.failedFrom = append(l.res.failedFrom, t0)
					l.res.lastFailed = t0.Add(took)
				} else {
					l.lat = append(l.lat, took)
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load, once, and returns its figures.
func (l *load) stop() loadResult {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lat) > 0 {
		slices.Sort(l.lat)
		l.res.p99 = l.lat[len(l.lat)*99/100].Round(time.Millisecond)
	}
	return l.res
}
