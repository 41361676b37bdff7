package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxAlertsReply bounds what is read of the monitor's answer: the monitor
// is a node, and a node is hostile.
const maxAlertsReply = 1 << 20

// monitorAlerts asks Prometheus at target for its alerts and returns those
// that fire, sorted by name and node.
func monitorAlerts(ctx context.Context, bridge string, target netip.AddrPort) ([]Alert, error) {
	body, err := monitorGet(ctx, bridge, target, "/api/v1/alerts")
	if err != nil {
		return nil, fmt.Errorf("ask the monitor for alerts: %w", err)
	}
	return parseAlerts(body)
}

// monitorGet reads path from Prometheus at target. The socket is bound to
// the stack's bridge, so that the request goes nowhere if the bridge is
// gone: a stack address must never leave the host by its default route.
func monitorGet(ctx context.Context, bridge string, target netip.AddrPort, path string) ([]byte, error) {
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, bridge)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to %s: %w", bridge, serr)
		}
		return nil
	}}
	tr := &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, MaxResponseHeaderBytes: 64 << 10}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target.String()+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: noRedirect}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAlertsReply+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxAlertsReply {
		return nil, fmt.Errorf("the reply is larger than %d bytes", maxAlertsReply)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	return body, nil
}

// usageQueries are the instant queries Usage asks, each summed by node.
var usageQueries = []struct {
	name, query string
}{
	{"up", `up{job="node"}`},
	{"cpu", `rate(bulkhead_node_cpu_seconds_total{job="node"}[30s])`},
	{"memory", `bulkhead_node_memory_bytes{job="node"}`},
	{"memory_limit", `bulkhead_node_memory_limit_bytes{job="node"}`},
	{"pids", `bulkhead_node_pids{job="node"}`},
	{"restarts", `sum by (node) (bulkhead_service_restarts_total{job="node"})`},
	// From the agent's reading of an access log (the edge's).
	{"requests", `sum by (node) (rate(bulkhead_http_responses_total{job="node"}[30s]))`},
	{"errors", `sum by (node) (rate(bulkhead_http_responses_total{job="node",code="5xx"}[30s]))`},
}

// monitorUsage asks Prometheus for each node's usage, in the plan's order
// of nodes.
func monitorUsage(ctx context.Context, bridge string, target netip.AddrPort, nodes []string) ([]NodeUsage, error) {
	vals := map[string]map[string]float64{}
	for _, q := range usageQueries {
		body, err := monitorGet(ctx, bridge, target, "/api/v1/query?query="+url.QueryEscape(q.query))
		if err != nil {
			return nil, fmt.Errorf("ask the monitor for %s: %w", q.name, err)
		}
		v, err := parseVector(body)
		if err != nil {
			return nil, fmt.Errorf("ask the monitor for %s: %w", q.name, err)
		}
		vals[q.name] = v
	}
	var out []NodeUsage
	for _, n := range nodes {
		if _, scraped := vals["up"][n]; !scraped {
			continue // the monitor itself, which scrapes no agent of its own
		}
		out = append(out, NodeUsage{
			Node: n, Up: vals["up"][n] == 1, CPU: vals["cpu"][n],
			Memory: int64(vals["memory"][n]), MemoryLimit: int64(vals["memory_limit"][n]),
			Pids: int64(vals["pids"][n]), Restarts: int64(vals["restarts"][n]),
		})
		if r, ok := vals["requests"][n]; ok {
			u := &out[len(out)-1]
			// No 5xx series yet is no error yet.
			e := vals["errors"][n]
			u.Requests, u.Errors = &r, &e
		}
	}
	return out, nil
}

// parseVector reads an instant query's vector, by each series' node label.
func parseVector(body []byte) (map[string]float64, error) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string  `json:"metric"`
				Value  [2]json.RawMessage `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("status %q, result %q; want a vector", r.Status, r.Data.ResultType)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		var text string
		if err := json.Unmarshal(s.Value[1], &text); err != nil {
			return nil, fmt.Errorf("value %s: %w", s.Value[1], err)
		}
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, err
		}
		out[s.Metric["node"]] = v
	}
	return out, nil
}

// parseAlerts reads Prometheus's GET /api/v1/alerts and keeps the alerts
// that fire (not those pending their "for").
func parseAlerts(body []byte) ([]Alert, error) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Alerts []struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
				State       string            `json:"state"`
				ActiveAt    time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("read the monitor's alerts: %w", err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("read the monitor's alerts: status %q", r.Status)
	}
	out := []Alert{}
	for _, a := range r.Data.Alerts {
		if a.State != "firing" {
			continue
		}
		out = append(out, Alert{
			Name: a.Labels["alertname"], Node: a.Labels["node"], Service: a.Labels["service"],
			Severity: a.Labels["severity"], Summary: a.Annotations["summary"], Since: a.ActiveAt,
		})
	}
	slices.SortFunc(out, func(a, b Alert) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.Service, b.Service)
	})
	return out, nil
}

// monitorRange asks Prometheus at target for query over [start, end] at
// step, and returns one series per node label.
func monitorRange(ctx context.Context, bridge string, target netip.AddrPort, query string, start, end time.Time, step time.Duration) ([]Series, error) {
	q := url.Values{}
	q.Set("query", query)
	q.Set("start", strconv.FormatInt(start.Unix(), 10))
	q.Set("end", strconv.FormatInt(end.Unix(), 10))
	q.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
	body, err := monitorGet(ctx, bridge, target, "/api/v1/query_range?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("ask the monitor for %s: %w", query, err)
	}
	return parseMatrix(body)
}

// parseMatrix reads a range query's matrix, a series per node label,
// sorted by node.
func parseMatrix(body []byte) ([]Series, error) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string    `json:"metric"`
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.Status != "success" || r.Data.ResultType != "matrix" {
		return nil, fmt.Errorf("status %q, result %q; want a matrix", r.Status, r.Data.ResultType)
	}
	out := []Series{}
	for _, s := range r.Data.Result {
		ser := Series{Node: s.Metric["node"]}
		for _, v := range s.Values {
			var at float64
			var text string
			if err := json.Unmarshal(v[0], &at); err != nil {
				return nil, fmt.Errorf("time %s: %w", v[0], err)
			}
			if err := json.Unmarshal(v[1], &text); err != nil {
				return nil, fmt.Errorf("value %s: %w", v[1], err)
			}
			f, err := strconv.ParseFloat(text, 64)
			if err != nil {
				return nil, err
			}
			ser.Points = append(ser.Points, Point{At: time.UnixMilli(int64(at * 1000)).UTC(), Value: f})
		}
		out = append(out, ser)
	}
	slices.SortFunc(out, func(a, b Series) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}
