package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkhead/bulkhead/internal/service"
)

// Where Debian packages no exporter for a daemon (memcached, php-fpm), the
// agent reads the daemon's own figures at every scrape and serves them on
// its metrics port, under the names the community exporters use, so that
// their dashboards and rules fit. A daemon that does not answer is up 0
// and nothing else.

// statsTimeout bounds one read of a daemon's figures, within the
// monitor's scrape timeout.
const statsTimeout = 2 * time.Second

// Formats of service.Stats.
const (
	statsMemcached = "memcached"
	statsPHPFPM    = "php-fpm"
)

// statsMetric is one figure a daemon reports and the metric it becomes.
type statsMetric struct {
	key  string // the daemon's name for it
	desc *prometheus.Desc
	kind prometheus.ValueType
}

func gaugeOf(key, name, help string, labels ...string) statsMetric {
	return metricOf(key, name, help, prometheus.GaugeValue, labels)
}

func counterOf(key, name, help string, labels ...string) statsMetric {
	return metricOf(key, name, help, prometheus.CounterValue, labels)
}

// metricOf makes a metric whose labels, pairs of name and value, are
// constant: one figure is one series.
func metricOf(key, name, help string, kind prometheus.ValueType, labels []string) statsMetric {
	var constant prometheus.Labels
	for i := 0; i+1 < len(labels); i += 2 {
		if constant == nil {
			constant = prometheus.Labels{}
		}
		constant[labels[i]] = labels[i+1]
	}
	return statsMetric{key: key, desc: prometheus.NewDesc(name, help, nil, constant), kind: kind}
}

// memcachedMetrics are the figures of memcached's "stats" that the agent
// serves, as memcached_exporter names them.
var (
	memcachedUp      = prometheus.NewDesc("memcached_up", "1 when memcached answered its stats command, 0 otherwise.", nil, nil)
	memcachedMetrics = []statsMetric{
		gaugeOf("uptime", "memcached_uptime_seconds", "Seconds since memcached started."),
		gaugeOf("curr_connections", "memcached_current_connections", "Open connections."),
		counterOf("total_connections", "memcached_connections_total", "Connections opened since memcached started."),
		gaugeOf("curr_items", "memcached_current_items", "Items stored."),
		gaugeOf("bytes", "memcached_current_bytes", "Bytes the items take."),
		gaugeOf("limit_maxbytes", "memcached_limit_bytes", "Bytes memcached may use for items."),
		counterOf("evictions", "memcached_items_evicted_total", "Items evicted to make room."),
		counterOf("get_hits", "memcached_commands_total", "Commands by command and result.", "command", "get", "status", "hit"),
		counterOf("get_misses", "memcached_commands_total", "Commands by command and result.", "command", "get", "status", "miss"),
		counterOf("cmd_set", "memcached_commands_total", "Commands by command and result.", "command", "set", "status", "hit"),
		counterOf("bytes_read", "memcached_read_bytes_total", "Bytes read from clients."),
		counterOf("bytes_written", "memcached_written_bytes_total", "Bytes written to clients."),
	}
)

// phpfpmMetrics are the figures of php-fpm's status page (in JSON) that
// the agent serves, as php-fpm_exporter names them.
var (
	phpfpmUp      = prometheus.NewDesc("phpfpm_up", "1 when php-fpm's status page answered, 0 otherwise.", nil, nil)
	phpfpmMetrics = []statsMetric{
		counterOf("accepted conn", "phpfpm_accepted_connections_total", "Requests the pool accepted."),
		gaugeOf("listen queue", "phpfpm_listen_queue", "Requests waiting for a free process."),
		gaugeOf("max listen queue", "phpfpm_max_listen_queue", "The most requests that ever waited for a free process."),
		gaugeOf("listen queue len", "phpfpm_listen_queue_length", "The size of the pool's socket queue."),
		gaugeOf("idle processes", "phpfpm_processes", "Processes by state.", "state", "idle"),
		gaugeOf("active processes", "phpfpm_processes", "Processes by state.", "state", "active"),
		gaugeOf("max active processes", "phpfpm_max_active_processes", "The most processes that were ever active at once."),
		counterOf("max children reached", "phpfpm_max_children_reached_total", "Times the pool hit pm.max_children."),
		counterOf("slow requests", "phpfpm_slow_requests_total", "Requests slower than request_slowlog_timeout."),
	}
)

// statsCollector reads one daemon's figures at every scrape.
type statsCollector struct {
	s    service.Stats
	log  *slog.Logger
	http *http.Client
}

func newStats(s service.Stats, log *slog.Logger) *statsCollector {
	return &statsCollector{s: s, log: log, http: &http.Client{Timeout: statsTimeout}}
}

func (c *statsCollector) metrics() (*prometheus.Desc, []statsMetric) {
	if c.s.Format == statsPHPFPM {
		return phpfpmUp, phpfpmMetrics
	}
	return memcachedUp, memcachedMetrics
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	up, ms := c.metrics()
	ch <- up
	for _, m := range ms {
		ch <- m.desc
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	up, ms := c.metrics()
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	var vals map[string]float64
	var err error
	if c.s.Format == statsPHPFPM {
		vals, err = c.readPHPFPM(ctx)
	} else {
		vals, err = readMemcached(ctx, c.s.Addr)
	}
	if err != nil {
		c.log.Warn("read daemon's stats", "format", c.s.Format, "err", err)
		ch <- prometheus.MustNewConstMetric(up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(up, prometheus.GaugeValue, 1)
	for _, m := range ms {
		if v, ok := vals[m.key]; ok {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, v)
		}
	}
}

// maxStats bounds what is read of a daemon's answer; memcached's stats
// and php-fpm's status are about 2 KiB.
const maxStats = 64 << 10

// readMemcached sends memcached's "stats" command to addr and returns its
// numeric figures: "STAT name value" lines up to "END".
func readMemcached(ctx context.Context, addr string) (map[string]float64, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if _, err := io.WriteString(conn, "stats\r\n"); err != nil {
		return nil, fmt.Errorf("memcached %s: %w", addr, err)
	}
	return parseMemcached(io.LimitReader(conn, maxStats))
}

// parseMemcached reads stats lines until END. Values that are not numbers
// (version, libevent) are left out.
func parseMemcached(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "END" {
			return out, nil
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("memcached answered %q to stats", line)
		}
		if v, err := strconv.ParseFloat(f[2], 64); err == nil {
			out[f[1]] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("memcached's stats ended before END")
}

// readPHPFPM reads php-fpm's status page in JSON through the web server's
// status server on the node's loopback.
func (c *statsCollector) readPHPFPM(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.s.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", c.s.URL, resp.Status)
	}
	return parsePHPFPM(io.LimitReader(resp.Body, maxStats))
}

// parsePHPFPM reads the numbers of php-fpm's JSON status.
func parsePHPFPM(r io.Reader) (map[string]float64, error) {
	var raw map[string]any
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return nil, fmt.Errorf("php-fpm's status: %w", err)
	}
	if _, ok := raw["accepted conn"]; !ok {
		return nil, fmt.Errorf("php-fpm's status has no \"accepted conn\"")
	}
	out := map[string]float64{}
	for k, v := range raw {
		if n, ok := v.(float64); ok {
			out[k] = n
		}
	}
	return out, nil
}
