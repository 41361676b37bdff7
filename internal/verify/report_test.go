package verify

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/matrix"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
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

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// poolPlan is the default stack with n app nodes.
func poolPlan(t testing.TB, n int) *plan.Plan {
	t.Helper()
	return build(t, poolStack(n))
}

// poolStack is the default stack file with n app nodes, storage over
// SFTP, and no monitor: these tests' fabrics run no agent to answer its
// scrapes, and their figures are those of DESIGN.md's seven nodes.
func poolStack(n int) *spec.Stack {
	st := spec.Default()
	delete(st.Tiers, spec.RoleMonitor)
	st.ByRole(spec.RoleApp).Replicas = n
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	return st
}

// build validates st and plans it.
func build(t testing.TB, st *spec.Stack) *plan.Plan {
	t.Helper()
	spec.ApplyDefaults(st) // the storage node's defaults follow the pool
	if err := spec.Validate(st, spec.Env{}); err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// observed is the report of a run against p, laid out as Run lays it out,
// in which the vantages hold the sockets socks names, and every probe saw
// what the plan expects, except where see says otherwise. It opens no
// namespace.
func observed(p *plan.Plan, socks map[string][]Socket, see func(c *Cell, t *Target)) *Report {
	s := &session{p: p, vs: vantages(p), gateways: map[string]netip.Addr{}, owners: map[uint64][]Owner{}}
	for _, n := range p.Networks {
		s.gateways[n.Name] = n.Gateway
	}
	s.socks = make([][]Socket, len(s.vs))
	for i, v := range s.vs {
		s.socks[i] = socks[v.name]
		for _, so := range socks[v.name] {
			s.owners[so.Inode] = []Owner{{PID: int(so.Inode), Name: "php8.2"}}
		}
	}
	r := &Report{Stack: p.Stack, Plan: p, Duration: 370 * time.Millisecond}
	r.Ports, r.UDPPorts = s.ports()
	r.Listeners = s.listenerFindings()
	cells, probes, _ := s.cells(r.Ports, r.UDPPorts)
	for i := range cells {
		c := &cells[i]
		for k := range c.Targets {
			t := &c.Targets[k]
			t.Status = Filtered
			if t.Primary {
				t.Status = Open
			}
			if see != nil {
				see(c, t)
			}
		}
		c.judge()
	}
	r.Cells, r.Probes = cells, len(probes)
	s.name(r)
	r.Checks = []Check{{Name: "subnets stay on this host", OK: true, Detail: "the host routes them only onto the stack's bridges"}}
	r.tally()
	return r
}

func reportText(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v; run go test -update to write it", err)
	}
	if got != string(want) {
		t.Errorf("%s differs; got:\n%s\nwant:\n%s", file, got, want)
	}
}

