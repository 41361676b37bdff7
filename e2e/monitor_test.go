package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
// monitor node, Prometheus scrapes every other node's agent, a daemon's
// restart inside a node reaches Prometheus's series, and status reads the
// alerts.
func TestMonitor(t *testing.T) {
	s := newStack(t, "e2emon", 252, 19110, monitorTiers)
	s.run("up")

	var p struct {
		Nodes []struct {
			Name    string `json:"name"`
			Role    string `json:"role"`
			Metrics string `json:"metrics"`
		} `json:"nodes"`
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

	hosttest.Eventually(t, time.Minute, "every node healthy again", func() bool {
		_, err := s.exec("status")
		return err == nil
	})
	if out := s.run("status"); !strings.Contains(out, "alerts: none firing") {
		t.Errorf("status does not report the monitor's alerts:\n%s", out)
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
