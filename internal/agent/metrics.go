package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The node's own metrics, in Prometheus's text format on GET /metrics. The
// monitor adds the node's name and tier as target labels when it scrapes,
// so that no metric here carries them and a node cannot claim to be
// another.
var (
	descCPU = prometheus.NewDesc("bulkhead_node_cpu_seconds_total",
		"CPU time the node's processes used, from its cgroup (cpuacct.usage).", nil, nil)
	descMemory = prometheus.NewDesc("bulkhead_node_memory_bytes",
		"Memory the node's cgroup charges, page cache included (memory.usage_in_bytes).", nil, nil)
	descMemoryRSS = prometheus.NewDesc("bulkhead_node_memory_rss_bytes",
		"Anonymous memory of the node's processes (memory.stat total_rss).", nil, nil)
	descMemoryLimit = prometheus.NewDesc("bulkhead_node_memory_limit_bytes",
		"The node's memory limit (memory.limit_in_bytes).", nil, nil)
	descPids = prometheus.NewDesc("bulkhead_node_pids",
		"Tasks in the node's cgroup (pids.current).", nil, nil)
	descPidsLimit = prometheus.NewDesc("bulkhead_node_pids_limit",
		"The node's task limit (pids.max); absent when it has none.", nil, nil)
	descIO = prometheus.NewDesc("bulkhead_node_io_bytes_total",
		"Bytes the node's cgroup read from and wrote to block devices (blkio.throttle.io_service_bytes).", []string{"op"}, nil)
	descDiskUsed = prometheus.NewDesc("bulkhead_node_disk_used_bytes",
		"Bytes used on the node's own disk, which holds its data and logs.", nil, nil)
	descDiskSize = prometheus.NewDesc("bulkhead_node_disk_size_bytes",
		"Size of the node's own disk: its limit.", nil, nil)
	descUp = prometheus.NewDesc("bulkhead_service_up",
		"1 when the service's daemon is running, 0 otherwise.", []string{"service"}, nil)
	descReady = prometheus.NewDesc("bulkhead_service_ready",
		"1 when the service is running, accepts connections on its ready addresses and its init is done.", []string{"service"}, nil)
	descRestarts = prometheus.NewDesc("bulkhead_service_restarts_total",
		"Starts of the service's daemon after the first, since the agent started.", []string{"service"}, nil)
	descScrapeErrors = prometheus.NewDesc("bulkhead_node_metric_errors",
		"Node metrics that could not be read in this scrape; the agent's log says why.", nil, nil)
)

