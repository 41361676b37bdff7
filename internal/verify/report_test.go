package verify

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseHexAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:0016":                         "127.0.0.1:22",
		"0500000A:0CEA":                         "10.0.0.5:3306",
		"00000000:0050":                         "0.0.0.0:80",
		"00000000000000000000000000000000:01BB": "[::]:443",
		"0000000000000000FFFF00000500000A:0050": "10.0.0.5:80", // v4-mapped
	} {
		got, err := parseHexAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("parseHexAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "zz00007F:0016", "0100007F:zz", "01007F:0016"} {
		if _, err := parseHexAddr(bad); err == nil {
			t.Errorf("parseHexAddr(%q) took it", bad)
		}
	}
}

func TestFold(t *testing.T) {
	if got := foldNames([]string{"app-1", "app-2", "app-3"}); got != "app-1..app-3 (3)" {
		t.Errorf("fold = %q", got)
	}
	// The tier comes from the plan, not from the name: web-2 and web-3
	// are two single-node tiers.
	r := &Report{Tiers: map[string]string{"app-1": "app", "app-2": "app", "web-2": "web-2", "web-3": "web-3", "edge": "edge", "static": "static"}}
	for _, c := range []struct {
		a, b string
		want bool
	}{{"app-1", "app-2", true}, {"app-1", "web-2", false}, {"edge", "static", false}, {"web-2", "web-3", false}, {"host", "outside", false}} {
		if got := r.sameTier(c.a, c.b); got != c.want {
			t.Errorf("sameTier(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

// sample is a small report: app-1 and app-2 read the same towards db, one
// denied cell failed, and one listener is unexpected.
func sample() *Report {
	a := netip.MustParseAddr
	cell := func(from, to string, port int, allow bool, st Status) Cell {
		c := Cell{From: from, To: to, Port: port, Allow: allow, Targets: []Target{{Addr: a("10.0.0.5"), Status: st, Primary: allow}}}
		c.judge()
		return c
	}
	r := &Report{
		Stack: "s", Sources: []string{"app-1", "app-2", "db"}, Tiers: map[string]string{"app-1": "app", "app-2": "app", "db": "db"},
		Ports: []int{22, 3306},
		Cells: []Cell{
			cell("app-2", "app-1", 22, false, Filtered), cell("app-2", "app-1", 3306, false, Filtered),
			cell("db", "app-1", 22, false, Refused), cell("db", "app-1", 3306, false, Filtered),
			cell("app-1", "db", 22, false, Filtered), cell("app-1", "db", 3306, true, Open),
			cell("app-2", "db", 22, false, Filtered), cell("app-2", "db", 3306, true, Open),
		},
		Listeners: []Listener{
			{Node: "db", Proto: "tcp", Addr: netip.MustParseAddrPort("10.0.0.5:3306"), Expected: true, Owners: []Owner{{1, "mariadbd"}}},
			{Node: "app-1", Proto: "tcp", Addr: netip.MustParseAddrPort("0.0.0.0:8081"), Owners: []Owner{{2, "php8.2"}}},
		},
		Checks: []Check{{Name: "routes", OK: true, Detail: "fine"}},
		Probes: 8,
	}
	r.tally()
	return r
}

func TestReportText(t *testing.T) {
	r := sample()
	if c := r.Counts; c.Cells != 8 || c.AllowedOpen != 2 || c.DeniedBlocked != 5 || c.FailedCells != 1 || c.Unexpected != 1 || c.Failures != 2 {
		t.Fatalf("counts %+v", c)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// Every row of a block is as wide as its heading, folded rows too.
	var heading int
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "  from \\ port"):
			heading = utf8.RuneCountInString(l)
		case heading > 0 && strings.HasPrefix(l, "  ") && (strings.Contains(l, markOpen) || strings.Contains(l, markBlocked)):
			if n := utf8.RuneCountInString(l); n != heading {
				t.Errorf("row %q is %d characters wide, its heading %d", l, n, heading)
			}
		case l == "":
			heading = 0
		}
	}
	for _, want := range []string{
		"app-1..app-2 (2)", // folded rows towards db
		"✘!",               // the refused cell
		"unexpected listener: app-1 tcp/8081 on 0.0.0.0 (php8.2)",
		"db -> app-1:22: denied, but 10.0.0.5:22 is refused",
		"cells probed: 8, allowed and open: 2, denied and blocked: 5, failures: 2",
		"FAIL: stack s has 2 failures",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

func TestReportJSONAndJUnit(t *testing.T) {
	r := sample()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Pass     bool     `json:"pass"`
		Failures []string `json:"failures"`
		Cells    []struct {
			Targets []struct {
				Status string `json:"status"`
			} `json:"targets"`
		} `json:"cells"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Pass || len(got.Failures) != 2 || got.Cells[2].Targets[0].Status != "refused" {
		t.Errorf("json: %+v", got)
	}
	b.Reset()
	if err := r.WriteJUnit(&b); err != nil {
		t.Fatal(err)
	}
	var suites junitSuites
	if err := xml.Unmarshal(b.Bytes(), &suites); err != nil {
		t.Fatal(err)
	}
	if s := suites.Suites[0]; s.Tests != 8 || s.Failures != 1 {
		t.Errorf("matrix suite: %d tests, %d failures", s.Tests, s.Failures)
	}
	if s := suites.Suites[1]; s.Tests != 2 || s.Failures != 1 {
		t.Errorf("listener suite: %d tests, %d failures", s.Tests, s.Failures)
	}
}