// TestReportText prints a clean run of a 2-app stack and a broken run of a
// 12-app one, in which the edge also answers on 22, app-7 on 8081, db does
// not answer app-3, static reaches cache (refused: nothing dropped it), the
// host reaches cache's udp/11211, and the outside reaches the host.
func TestReportText(t *testing.T) {
	r := observed(poolPlan(t, 2), nil, nil)
	if c := r.Counts; c.Failures != 0 || c.AllowedOpen != 14 || c.AllowedOpen+c.DeniedBlocked != c.Cells {
		t.Fatalf("counts of a clean run: %+v", c)
	}
	out := reportText(t, r)
	golden(t, "report-2.txt", out)
	for _, want := range []string{"REACHABILITY", "\nhost     ✔     ✔    ·", "\noutside  ✔     ✔    ·", "PASS: stack bulkhead is isolated as planned"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}

	rogue := map[string][]Socket{"app-7": {{Proto: "tcp", Local: netip.MustParseAddrPort("0.0.0.0:8081"), State: tcpListen, Inode: 2}}}
	r = observed(poolPlan(t, 12), rogue, func(c *Cell, t *Target) {
		switch {
		case c.udp():
			if c.From == Host && c.To == "cache" && c.Port == 11211 {
				t.Status = Open
			}
		case c.To == "edge" && c.Port == 22,
			c.To == "app-7" && c.Port == 8081 && c.From == "edge",
			c.To == Host && c.Port == 22 && c.From == Outside:
			t.Status = Open
		case c.From == "app-3" && c.To == "db" && c.Port == 3306,
			c.From == "static" && c.To == "cache" && c.Port == 11211:
			t.Status = Refused
		}
	})
	out = reportText(t, r)
	golden(t, "report-12.txt", out)
	for _, want := range []string{
		"app-1..app-2", "app-4..app-6", "app-8..app-12", // the runs of the app tier that read alike fold
		"unexpected listener: app-7 tcp/8081 on 0.0.0.0 (php8.2)",
		"app-3 -> db:3306: allowed, but 10.77.0.5:3306 is refused",
		"outside -> host:22: denied, but 10.77.1.1:22 is open",
		"static -> cache:11211: denied, but 10.77.0.4:11211 is refused",
		"host -> cache:11211/udp: denied, but 10.77.0.4:11211/udp is open",
		"; udp 53 111 123 161 2049 11211\n",
		"FAIL: stack bulkhead has ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	// Every failed cell shows in the matrix: a column for its destination
	// and port, a mark in its source's row.
	g := r.grid()
	for _, c := range r.Cells {
		if !c.OK && !g.Shows(c.To, c.planPort()) {
			t.Errorf("failed cell %s not in the matrix", &c)
		}
	}
}

func TestCellMark(t *testing.T) {
	a := netip.MustParseAddr
	for _, tt := range []struct {
		allow   bool
		targets []Target
		want    string
	}{
		{true, []Target{{Addr: a("10.0.0.5"), Status: Open, Primary: true}, {Addr: a("10.0.1.5"), Status: Filtered}}, matrix.Allowed},
		{false, []Target{{Addr: a("10.0.0.5"), Status: Filtered}, {Addr: a("10.0.1.5"), Status: Unreachable}}, matrix.Denied},
		{true, []Target{{Addr: a("10.0.0.5"), Status: Filtered, Primary: true}}, matrix.Closed},
		{true, []Target{{Addr: a("10.0.0.5"), Status: Refused, Primary: true}}, matrix.Closed},
		{false, []Target{{Addr: a("10.0.0.5"), Status: Refused}}, matrix.Breach},
		{false, []Target{{Addr: a("10.0.0.5"), Status: Filtered}, {Addr: a("10.0.1.5"), Status: Open}}, matrix.Breach},
		// An allowed cell that is open where the flow goes and on an
		// address it does not go to is a breach.
		{true, []Target{{Addr: a("10.0.0.5"), Status: Open, Primary: true}, {Addr: a("10.0.1.5"), Status: Open}}, matrix.Breach},
		{false, []Target{{Addr: a("10.0.0.5"), Status: Unknown}}, matrix.Unknown},
	} {
		c := Cell{From: "a", To: "b", Port: 80, Allow: tt.allow, Targets: tt.targets}
		c.judge()
		if got := c.mark(); got != tt.want {
			t.Errorf("allow %v, %+v: mark %q, want %q", tt.allow, tt.targets, got, tt.want)
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

// BenchmarkReportText lays out and prints the report of a 100-app stack,
// clean and with one app node reaching another.
func BenchmarkReportText(b *testing.B) {
	p := poolPlan(b, 100)
	for name, see := range map[string]func(*Cell, *Target){
		"clean": nil,
		"broken": func(c *Cell, t *Target) {
			if c.From == "app-50" && c.To == "app-51" && c.Port == 80 {
				t.Status = Open
			}
		},
	} {
		r := observed(p, nil, see)
		b.Run(name, func(b *testing.B) {
			for range b.N {
				if err := r.WriteText(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// udpPlan is the default stack with 2 app nodes and a stack file's UDP
// flow from app to db on 5353.
func udpPlan(t testing.TB) *plan.Plan {
	t.Helper()
	st := poolStack(2)
	st.Flows = append(st.Flows, spec.Flow{From: "app", To: "db", Port: 5353, Proto: "udp"})
	return build(t, st)
}

// TestUDPFlow: a stack file's UDP flow is probed, must answer, and shows
// in the matrix as its own column; the common UDP ports are probed on
// every node besides.
func TestUDPFlow(t *testing.T) {
	p := udpPlan(t)
	r := observed(p, nil, nil)
	if want := []int{53, 111, 123, 161, 2049, 5353, 11211}; !slices.Equal(r.UDPPorts, want) {
		t.Errorf("udp ports %v, want %v", r.UDPPorts, want)
	}
	i := slices.IndexFunc(r.Cells, func(c Cell) bool { return c.From == "app-1" && c.To == "db" && c.Port == 5353 && c.Proto == "udp" })
	if i < 0 || !r.Cells[i].Allow || !r.Cells[i].Targets[0].Primary {
		t.Fatalf("app-1 -> db:5353/udp is not an allowed cell with a primary target")
	}
	if r.Counts.Failures != 0 {
		t.Errorf("a clean run fails: %q", r.Failures())
	}
	// db's columns: 3306, then 5353/udp, open to the app nodes alone.
	out := reportText(t, r)
	if !strings.Contains(out, " 3306  5353/udp ") || !regexp.MustCompile(`(?m)^app-1 +· +· +· +✔ +✔ +✔ +✔ +·$`).MatchString(out) {
		t.Errorf("no 5353/udp column open to app-1:\n%s", out)
	}

	// An allowed UDP flow that does not answer fails, named with its
	// protocol.
	r = observed(p, nil, func(c *Cell, t *Target) {
		if c.From == "app-2" && c.Proto == "udp" && c.Port == 5353 {
			t.Status = Filtered
		}
	})
	if got := r.Failures(); !slices.Equal(got, []string{"app-2 -> db:5353/udp: allowed, but 10.77.0.5:5353/udp is filtered"}) {
		t.Errorf("failures %q", got)
	}
	if out := reportText(t, r); !regexp.MustCompile(`(?m)^app-2 +· +· +· +✔ +✔ +✘ +✔ +·$`).MatchString(out) {
		t.Errorf("the failed UDP cell is not marked in app-2's row:\n%s", out)
	}
}

// TestStandInAddrs: every probed UDP address gets an echo, the allowed
// flow's too (no daemon of the catalog serves UDP), unless a socket there
// already listens; over TCP an allowed flow's address gets none, its
// daemon must answer.
func TestStandInAddrs(t *testing.T) {
	p := udpPlan(t)
	db := netip.MustParseAddr("10.77.0.5")
	s := &session{p: p, vs: vantages(p)}
	s.socks = make([][]Socket, len(s.vs))
	di := slices.IndexFunc(s.vs, func(v *vantage) bool { return v.name == "db" })
	tcp, udp := s.ports()
	cells, _, _ := s.cells(tcp, udp)
	has := func(udp bool, port uint16) bool {
		dests, addrs := s.standInAddrs(cells, udp)
		k := slices.Index(dests, di)
		return k >= 0 && slices.Contains(addrs[k], netip.AddrPortFrom(db, port))
	}
	for _, c := range []struct {
		udp  bool
		port uint16
		want bool
	}{
		{true, 5353, true},   // allowed UDP flow: the echo proves the path
		{true, 53, true},     // denied
		{false, 3306, false}, // allowed TCP flow: mariadbd must answer
		{false, 22, true},    // denied
	} {
		if got := has(c.udp, c.port); got != c.want {
			t.Errorf("udp=%v db:%d: stand-in %v, want %v", c.udp, c.port, got, c.want)
		}
	}
	s.socks[di] = []Socket{{Proto: "udp", Local: netip.MustParseAddrPort("0.0.0.0:5353"), State: tcpClose}}
	if has(true, 5353) {
		t.Errorf("a stand-in on udp/5353 where a socket is bound already")
	}
	if !has(false, 22) || !has(true, 53) {
		t.Errorf("a UDP socket on 5353 took other stand-ins away")
	}
}
