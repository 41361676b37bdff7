package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// monitorTiers is the default stack with the monitor tier.
const monitorTiers = `tiers:
  edge: {}
  static: {}
  app: {replicas: 2}
  cache: {}
  db: {}
  storage: {}
  monitor: {}
`

// TestMonitor (#15) brings up stack e2emon (10.252, 19110) with the monitor
// tier: verify passes with it, its self-test catches a hole planted in the
// monitor node, Prometheus scrapes every other node's agent and every role
// exporter, with a role figure of each (apache, php-fpm and memcached
// through the agent, mysqld, nginx), N requests
// through the edge raise the nginx exporter's request counter and the
// agent's count of responses by N, top shows them, the dashboard in
// headless Chromium shows every node, the verify and graphs with points
// (and, with BULKHEAD_SCREENSHOT=FILE, saves a screenshot of it there), a
// daemon's restart inside a node reaches Prometheus's series, and status
// reads the alerts.
func TestMonitor(t *testing.T) {
	s := newStack(t, "e2emon", 252, 19110, monitorTiers)
	s.run("up")

	var p struct {
		Nodes     []planNode `json:"nodes"`
		Dashboard *struct {
			Node   string `json:"node"`
			Target string `json:"target"`
		} `json:"dashboard"`
	}
	if err := json.Unmarshal([]byte(s.json("plan", "--output", "json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Dashboard == nil || p.Dashboard.Node != "monitor" {
		t.Fatalf("plan's dashboard = %+v; want the monitor node", p.Dashboard)
	}
	prom := promClient{t: t, base: "http://" + p.Dashboard.Target, bridge: s.name + "-pri"}

	// Every other node's agent is scraped, and says it is up.
	var scraped []string
	for _, n := range p.Nodes {
		if n.Role != "monitor" {
			scraped = append(scraped, n.Name)
		}
	}
	hosttest.Eventually(t, time.Minute, "Prometheus scraping every node's agent", func() bool {
		up := prom.vector(`up{job="node"} == 1`)
		for _, n := range scraped {
			if _, ok := up[n]; !ok {
				return false
			}
		}
		return true
	})
	mem := prom.vector(`bulkhead_node_memory_bytes`)
	for _, n := range scraped {
		if mem[n] <= 0 {
			t.Errorf("%s's memory from its cgroup = %v; want > 0", n, mem[n])
		}
	}

	// Every role's exporter is scraped and up, and each role's figures,
	// the exporters' and those the agent reads itself, reach Prometheus.
	roleMetricsReachPrometheus(t, prom, p.Nodes, map[string][]string{
		`nginx_up == 1`:                  {"edge"},
		`apache_up == 1`:                 {"app-1", "app-2"},
		`phpfpm_up == 1`:                 {"app-1", "app-2"},
		`mysql_up == 1`:                  {"db"},
		`mysql_global_status_uptime > 0`: {"db"},
		`memcached_up == 1`:              {"cache"},
		`memcached_limit_bytes > 0`:      {"cache"},
	})

	out := s.run("verify")
	if !strings.Contains(out, "PASS: stack e2emon is isolated as planned") {
		t.Errorf("verify with the monitor:\n%s", out)
	}
	// The metrics port is open to the monitor alone.
	for _, want := range []string{"monitor → edge     9100/tcp", "monitor → app      9100/tcp"} {
		if plan := s.run("plan"); !strings.Contains(plan, want) {
			t.Errorf("plan lacks the flow %q:\n%s", want, plan)
		}
	}
	s.requestsReachPrometheus(prom)
	s.dashboardInChromium(p.Nodes)

	out = s.run("verify", "--self-test")
	if !strings.Contains(out, "the monitor widened: monitor also accepts tcp/22 on its private side: caught") {
		t.Errorf("self-test did not catch the hole in the monitor:\n%s", out)
	}

	// A daemon killed inside app-2 restarts, and the agent's count of it
	// reaches Prometheus.
	var st struct {
		Nodes []struct {
			Name     string `json:"name"`
			Services []struct {
				Name string `json:"name"`
				PID  int    `json:"pid"`
			} `json:"services"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(s.json("status", "--output", "json")), &st); err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, n := range st.Nodes {
		for _, sv := range n.Services {
			if n.Name == "app-2" && sv.Name == "apache2" {
				pid = sv.PID
			}
		}
	}
	if pid == 0 {
		t.Fatalf("no pid of apache2 in app-2 in status")
	}
	if out, err := s.in("app-2", "kill", "-KILL", strconv.Itoa(pid)); err != nil {
		t.Fatalf("kill apache2 in app-2: %v\n%s", err, out)
	}
	hosttest.Eventually(t, time.Minute, "apache2's restart in app-2 in Prometheus", func() bool {
		return prom.vector(`bulkhead_service_restarts_total{service="apache2"}`)["app-2"] >= 1
	})

	// Each agent and the monitor answer status within seconds; on a
	// loaded host one may not, and status says so.
	hosttest.Eventually(t, time.Minute, "every node healthy again, and status reporting the monitor's alerts", func() error {
		out, err := s.exec("status")
		if err != nil || !strings.Contains(out, "alerts: none firing") {
			return fmt.Errorf("status (%v):\n%s", err, out)
		}
		return nil
	})
}

// planNode is what the monitor tests read of a node in the plan.
type planNode struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Metrics  string `json:"metrics"`
	Exporter *struct {
		Package string `json:"package"`
		Addr    string `json:"addr"`
	} `json:"exporter"`
}

// roleMetricsReachPrometheus waits until Prometheus scrapes every role
// exporter the plan names and finds it up, and until each query has a
// value for each of its nodes.
func roleMetricsReachPrometheus(t *testing.T, prom promClient, nodes []planNode, want map[string][]string) {
	t.Helper()
	var exporters []string
	for _, n := range nodes {
		if n.Exporter != nil {
			exporters = append(exporters, n.Name)
		}
	}
	if len(exporters) == 0 {
		t.Fatalf("the plan names no role exporter")
	}
	hosttest.Eventually(t, time.Minute, fmt.Sprintf("Prometheus scraping the role exporters of %v", exporters), func() bool {
		up := prom.vector(`up{job="exporter"} == 1`)
		for _, n := range exporters {
			if _, ok := up[n]; !ok {
				return false
			}
		}
		return true
	})
	for q, ns := range want {
		hosttest.Eventually(t, 30*time.Second, fmt.Sprintf("%s for %v", q, ns), func() bool {
			got := prom.vector(q)
			for _, n := range ns {
				if _, ok := got[n]; !ok {
					return false
				}
			}
			return true
		})
	}
}

// TestMonitorVariants (#15) brings up stack bhexp1 (10.204, 19156) with
// the other software of each role and a monitor: haproxy's own metrics,
// nginx's and php-fpm's on the app, postgres's and redis's exporters are
// scraped and up, each with a role figure, and verify passes.
func TestMonitorVariants(t *testing.T) {
	s := newStack(t, "bhexp1", 204, 19156, `tiers:
  edge: {software: haproxy}
  app: {software: nginx, replicas: 1}
  cache: {software: redis}
  db: {software: postgresql}
  storage: {}
  monitor: {}
`)
	s.run("up")
	var p struct {
		Nodes     []planNode `json:"nodes"`
		Dashboard *struct {
			Target string `json:"target"`
		} `json:"dashboard"`
	}
	if err := json.Unmarshal([]byte(s.json("plan", "--output", "json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Dashboard == nil {
		t.Fatalf("the plan has no dashboard")
	}
	prom := promClient{t: t, base: "http://" + p.Dashboard.Target, bridge: s.name + "-pri"}
	roleMetricsReachPrometheus(t, prom, p.Nodes, map[string][]string{
		`haproxy_process_start_time_seconds > 0`: {"edge"},
		`nginx_up == 1`:                          {"app-1"},
		`phpfpm_up == 1`:                         {"app-1"},
		`pg_up == 1`:                             {"db"},
		`pg_stat_database_numbackends{datname="postgres"} >= 1`: {"db"},
		`redis_up == 1`: {"cache"},
	})
	if out := s.run("verify"); !strings.Contains(out, "PASS: stack bhexp1 is isolated as planned") {
		t.Errorf("verify with every exporter:\n%s", out)
	}
}

// json runs bulkhead and returns its standard output alone, failing the
// test on error.
func (s *stack) json(args ...string) string {
	s.t.Helper()
	out, errs, err := s.stdout(args...)
	if err != nil {
		s.t.Fatalf("bulkhead %s: %v\n%s", strings.Join(args, " "), err, errs)
	}
	return out
}

// promClient asks the monitor's Prometheus from the host, over a socket
// bound to the stack's private bridge, so that nothing leaves the host if
// the bridge is gone.
type promClient struct {
	t      *testing.T
	base   string
	bridge string
}

// vector runs an instant query and returns each series' value by its node
// label.
func (c promClient) vector(query string) map[string]float64 {
	c.t.Helper()
	dialer := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, c.bridge)
		}); err != nil {
			return err
		}
		return serr
	}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Logf("query %s: %v", query, err)
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		c.t.Fatalf("query %s: %v: %s", query, err, body)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			c.t.Fatalf("query %s: value %v: %v", query, s.Value[1], err)
		}
		out[s.Metric["node"]] = v
	}
	return out
}

// requestsReachPrometheus sends N requests through the edge's published
// port and waits for both of Prometheus's counts of the edge's requests to
// grow by at least N: the nginx exporter's (stub_status, which also counts
// the exporter's own reads) and the agent's, from the access log (which
// does not). Then top shows the edge's requests a second.
func (s *stack) requestsReachPrometheus(prom promClient) {
	t := s.t
	t.Helper()
	const n = 50
	exporter := `nginx_http_requests_total{job="exporter"}`
	agent := `sum by (node) (bulkhead_http_responses_total{job="node"})`
	hosttest.Eventually(t, time.Minute, "the edge's nginx exporter scraped", func() bool {
		_, ok := prom.vector(exporter)["edge"]
		return ok
	})
	before, beforeAgent := prom.vector(exporter)["edge"], prom.vector(agent)["edge"]
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range n {
		resp, err := client.Get("http://" + s.http + "/")
		if err != nil {
			t.Fatalf("request %d through the edge: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	hosttest.Eventually(t, time.Minute, fmt.Sprintf("%d requests in the edge's counters in Prometheus", n), func() bool {
		return prom.vector(exporter)["edge"]-before >= n && prom.vector(agent)["edge"]-beforeAgent >= n
	})

	var us []struct {
		Node     string   `json:"node"`
		Requests *float64 `json:"requests"`
	}
	if err := json.Unmarshal([]byte(s.json("top", "--output", "json")), &us); err != nil {
		t.Fatal(err)
	}
	t.Logf("bulkhead top --once:\n%s", s.run("top", "--once"))
	for _, u := range us {
		if (u.Node == "edge") != (u.Requests != nil) || (u.Requests != nil && *u.Requests <= 0) {
			t.Errorf("top: %s's requests/s = %v; want a rate > 0 for the edge alone", u.Node, u.Requests)
		}
	}
}

// dashboardInChromium serves the dashboard on the host's loopback, opens it
// in headless Chromium and checks what a person would see: every node in
// the picture, the last verify's PASS, and a graph of the edge's requests
// with data points.
func (s *stack) dashboardInChromium(nodes []planNode) {
	t := s.t
	t.Helper()
	chromium := "/usr/bin/chromium"
	_, err := os.Stat(chromium)
	hosttest.Require(t, err == nil, "chromium (apt-get install chromium; .ci/run lists it)")

	// Next to the stack's published 19110 and 19111, a port no other
	// test uses.
	addr := "127.0.0.1:19166"
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "dashboard", "--listen", addr)
	cmd.Dir = s.dir
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	hosttest.Eventually(t, 30*time.Second, "the dashboard listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // as root; the page is the test's own
		chromedp.WindowSize(1100, 900),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	// The browser lives as long as the context of its first action: no
	// timeout on that one, only on each action after it.
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+addr+"/")); err != nil {
		t.Fatalf("open the dashboard in Chromium: %v\n%s", err, logs.String())
	}
	// The page is drawn on the server from Prometheus at each load. A
	// rate has its second point a scrape after its first: load the page
	// again until the edge's request graph has two, as a visitor would.
	var html, verdict string
	var points []string
	var shot []byte
	load := func() error {
		step, stepCancel := context.WithTimeout(bctx, time.Minute)
		defer stepCancel()
		if err := chromedp.Do(step, chromedp.Navigate("http://"+addr+"/")); err != nil {
			return fmt.Errorf("load the dashboard: %w", err)
		}
		if err := chromedp.Do(step, chromedp.WaitVisible(chromedp.CSS("#graphs"))); err != nil {
			return fmt.Errorf("the dashboard's graphs in Chromium: %w\n%s", err, logs.String())
		}
		var err error
		if html, err = chromedp.Run(step, chromedp.OuterHTML(chromedp.CSS("html"))); err != nil {
			return err
		}
		if verdict, err = chromedp.Run(step, chromedp.Text(chromedp.CSS("#verify .verdict"))); err != nil {
			return fmt.Errorf("the dashboard's verify verdict: %w\n%s", err, html)
		}
		if points, err = chromedp.Run(step, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#graphs figure")].map(f => f.querySelector("figcaption").textContent + "|" + f.querySelector("polyline").getAttribute("points"))`)); err != nil {
			return err
		}
		if shot, err = chromedp.Run(step, chromedp.FullScreenshot(100)); err != nil {
			return err
		}
		for _, g := range points {
			caption, pts, _ := strings.Cut(g, "|")
			if strings.HasPrefix(caption, "edge: requests") && len(strings.Fields(pts)) >= 2 {
				return nil
			}
		}
		time.Sleep(time.Second) // a scrape is every few seconds
		return fmt.Errorf("no graph of the edge's requests with two data points or more: %q", points)
	}
	hosttest.Eventually(t, 2*time.Minute, "the dashboard in Chromium with the edge's requests graphed", load)
	for _, n := range nodes {
		if !strings.Contains(html, `data-node="`+n.Name+`"`) {
			t.Errorf("the dashboard does not draw node %s", n.Name)
		}
	}
	if !strings.HasPrefix(verdict, "PASS at ") {
		t.Errorf("the dashboard's verify = %q; want the last verify's PASS", verdict)
	}
	if file := os.Getenv("BULKHEAD_SCREENSHOT"); file != "" {
		if err := os.WriteFile(file, shot, 0o644); err != nil {
			t.Error(err)
		}
	}
}
