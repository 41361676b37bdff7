package local

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/verify"
)

func TestParseMatrix(t *testing.T) {
	body := []byte(`{"status":"success","data":{"resultType":"matrix","result":[
		{"metric":{"node":"web"},"values":[[1700000000,"0.5"],[1700000005.5,"0.25"]]},
		{"metric":{"node":"db"},"values":[[1700000000,"2"]]}]}}`)
	got, err := parseMatrix(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Node != "db" || got[1].Node != "web" {
		t.Fatalf("series %+v, want db then web", got)
	}
	web := got[1].Points
	if len(web) != 2 || web[1].Value != 0.25 || !web[1].At.Equal(time.UnixMilli(1700000005500)) {
		t.Errorf("web points %+v", web)
	}
	for _, bad := range []string{
		`{"status":"success","data":{"resultType":"vector","result":[]}}`,
		`{"status":"error"}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}}`,
	} {
		if _, err := parseMatrix([]byte(bad)); err == nil {
			t.Errorf("parseMatrix(%s) took it", bad)
		}
	}
}

// TestLastVerify: the report verify keeps reads back with its time, with
// the cells that failed and the counts of all; a stack that never ran
// verify has none.
func TestLastVerify(t *testing.T) {
	d := &Driver{Root: t.TempDir()}
	if err := os.MkdirAll(d.paths("shop").stack, 0o700); err != nil {
		t.Fatal(err)
	}
	rec, err := d.LastVerify("shop")
	if err != nil || rec != nil {
		t.Fatalf("before any run: %v, %v; want none", rec, err)
	}
	r := &verify.Report{Stack: "shop", Counts: verify.Counts{Cells: 7, Failures: 2}, Cells: []verify.Cell{
		{From: "edge", To: "app-1", Port: 80, Proto: "tcp", Allow: true, OK: true},
		{From: "host", To: "db", Port: 3306, Proto: "tcp", OK: false, Why: "denied, but 10.77.0.5:3306 is open"},
		{From: "app-1", To: "db", Port: 3306, Proto: "tcp", Allow: true, OK: true},
	}}
	before := time.Now()
	if err := d.keepVerify("shop", r); err != nil {
		t.Fatal(err)
	}
	rec, err = d.LastVerify("shop")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Report.Stack != "shop" || rec.Report.Counts != r.Counts || rec.At.Before(before.Add(-time.Second)) {
		t.Errorf("read back %+v at %v", rec.Report, rec.At)
	}
	if len(rec.Report.Cells) != 1 || rec.Report.Cells[0].String() != "host -> db:3306" || rec.Report.Cells[0].Why != r.Cells[1].Why {
		t.Errorf("kept cells %+v, want only the failed host -> db:3306", rec.Report.Cells)
	}
	if len(r.Cells) != 3 {
		t.Errorf("keeping the report changed the run's own: %d cells, want 3", len(r.Cells))
	}
	if err := os.WriteFile(d.paths("shop").lastVerify(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LastVerify("shop"); err == nil {
		t.Error("a torn report read without error")
	}
}

// TestMonitorRange: the range query goes to query_range with the query,
// its start, end and step, through a socket bound to the given device
// (here the loopback, where an httptest server stands in for Prometheus).
func TestMonitorRange(t *testing.T) {
	hosttest.RequireRoot(t) // SO_BINDTODEVICE
	var got url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query_range" {
			http.NotFound(w, r)
			return
		}
		got = r.URL.Query()
		io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"node":"db"},"values":[[1700000000,"1"],[1700000015,"2"]]}]}}`)
	}))
	defer srv.Close()
	target := netip.MustParseAddrPort(srv.Listener.Addr().String())
	end := time.Unix(1700000900, 0)
	ss, err := monitorRange(t.Context(), "lo", target, `up{job="node"}`, end.Add(-15*time.Minute), end, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Get("query") != `up{job="node"}` || got.Get("start") != "1700000000" || got.Get("end") != "1700000900" || got.Get("step") != "15" {
		t.Errorf("the monitor was asked %v", got)
	}
	if len(ss) != 1 || ss[0].Node != "db" || len(ss[0].Points) != 2 || ss[0].Points[1].Value != 2 {
		t.Errorf("series %+v", ss)
	}
}
