package local

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestParseAlerts reads Prometheus's answer to GET /api/v1/alerts as 2.42
// writes it, and keeps only what fires, in order.
func TestParseAlerts(t *testing.T) {
	body := `{"status":"success","data":{"alerts":[
{"labels":{"alertname":"ServiceDown","node":"app-2","service":"apache2","severity":"critical","job":"node"},"annotations":{"summary":"apache2 on app-2 is not running"},"state":"firing","activeAt":"2026-11-30T15:00:00.5Z","value":"0e+00"},
{"labels":{"alertname":"DiskFull","node":"db","severity":"warning"},"annotations":{"summary":"db's disk is 85% full"},"state":"pending","activeAt":"2026-11-30T15:01:00Z","value":"8.5e-01"},
{"labels":{"alertname":"NodeDown","node":"cache","severity":"critical"},"annotations":{"summary":"cache's agent does not answer the monitor"},"state":"firing","activeAt":"2026-11-30T14:59:00Z","value":"0e+00"}]}}`
	got, err := parseAlerts([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range got {
		names = append(names, a.Name+"/"+a.Node+"/"+a.Service+"/"+a.Severity)
	}
	if want := "NodeDown/cache//critical ServiceDown/app-2/apache2/critical"; strings.Join(names, " ") != want {
		t.Errorf("alerts = %q; want %q (the pending DiskFull left out)", names, want)
	}
	if want := time.Date(2026, 11, 30, 14, 59, 0, 0, time.UTC); !got[0].Since.Equal(want) || got[0].Summary != "cache's agent does not answer the monitor" {
		t.Errorf("first alert = %+v", got[0])
	}
	for _, bad := range []string{`{"status":"error","error":"x"}`, `not json`} {
		if _, err := parseAlerts([]byte(bad)); err == nil {
			t.Errorf("parseAlerts(%q) = nil error", bad)
		}
	}
}

// TestParseVector reads an instant query's answer by node, and refuses
// what is not a vector of numbers.
func TestParseVector(t *testing.T) {
	got, err := parseVector([]byte(`{"status":"success","data":{"resultType":"vector","result":[
{"metric":{"node":"edge","job":"node"},"value":[1796050266.171,"0.25"]},
{"metric":{"node":"db"},"value":[1796050266.171,"1.073741824e+09"]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got["edge"] != 0.25 || got["db"] != 1<<30 || len(got) != 2 {
		t.Errorf("vector = %v", got)
	}
	for _, bad := range []string{
		`{"status":"success","data":{"resultType":"matrix","result":[]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"node":"x"},"value":[1,"NaNx"]}]}}`,
		`{"status":"error"}`,
	} {
		if _, err := parseVector([]byte(bad)); err == nil {
			t.Errorf("parseVector(%s) = nil error", bad)
		}
	}
}

// TestMonitorGetNoRedirect: the monitor is a node, as hostile as any. A
// redirect from it must not make the host request another address on the
// bridge it is bound to (its own gateway address, say): the host takes
// the redirect for the answer, an error.
func TestMonitorGetNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		io.WriteString(w, `{"status":"success","data":{"alerts":[]}}`)
	}))
	defer other.Close()
	monitor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/api/v1/alerts", http.StatusFound)
	}))
	defer monitor.Close()
	target := netip.MustParseAddrPort(monitor.Listener.Addr().String())
	// Bound to the loopback, as the host binds it to the stack's bridge.
	body, err := monitorGet(context.Background(), "lo", target, "/api/v1/alerts")
	if err == nil || !strings.Contains(err.Error(), "302") {
		t.Errorf("monitorGet: %q, %v; want the redirect, 302, as its error", body, err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect's target was requested %d times; want never", n)
	}
}
