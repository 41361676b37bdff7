package local

import (
	"testing"
	"time"
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
