package local

import (
	"os"
	"testing"
	"time"

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

// TestLastVerify: the report verify keeps reads back with its time; a
// stack that never ran verify has none.
func TestLastVerify(t *testing.T) {
	d := &Driver{Root: t.TempDir()}
	if err := os.MkdirAll(d.paths("shop").stack, 0o700); err != nil {
		t.Fatal(err)
	}
	rec, err := d.LastVerify("shop")
	if err != nil || rec != nil {
		t.Fatalf("before any run: %v, %v; want none", rec, err)
	}
	r := &verify.Report{Stack: "shop", Counts: verify.Counts{Cells: 7, Failures: 2}}
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
	if err := os.WriteFile(d.paths("shop").lastVerify(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LastVerify("shop"); err == nil {
		t.Error("a torn report read without error")
	}
}
