package local

import (
	"strings"
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