// collector reads the node's metrics at every scrape.
type collector struct {
	a *agent
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.a.cfg
	var errs []error
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if cfg.Cgroup != "" {
		cg := cgroupV1{dir: cfg.Cgroup}
		if v, err := cg.uint("cpuacct", "cpuacct.usage"); err == nil {
			counter(descCPU, float64(v)/1e9)
		} else {
			errs = append(errs, err)
		}
		if v, err := cg.uint("memory", "memory.usage_in_bytes"); err == nil {
			gauge(descMemory, float64(v))
		} else {
			errs = append(errs, err)
		}
		if v, err := cg.stat("memory", "memory.stat", "total_rss"); err == nil {
			gauge(descMemoryRSS, float64(v))
		} else {
			errs = append(errs, err)
		}
		if v, err := cg.uint("memory", "memory.limit_in_bytes"); err == nil {
			gauge(descMemoryLimit, float64(v))
		} else {
			errs = append(errs, err)
		}
		if v, err := cg.uint("pids", "pids.current"); err == nil {
			gauge(descPids, float64(v))
		} else {
			errs = append(errs, err)
		}
		if v, err := cg.uint("pids", "pids.max"); err == nil {
			gauge(descPidsLimit, float64(v))
		} else if !errors.Is(err, errNoLimit) {
			errs = append(errs, err)
		}
		if rd, wr, err := cg.ioBytes(); err == nil {
			counter(descIO, float64(rd), "read")
			counter(descIO, float64(wr), "write")
		} else {
			errs = append(errs, err)
		}
	}
	if cfg.Disk != "" {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(cfg.Disk, &fs); err == nil {
			gauge(descDiskSize, float64(fs.Blocks*uint64(fs.Bsize)))
			gauge(descDiskUsed, float64((fs.Blocks-fs.Bfree)*uint64(fs.Bsize)))
		} else {
			errs = append(errs, fmt.Errorf("statfs %s: %w", cfg.Disk, err))
		}
	}
	for _, s := range c.a.scrapeStatus().Services {
		gauge(descUp, b2f(s.State == StateRunning), s.Name)
		gauge(descReady, b2f(s.Ready), s.Name)
		counter(descRestarts, float64(s.Restarts), s.Name)
	}
	gauge(descScrapeErrors, float64(len(errs)))
	if len(errs) > 0 {
		c.a.log.Warn("read node metrics", "err", errors.Join(errs...))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// cgroupV1 reads a cgroup v1 hierarchy as runc's "cgroup" mount lays it
// out: one directory per controller, each the node's own cgroup.
type cgroupV1 struct {
	dir string
}

// errNoLimit is a limit file's "max".
var errNoLimit = errors.New("no limit")

// maxCgroupFile bounds what is read of one cgroup file; memory.stat, the
// largest read here, is about 1.5 KiB.
const maxCgroupFile = 64 << 10

func (c cgroupV1) read(controller, file string) ([]byte, error) {
	f, err := os.Open(filepath.Join(c.dir, controller, file))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxCgroupFile)
	n, err := f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return buf[:n], nil
}

func (c cgroupV1) uint(controller, file string) (uint64, error) {
	data, err := c.read(controller, file)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, errNoLimit
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s/%s: %w", controller, file, err)
	}
	return v, nil
}

// stat returns key's value in a "key value" file such as memory.stat.
func (c cgroupV1) stat(controller, file, key string) (uint64, error) {
	data, err := c.read(controller, file)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s/%s %s: %w", controller, file, key, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s/%s: no %s", controller, file, key)
}

// ioBytes sums blkio.throttle.io_service_bytes's "MAJ:MIN Read N" and
// "MAJ:MIN Write N" lines over every device. The throttle files count
// under any I/O scheduler, where blkio.io_service_bytes needs CFQ.
func (c cgroupV1) ioBytes() (read, write uint64, err error) {
	data, err := c.read("blkio", "blkio.throttle.io_service_bytes")
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || !strings.Contains(f[0], ":") {
			continue // "Total N"
		}
		n, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("blkio.throttle.io_service_bytes: %w", err)
		}
		switch f[1] {
		case "Read":
			read += n
		case "Write":
			write += n
		}
	}
	return read, write, nil
}

// metricsHandler serves the node's metrics.
func (a *agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a: a})
	for _, s := range a.cfg.Services {
		if s.AccessLog != "" {
			reg.MustRegister(newAccessLog(s.Name, s.AccessLog, a.log))
		}
		if s.Stats != nil {
			reg.MustRegister(newStats(*s.Stats, a.log))
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            promLog{a},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	return mux
}

type promLog struct{ a *agent }

func (l promLog) Println(v ...any) { l.a.log.Warn("serve metrics", "err", fmt.Sprint(v...)) }

// serveMetrics serves the node's metrics on addr until ctx is done. The
// address is the node's own, which the host sets up before the node
// starts; if it cannot listen yet, it tries again every few seconds
// rather than keep the node's daemons from starting.
func (a *agent) serveMetrics(ctx context.Context, addr string) {
	srv := &http.Server{Handler: a.metricsHandler(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 15 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	for ctx.Err() == nil {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
		if err != nil {
			a.log.Error("listen for metrics", "addr", addr, "err", err, "retry_in", "5s")
			t := time.NewTimer(5 * time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		a.log.Info("serving metrics", "addr", ln.Addr().String())
		if err := srv.Serve(ln); errors.Is(err, http.ErrServerClosed) {
			return
		} else {
			a.log.Error("serve metrics", "addr", addr, "err", err)
		}
	}
}
