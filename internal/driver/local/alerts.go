package local

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxAlertsReply bounds what is read of the monitor's answer: the monitor
// is a node, and a node is hostile.
const maxAlertsReply = 1 << 20

// monitorAlerts asks Prometheus at target for its alerts and returns those
// that fire, sorted by name and node. The socket is bound to the stack's
// bridge, so that the request goes nowhere if the bridge is gone: a stack
// address must never leave the host by its default route.
func monitorAlerts(ctx context.Context, bridge string, target netip.AddrPort) ([]Alert, error) {
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target.String()+"/api/v1/alerts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the monitor for alerts: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAlertsReply+1))
	if err != nil {
		return nil, fmt.Errorf("ask the monitor for alerts: %w", err)
	}
	if len(body) > maxAlertsReply {
		return nil, fmt.Errorf("ask the monitor for alerts: the reply is larger than %d bytes", maxAlertsReply)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask the monitor for alerts: %s", resp.Status)
	}
	return parseAlerts(body)
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
