package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// accessLog turns a daemon's access log into request metrics: responses by
// status class and their times. nginx's stub_status, all Debian's nginx
// exporter reads, has neither. It reads what the daemon appended since
// the last scrape, so it costs nothing between scrapes; lines written
// before the agent started are not counted. When the log shrinks (the
// agent cut it, see cutLogs) it reads from the start again, and what was
// appended between the last scrape and the cut is not counted.
type accessLog struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	offset  int64
	partial []byte // a line not yet ended by a newline
	bad     uint64 // lines that did not parse

	responses *prometheus.CounterVec
	duration  prometheus.Histogram
	malformed prometheus.CounterFunc
}

func newAccessLog(service, path string, log *slog.Logger) *accessLog {
	l := &accessLog{path: path, log: log}
	labels := prometheus.Labels{"service": service}
	l.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "bulkhead_http_responses_total",
		Help:        "Responses the service sent, by status class (2xx, 3xx, 4xx, 5xx), from its access log.",
		ConstLabels: labels,
	}, []string{"code"})
	l.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "bulkhead_http_request_duration_seconds",
		Help:        "Time from a request's first byte to the response's last, from the service's access log.",
		ConstLabels: labels,
		Buckets:     prometheus.DefBuckets,
	})
	l.malformed = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "bulkhead_http_log_malformed_total",
		Help:        "Access log lines the agent could not read a status and a time from.",
		ConstLabels: labels,
	}, func() float64 { l.mu.Lock(); defer l.mu.Unlock(); return float64(l.bad) })
	// Counts start now: the log's past is not this agent's.
	if fi, err := os.Stat(path); err == nil {
		l.offset = fi.Size()
	}
	return l
}

func (l *accessLog) Describe(ch chan<- *prometheus.Desc) {
	l.responses.Describe(ch)
	l.duration.Describe(ch)
	l.malformed.Describe(ch)
}

func (l *accessLog) Collect(ch chan<- prometheus.Metric) {
	if err := l.read(); err != nil && !errors.Is(err, os.ErrNotExist) {
		l.log.Warn("read the access log", "path", l.path, "err", err)
	}
	l.responses.Collect(ch)
	l.duration.Collect(ch)
	l.malformed.Collect(ch)
}

// read counts the lines appended since the last read.
func (l *accessLog) read() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < l.offset {
		l.offset, l.partial = 0, nil
	}
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return fmt.Errorf("seek %s: %w", l.path, err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		l.offset += int64(len(line))
		if err == nil {
			if len(l.partial) > 0 {
				line = append(l.partial, line...)
				l.partial = nil
			}
			l.count(line)
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: keep it whole for the
			// status at its start and the time at its end.
			l.partial = append(l.partial, line...)
			continue
		}
		if len(line) > 0 {
			l.partial = append(l.partial, line...)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("read %s: %w", l.path, err)
	}
}

func (l *accessLog) count(line []byte) {
	code, secs, ok := parseTimedLine(line)
	if !ok {
		l.bad++
		return
	}
	l.responses.WithLabelValues(code).Inc()
	l.duration.Observe(secs)
}

// parseTimedLine reads the status class and the request's time from a
// line in the combined format with the time appended:
//
//	ADDR - USER [TIME] "REQUEST" STATUS BYTES "REFERER" "AGENT" SECONDS
//
// nginx writes a '"' inside a variable as \x22, so the request ends at the
// first '"' after it starts.
func parseTimedLine(line []byte) (code string, secs float64, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	start := bytes.Index(line, []byte(`] "`))
	if start < 0 {
		return "", 0, false
	}
	rest := line[start+3:]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", 0, false
	}
	rest = bytes.TrimLeft(rest[end+1:], " ")
	status, _, _ := bytes.Cut(rest, []byte(" "))
	if len(status) != 3 || status[0] < '1' || status[0] > '5' || status[1] < '0' || status[1] > '9' || status[2] < '0' || status[2] > '9' {
		return "", 0, false
	}
	sp := bytes.LastIndexByte(line, ' ')
	if sp < 0 {
		return "", 0, false
	}
	secs, err := strconv.ParseFloat(string(line[sp+1:]), 64)
	if err != nil || secs < 0 {
		return "", 0, false
	}
	return string(status[0]) + "xx", secs, true
}
