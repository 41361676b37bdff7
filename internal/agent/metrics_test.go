package agent

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/service"
)

// freeAddr returns a loopback address that nothing listens on just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads the agent's metrics at addr, as Prometheus would.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	hosttest.Eventually(t, patience, "metrics served on "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("GET /metrics: Content-Type %q; want Prometheus's text format", ct)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err = parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("parse metrics: %v", err)
		}
		return true
	})
	return fams
}

// value returns the metric of family name whose labels include labels
// (name=value pairs), or fails the test.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// writeCgroup lays out a cgroup v1 tree as runc's cgroup mount does, with
// the files the metrics read, as the kernel writes them.
func writeCgroup(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestMetrics(t *testing.T) {
	cg := writeCgroup(t, map[string]string{
		"cpuacct/cpuacct.usage":        "2500000000\n",
		"memory/memory.usage_in_bytes": "52428800\n",
		"memory/memory.limit_in_bytes": "268435456\n",
		"memory/memory.stat":           "cache 1000\nrss 2000\ntotal_cache 30000\ntotal_rss 41943040\n",
		"pids/pids.current":            "7\n",
		"pids/pids.max":                "512\n",
		"blkio/blkio.throttle.io_service_bytes": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n" +
			"8:16 Read 100\n8:16 Write 0\nTotal 12388\n",
	})
	addr := freeAddr(t)
	disk := t.TempDir()
	r := start(t, Config{Metrics: addr, Cgroup: cg, Disk: disk, Services: []service.Service{
		{Name: "steady", Argv: []string{"sleep", "1000"}},
		{Name: "flappy", Argv: sh("sleep 0.05; exit 3")},
	}})
	hosttest.Eventually(t, patience, "flappy restarted twice", func() bool { return r.service(t, "flappy").Restarts >= 2 })

	fams := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"bulkhead_node_cpu_seconds_total", nil, 2.5},
		{"bulkhead_node_memory_bytes", nil, 52428800},
		{"bulkhead_node_memory_rss_bytes", nil, 41943040},
		{"bulkhead_node_memory_limit_bytes", nil, 268435456},
		{"bulkhead_node_pids", nil, 7},
		{"bulkhead_node_pids_limit", nil, 512},
		{"bulkhead_node_io_bytes_total", []string{"op", "read"}, 4196},
		{"bulkhead_node_io_bytes_total", []string{"op", "write"}, 8192},
		{"bulkhead_service_up", []string{"service", "steady"}, 1},
		{"bulkhead_service_restarts_total", []string{"service", "steady"}, 0},
		{"bulkhead_node_metric_errors", nil, 0},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(t, fams, "bulkhead_service_restarts_total", "service", "flappy"); got < 2 {
		t.Errorf("flappy's restarts = %v; want at least 2", got)
	}
	if size, used := value(t, fams, "bulkhead_node_disk_size_bytes"), value(t, fams, "bulkhead_node_disk_used_bytes"); size <= 0 || used < 0 || used > size {
		t.Errorf("disk used %v of %v; want 0 <= used <= size > 0", used, size)
	}
	if fams["bulkhead_node_cpu_seconds_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("cpu seconds is a %v; want a counter", fams["bulkhead_node_cpu_seconds_total"].GetType())
	}
}

// TestMetricsUnlimitedAndMissing: a cgroup without a pids limit leaves the
// limit out, and a file that cannot be read is counted, not fatal.
func TestMetricsUnlimitedAndMissing(t *testing.T) {
	cg := writeCgroup(t, map[string]string{
		"cpuacct/cpuacct.usage": "1000000000\n",
		"pids/pids.current":     "3\n",
		"pids/pids.max":         "max\n",
	})
	addr := freeAddr(t)
	start(t, Config{Metrics: addr, Cgroup: cg, Services: []service.Service{{Name: "s", Argv: []string{"sleep", "1000"}}}})
	fams := scrape(t, addr)
	if _, ok := fams["bulkhead_node_pids_limit"]; ok {
		t.Errorf("pids limit reported for pids.max = max")
	}
	if got := value(t, fams, "bulkhead_node_pids"); got != 3 {
		t.Errorf("pids = %v; want 3", got)
	}
	// memory: usage, stat and limit; blkio: one file.
	if got := value(t, fams, "bulkhead_node_metric_errors"); got != 4 {
		t.Errorf("metric errors = %v; want 4 (memory's three files and blkio's)", got)
	}
}

// TestMetricsRealCgroup reads cgroup files as the kernel writes them: a
// new cgroup beneath this process's own in each controller, laid out as
// runc's cgroup mount lays out a node's. (The root cgroup lacks some files,
// such as pids.current.)
func TestMetricsRealCgroup(t *testing.T) {
	hosttest.RequireRoot(t)
	own := ownCgroups(t)
	dir := t.TempDir()
	for _, c := range []string{"cpuacct", "memory", "pids", "blkio"} {
		p, ok := own[c]
		hosttest.Require(t, ok, "no cgroup v1 %s controller mounted at /sys/fs/cgroup/%s", c, c)
		cg := filepath.Join("/sys/fs/cgroup", c, p, "bulkhead-agent-test-"+strconv.Itoa(os.Getpid()))
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(cg) })
		if err := os.Symlink(cg, filepath.Join(dir, c)); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	start(t, Config{Metrics: addr, Cgroup: dir, Services: []service.Service{{Name: "s", Argv: []string{"sleep", "1000"}}}})
	fams := scrape(t, addr)
	if got := value(t, fams, "bulkhead_node_metric_errors"); got != 0 {
		t.Errorf("metric errors = %v reading the kernel's own files; want 0", got)
	}
	// Nothing runs in the new cgroups.
	for _, name := range []string{"bulkhead_node_cpu_seconds_total", "bulkhead_node_pids"} {
		if got := value(t, fams, name); got != 0 {
			t.Errorf("%s = %v in an empty cgroup; want 0", name, got)
		}
	}
	if got := value(t, fams, "bulkhead_node_memory_limit_bytes"); got <= 0 {
		t.Errorf("memory limit = %v; want > 0", got)
	}
}

// ownCgroups maps each cgroup v1 controller to this process's cgroup in it.
func ownCgroups(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c)); err == nil {
				out[c] = parts[2]
			}
		}
	}
	return out
}

// TestScrapeProbesSparingly: a scrape reports a service ready from the
// last readiness probe while it is recent, without connecting to the
// daemon again (sshd forks and re-executes for every connection).
func TestScrapeProbesSparingly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	addr := freeAddr(t)
	r := start(t, Config{Metrics: addr, Services: []service.Service{
		{Name: "daemon", Argv: []string{"sleep", "1000"}, Ready: []string{ln.Addr().String()}},
	}})
	hosttest.Eventually(t, patience, "the daemon ready", func() bool { return r.service(t, "daemon").Ready })
	probes := accepted.Load()
	for range 3 {
		if got := value(t, scrape(t, addr), "bulkhead_service_ready", "service", "daemon"); got != 1 {
			t.Fatalf("bulkhead_service_ready = %v; want 1", got)
		}
	}
	if n := accepted.Load(); n != probes {
		t.Errorf("3 scrapes right after a status connected %d times to the ready address; want 0", n-probes)
	}
}
