package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestAccessLog: the agent counts only lines written after it started,
// by status class, times them, waits for a line's end, skips what does
// not parse, and starts over when the log is cut.
func TestAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	old := `10.0.0.1 - - [30/Nov/2026:17:00:00 +0000] "GET /old HTTP/1.1" 500 5 "-" "curl" 0.001` + "\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newAccessLog("nginx", path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	reg := prometheus.NewRegistry()
	reg.MustRegister(l)

	appendLog := func(s string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	appendLog(`10.0.0.1 - - [30/Nov/2026:17:00:01 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/7.88" 0.004` + "\n" +
		`10.0.0.1 - - [30/Nov/2026:17:00:01 +0000] "GET /x\x22 y HTTP/1.1" 404 0 "-" "a \x22quoted\x22 agent" 0.020` + "\n" +
		`10.0.0.1 - - [30/Nov/2026:17:00:02 +0000] "POST /form HTTP/1.1" 502 150 "http://r/" "curl" 3.500` + "\n" +
		"not a log line\n" +
		`10.0.0.1 - - [30/Nov/2026:17:00:03 +0000] "GET /half HTTP/1.1" 200 1 "-" "c"`) // no time, no newline yet
	check := func(when string, want map[string]float64, count uint64, sum float64, bad float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		var h *dto.Histogram
		var malformed float64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "bulkhead_http_responses_total":
					for _, lp := range m.GetLabel() {
						if lp.GetName() == "code" {
							got[lp.GetValue()] = m.GetCounter().GetValue()
						}
					}
				case "bulkhead_http_request_duration_seconds":
					h = m.GetHistogram()
				case "bulkhead_http_log_malformed_total":
					malformed = m.GetCounter().GetValue()
				}
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: responses %v; want %v", when, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: responses %v; want %v", when, got, want)
				break
			}
		}
		if h.GetSampleCount() != count || h.GetSampleSum() < sum-1e-9 || h.GetSampleSum() > sum+1e-9 {
			t.Errorf("%s: histogram count %d sum %g; want %d and %g", when, h.GetSampleCount(), h.GetSampleSum(), count, sum)
		}
		if malformed != bad {
			t.Errorf("%s: malformed %g; want %g", when, malformed, bad)
		}
	}
	check("first scrape", map[string]float64{"2xx": 1, "4xx": 1, "5xx": 1}, 3, 3.524, 1)

	appendLog(" 0.100\n")
	check("the line ended", map[string]float64{"2xx": 2, "4xx": 1, "5xx": 1}, 4, 3.624, 1)

	// Cut: the log starts again, shorter than what was read.
	if err := os.WriteFile(path, []byte(`1.2.3.4 - - [x] "GET / HTTP/1.1" 503 0 "-" "-" 0.000`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("after the cut", map[string]float64{"2xx": 2, "4xx": 1, "5xx": 2}, 5, 3.624, 1)
}
