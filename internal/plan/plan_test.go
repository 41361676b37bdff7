package plan_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

func build(t testing.TB, src string) *plan.Plan {
	t.Helper()
	st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.ByRole(spec.RoleStorage); s != nil && s.Protocol == spec.ProtocolAuto {
		s.Protocol = spec.ProtocolSFTP
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pool(n int) string {
	return fmt.Sprintf("networks:\n  private: 10.80.0.0/23\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: %d\n", n)
}

// unwatched is the default stack without its monitor: the seven nodes of
// DESIGN.md, for tests of the topology that the monitor's flows would
// only add rows to.
const unwatched = "tiers:\n  monitor: off\n"

// TestDefaultStack: the seven nodes of DESIGN.md and the monitor, and
// exactly DESIGN.md's flows besides the monitor's, which all go from the
// monitor to a metrics port.
func TestDefaultStack(t *testing.T) {
	p := build(t, "")
	var got []string
	for _, n := range p.Nodes {
		got = append(got, fmt.Sprintf("%s %s %v", n.Name, n.Software, addrs(n)))
	}
	want := []string{
		"edge nginx [public=10.77.1.2 private=10.77.0.2]",
		"static lighttpd [private=10.77.0.3]",
		"cache memcached [private=10.77.0.4]",
		"db mariadb [private=10.77.0.5]",
		"storage sftp [private=10.77.0.6]",
		"app-1 apache2 [private=10.77.0.7]",
		"app-2 apache2 [private=10.77.0.8]",
		"monitor prometheus [private=10.77.0.9]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var flows []string
	scraped := map[string]bool{}
	for _, f := range p.Flows {
		if f.From == "monitor" {
			// The agent's port, and a role exporter's beside it.
			if n := p.Tier(f.To)[0]; f.Port.Number == int(n.Metrics.Port()) {
				scraped[f.To] = true
			}
			continue
		}
		flows = append(flows, fmt.Sprintf("%s -> %s %s/%d", f.From, f.To, f.Port.Proto, f.Port.Number))
	}
	for _, tier := range []string{"edge", "static", "cache", "db", "storage", "app"} {
		if !scraped[tier] {
			t.Errorf("no flow from the monitor to %s's metrics port", tier)
		}
	}
	wantFlows := []string{
		"outside -> edge tcp/80", "outside -> edge tcp/443",
		"edge -> static tcp/80", "edge -> app tcp/80",
		"static -> storage tcp/22", "app -> storage tcp/22",
		"app -> cache tcp/11211", "app -> db tcp/3306",
	}
	if strings.Join(flows, "\n") != strings.Join(wantFlows, "\n") {
		t.Errorf("flows:\n%s\nwant:\n%s", strings.Join(flows, "\n"), strings.Join(wantFlows, "\n"))
	}
	if p.Outside.Iface.Addr.String() != "10.77.1.3" || p.Network("public").Gateway.String() != "10.77.1.1" {
		t.Errorf("outside %s, public gateway %s", p.Outside.Iface.Addr, p.Network("public").Gateway)
	}
}

// TestLimits: every node, replicas included, carries its tier's limits in
// bytes and as a weight, and so does the JSON a driver saves.
func TestLimits(t *testing.T) {
	p := build(t, "tiers:\n  edge: {}\n  db: {disk: 2G, cpu: 500}\n  app: {replicas: 3, disk: 1G, memory: 256M}\n")
	var got []string
	for _, n := range p.Nodes {
		got = append(got, fmt.Sprintf("%s memory=%d pids=%d disk=%d cpu=%d", n.Name, n.Memory, n.Pids, n.Disk, n.CPUWeight))
	}
	want := []string{
		fmt.Sprintf("edge memory=%d pids=512 disk=%d cpu=200", 256<<20, 256<<20),
		fmt.Sprintf("db memory=%d pids=512 disk=%d cpu=500", 1<<30, 2<<30),
		fmt.Sprintf("app-1 memory=%d pids=512 disk=%d cpu=100", 256<<20, 1<<30),
		fmt.Sprintf("app-2 memory=%d pids=512 disk=%d cpu=100", 256<<20, 1<<30),
		fmt.Sprintf("app-3 memory=%d pids=512 disk=%d cpu=100", 256<<20, 1<<30),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := plan.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if n := back.Node("db"); n.Disk != 2<<30 || n.CPUWeight != 500 {
		t.Errorf("decoded db: disk %d cpu %d, want %d and 500", n.Disk, n.CPUWeight, 2<<30)
	}
}

func addrs(n plan.Node) []string {
	var out []string
	for _, i := range n.Ifaces {
		out = append(out, i.Network+"="+i.Addr.String())
	}
	return out
}

func TestMatrix(t *testing.T) {
	p := build(t, unwatched)
	tcp := func(n int) plan.Port { return plan.Port{Proto: "tcp", Number: n} }
	cases := []struct {
		from, to string
		port     int
		allow    bool
	}{
		{"outside", "edge", 80, true},
		{"outside", "edge", 443, true},
		{"outside", "edge", 22, false},
		{"outside", "app-1", 80, false},
		{"outside", "db", 3306, false},
		{"edge", "app-1", 80, true},
		{"edge", "app-2", 80, true},
		{"edge", "static", 80, true},
		{"edge", "db", 3306, false},
		{"edge", "storage", 22, false},
		{"static", "storage", 22, true},
		{"static", "db", 3306, false},
		{"static", "cache", 11211, false},
		{"app-1", "db", 3306, true},
		{"app-2", "cache", 11211, true},
		{"app-1", "storage", 22, true},
		{"app-1", "app-2", 80, false},
		{"app-1", "edge", 80, false},
		{"db", "app-1", 80, false},
		{"cache", "db", 3306, false},
		{"db", "storage", 22, false},
		{"storage", "db", 3306, false},
	}
	for _, c := range cases {
		if got := p.Matrix.Allowed(c.from, c.to, tcp(c.port)); got != c.allow {
			t.Errorf("%s -> %s:%d allowed=%v, want %v", c.from, c.to, c.port, got, c.allow)
		}
	}
	// 8 sources x 6 destinations (no self cells) x 6 ports: the five
	// the roles serve and the agents' metrics port, which no flow opens.
	cells := p.Matrix.Cells()
	if want := (1*7 + 7*6) * 6; len(cells) != want {
		t.Errorf("%d cells, want %d", len(cells), want)
	}
	allowed := 0
	for _, c := range cells {
		if c.Allow {
			allowed++
		}
	}
	// outside->edge x2, edge->static, edge->app x2, static->storage,
	// app->storage/cache/db x2.
	if allowed != 2+1+2+1+6 {
		t.Errorf("%d allowed cells, want 12", allowed)
	}
}

// TestFirewallUsesSets: the db of a 100-node pool has one rule for the app
// pool, whose set holds all 100 addresses.
func TestFirewallUsesSets(t *testing.T) {
	for _, n := range []int{1, 10, 100} {
		p := build(t, pool(n))
		db := p.Node("db")
		if len(db.Firewall.Input) != 1 || len(db.Firewall.Output) != 0 {
			t.Fatalf("%d apps: db rules in=%d out=%d, want 1 and 0", n, len(db.Firewall.Input), len(db.Firewall.Output))
		}
		r := db.Firewall.Input[0]
		if r.Set != "from_app" || r.Port.Number != 3306 || len(db.Firewall.Sets) != 1 || len(db.Firewall.Sets[0].Addrs) != n {
			t.Fatalf("%d apps: db rule %+v, sets %+v", n, r, db.Firewall.Sets)
		}
		edge := p.Node("edge")
		if len(edge.Firewall.Output) != 2 {
			t.Fatalf("%d apps: edge has %d output rules, want 2 (static, app)", n, len(edge.Firewall.Output))
		}
		app := p.Node("app-1")
		if len(app.Firewall.Input) != 1 || len(app.Firewall.Output) != 3 {
			t.Fatalf("%d apps: app-1 rules in=%d out=%d, want 1 and 3", n, len(app.Firewall.Input), len(app.Firewall.Output))
		}
	}
}

func TestKernelNamesFit(t *testing.T) {
	p := build(t, "name: abcdefghij\n"+pool(250))
	if len(p.Nodes) != 255 {
		t.Fatalf("%d nodes", len(p.Nodes))
	}
	seen := map[string]bool{}
	check := func(name string) {
		if len(name) > 15 {
			t.Errorf("kernel name %q is %d bytes", name, len(name))
		}
		if seen[name] {
			t.Errorf("kernel name %q is used twice", name)
		}
		seen[name] = true
	}
	for _, n := range p.Nodes {
		for _, i := range n.Ifaces {
			check(i.Host)
		}
	}
	for _, nw := range p.Networks {
		check(nw.Bridge)
	}
	check(p.Outside.Iface.Host)
	if last := p.Node("app-250"); last.Addr("private").String() != "10.80.1.0" {
		t.Errorf("app-250 at %s", last.Addr("private"))
	}
}

// TestScalingKeepsAddresses: adding app nodes renumbers nothing else.
func TestScalingKeepsAddresses(t *testing.T) {
	a, b := build(t, pool(2)), build(t, pool(50))
	for _, n := range a.Nodes {
		m := b.Node(n.Name)
		if m == nil || fmt.Sprint(addrs(n)) != fmt.Sprint(addrs(*m)) || n.Ifaces[0].Host != m.Ifaces[0].Host {
			t.Errorf("%s moved: %v -> %v", n.Name, addrs(n), m)
		}
	}
}

func TestDMZ(t *testing.T) {
	p := build(t, "networks:\n  dmz: 10.77.2.0/24\n"+unwatched)
	edge := p.Node("edge")
	if edge.Iface("private") != nil || edge.Iface("dmz") == nil {
		t.Fatalf("edge interfaces %v", addrs(*edge))
	}
	for _, f := range p.Flows {
		want := "private"
		switch {
		case f.From == "outside":
			want = "public"
		case f.From == "edge":
			want = "dmz"
		}
		if f.Network != want {
			t.Errorf("flow %s->%s on %s, want %s", f.From, f.To, f.Network, want)
		}
	}
	db := p.Node("db")
	app1 := p.Node("app-1")
	if got := db.Firewall.Sets[0].Addrs[0]; got != app1.Addr("private") {
		t.Errorf("db allows %s, want app-1's private address %s", got, app1.Addr("private"))
	}
	st, _ := spec.Load("bulkhead.yaml", []byte("networks:\n  dmz: 10.77.2.0/24\nflows:\n  - {from: edge, to: db, port: 3306}\ntiers:\n  edge: {}\n  app: {}\n  db: {}\n"), spec.Env{})
	if _, err := plan.Build(st); err == nil || !strings.Contains(err.Error(), "share no network") {
		t.Errorf("edge->db across the DMZ: %v", err)
	}
}

func TestExplicitFlow(t *testing.T) {
	p := build(t, unwatched+"flows:\n  - {from: app, to: app, port: 9000}\n  - {from: static, to: cache, port: 11211}\n  - {from: app, to: db, port: 3306}\n")
	if len(p.Flows) != 10 {
		t.Errorf("%d flows, want 8 implied + 2 explicit (the third repeats one)", len(p.Flows))
	}
	tcp := func(n int) plan.Port { return plan.Port{Proto: "tcp", Number: n} }
	if !p.Matrix.Allowed("app-1", "app-2", tcp(9000)) || p.Matrix.Allowed("app-1", "app-1", tcp(9000)) {
		t.Error("app-1 -> app-2:9000 should be allowed, and no self cell")
	}
	if !p.Matrix.Allowed("static", "cache", tcp(11211)) {
		t.Error("static -> cache:11211 should be allowed")
	}
}

func TestAutoProtocolRefused(t *testing.T) {
	st, err := spec.Load("bulkhead.yaml", nil, spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Build(st); err == nil || !strings.Contains(err.Error(), "not resolved") {
		t.Errorf("Build with storage auto: %v", err)
	}
}

// TestDeterministic: the same stack yields byte-identical plans.
func TestDeterministic(t *testing.T) {
	a, err := json.Marshal(build(t, pool(20)))
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		b, err := json.Marshal(build(t, pool(20)))
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Fatal("two builds of one stack differ")
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		st, err := spec.Load("bulkhead.yaml", []byte(pool(n)), spec.Env{})
		if err != nil {
			b.Fatal(err)
		}
		st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
		b.Run(fmt.Sprintf("apps=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := plan.Build(st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDecode: a plan saved as JSON and read back answers lookups like the
// original.
func TestDecode(t *testing.T) {
	p := build(t, pool(3))
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	q, err := plan.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if q.Node("app-3") == nil || q.Node("app-3").Addr("private") != p.Node("app-3").Addr("private") || len(q.Tier("app")) != 3 {
		t.Fatal("decoded plan does not find its nodes")
	}
	tcp := plan.Port{Proto: "tcp", Number: 3306}
	if !q.Matrix.Allowed("app-2", "db", tcp) || q.Matrix.Allowed("edge", "db", tcp) {
		t.Fatal("decoded matrix answers differently")
	}
	again, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Fatal("decode and encode do not round-trip")
	}
}

// TestServicePort pins each choice's port, and that a choice the catalog
// does not know falls back to its role's default rather than to no port.
func TestServicePort(t *testing.T) {
	for _, c := range []struct {
		role, software, storage string
		want                    int
	}{
		{spec.RoleEdge, "haproxy", "", 80},
		{spec.RoleStatic, "nginx", "", 80},
		{spec.RoleApp, "apache2", "", 80},
		{spec.RoleCache, "redis", "", 6379},
		{spec.RoleCache, "memcached", "", 11211},
		{spec.RoleCache, "unknown", "", 11211},
		{spec.RoleDB, "postgresql", "", 5432},
		{spec.RoleDB, "mariadb", "", 3306},
		{spec.RoleDB, "", "", 3306},
		{spec.RoleStorage, "", spec.ProtocolNFS, 2049},
		{spec.RoleStorage, "", spec.ProtocolSFTP, 22},
		{spec.RoleStorage, "", spec.ProtocolAuto, 22},
		{spec.RoleMail, "postfix", "", 25},
		{"fax", "hylafax", "", 0},
	} {
		got := plan.ServicePort(c.role, c.software, c.storage)
		want := plan.Port{Proto: "tcp", Number: c.want}
		if c.want == 0 {
			want = plan.Port{}
		}
		if got != want {
			t.Errorf("ServicePort(%q, %q, %q) = %v, want %v", c.role, c.software, c.storage, got, want)
		}
	}
}

// TestListens: each node listens on every port its software serves; the
// edge on both HTTP and HTTPS.
func TestListens(t *testing.T) {
	p := build(t, "tiers:\n  edge: {software: haproxy}\n  static: {}\n  cache: {software: redis}\n  db: {software: postgresql}\n  storage: {protocol: nfs}\n  app: {}\n")
	var got []string
	for _, n := range p.Nodes {
		got = append(got, fmt.Sprintf("%s %v", n.Name, n.Listens))
	}
	want := []string{
		"edge [{tcp 80} {tcp 443}]",
		"static [{tcp 80}]",
		"cache [{tcp 6379}]",
		"db [{tcp 5432}]",
		"storage [{tcp 2049}]",
		"app-1 [{tcp 80}]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listens:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMounts: static nodes mount the site read-only, app nodes read-write,
// and the mounts follow from roles alone: explicit flows to the storage
// node, even on its port or from another tier, add no mount.
func TestMounts(t *testing.T) {
	for _, flows := range []string{
		"",
		"flows:\n  - {from: app, to: storage, port: 22}\n  - {from: app, to: storage, port: 80}\n  - {from: cache, to: storage, port: 22}\n",
	} {
		p := build(t, flows)
		var got []string
		for _, n := range p.Nodes {
			if m := n.Mount; m != nil {
				got = append(got, fmt.Sprintf("%s %s %s:%s/%d from %s as %s ro=%t", n.Name, m.Storage, m.Network, m.Port.Proto, m.Port.Number, m.Client, m.Account, m.ReadOnly))
				if m.Addr != p.Node("storage").Addr(m.Network) {
					t.Errorf("%s mounts from %s, not the storage node's address", n.Name, m.Addr)
				}
			}
		}
		want := []string{
			"static storage private:tcp/22 from 10.77.0.3 as site-ro ro=true",
			"app-1 storage private:tcp/22 from 10.77.0.7 as site-rw ro=false",
			"app-2 storage private:tcp/22 from 10.77.0.8 as site-rw ro=false",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("with %q, mounts:\n%s\nwant:\n%s", flows, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	p := build(t, "tiers:\n  edge: {}\n  app: {}\n  db: {}\n")
	if m := p.Tier("app")[0].Mount; m != nil {
		t.Errorf("without storage, app mounts %+v", m)
	}
}

// TestPublished: the host's published ports lead to the edge's public
// address, http to 80 and https to 443.
func TestPublished(t *testing.T) {
	p := build(t, "publish:\n  http: 127.0.0.1:8080\n  https: 127.0.0.1:8443\n")
	var got []string
	for _, f := range p.Published {
		got = append(got, fmt.Sprintf("%s -> %s %s", f.Listen, f.Node, f.Target))
	}
	want := []string{"127.0.0.1:8080 -> edge 10.77.1.2:80", "127.0.0.1:8443 -> edge 10.77.1.2:443"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("published:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestHostRow: the host may reach the edge on the ports its published
// ports lead to, and nothing else, also after a round trip through JSON.
func TestHostRow(t *testing.T) {
	p := build(t, "")
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	q, err := plan.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	tcp := func(n int) plan.Port { return plan.Port{Proto: "tcp", Number: n} }
	for _, m := range []*plan.Matrix{&p.Matrix, &q.Matrix, {Allow: p.Matrix.Allow, Host: p.Matrix.Host}} {
		for _, c := range []struct {
			to   string
			port int
			want bool
		}{{"edge", 80, true}, {"edge", 443, true}, {"edge", 22, false}, {"static", 80, false}, {"app-1", 80, false}, {"db", 3306, false}} {
			if got := m.Allowed(spec.Host, c.to, tcp(c.port)); got != c.want {
				t.Errorf("host -> %s:%d allowed = %t, want %t", c.to, c.port, got, c.want)
			}
		}
		if m.Allowed("edge", spec.Host, tcp(80)) || m.Allowed(spec.Outside, spec.Host, tcp(80)) {
			t.Error("something may reach the host")
		}
	}
	if slices.Contains(p.Matrix.Sources, spec.Host) {
		t.Error("the host is a source of flows")
	}
}

func TestLastHost(t *testing.T) {
	for in, want := range map[string]string{"10.77.0.0/24": "10.77.0.254", "10.80.0.0/23": "10.80.1.254", "192.168.4.0/30": "192.168.4.2"} {
		n := plan.Network{Subnet: netip.MustParsePrefix(in)}
		if got := n.LastHost().String(); got != want {
			t.Errorf("LastHost(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestServerNames(t *testing.T) {
	for src, want := range map[string]string{"": "localhost", "domain: shop.example\n": "shop.example localhost"} {
		if got := strings.Join(build(t, src).ServerNames, " "); got != want {
			t.Errorf("server names of %q: %q, want %q", src, got, want)
		}
	}
}

// TestMail: the mail tier takes the app nodes' mail on port 25, from them
// alone; a smarthost is the stack's one egress, from the relay alone, and
// its firewall lets out exactly that; without one nothing leaves.
func TestMail(t *testing.T) {
	tiers := "tiers:\n  edge: {}\n  app: {replicas: 2}\n  db: {}\n  mail: {}\n"
	p := build(t, tiers+"mail:\n  smarthost: 192.0.2.25:587\n  tls: encrypt\n")
	m := p.Node("mail")
	if p.Mail == nil || p.Mail.Relay != netip.AddrPortFrom(m.Addr(plan.NetPrivate), 25) || p.Mail.Hold() {
		t.Fatalf("plan's mail = %+v; want the relay on mail's private address, port 25, with a smarthost", p.Mail)
	}
	if !slices.ContainsFunc(p.Flows, func(f plan.Flow) bool { return f.From == "app" && f.To == "mail" && f.Port.Number == 25 }) {
		t.Errorf("no flow app -> mail:25 in %+v", p.Flows)
	}
	if len(p.Egress) != 1 {
		t.Fatalf("egress = %+v; want one", p.Egress)
	}
	e := p.Egress[0]
	want := plan.Egress{Name: plan.EgressSmarthost, From: "mail", Node: "mail", Network: plan.NetPrivate,
		Source: m.Addr(plan.NetPrivate), Via: p.Network(plan.NetPrivate).Gateway,
		Target: netip.MustParseAddrPort("192.0.2.25:587"), Why: e.Why}
	if e != want {
		t.Errorf("egress = %+v; want %+v", e, want)
	}
	out := m.Firewall.Output
	if len(out) != 1 || out[0].Port != (plan.Port{Proto: "tcp", Number: 587}) || out[0].Set != "to_smarthost" {
		t.Errorf("mail's output rules = %+v; want the smarthost's alone", out)
	}
	for _, n := range p.Nodes {
		if n.Name != "mail" && slices.ContainsFunc(n.Firewall.Sets, func(s plan.Set) bool { return slices.Contains(s.Addrs, e.Target.Addr()) }) {
			t.Errorf("%s's firewall names the smarthost", n.Name)
		}
	}

	held := build(t, tiers)
	if held.Mail == nil || !held.Mail.Hold() || len(held.Egress) != 0 || len(held.Node("mail").Firewall.Output) != 0 {
		t.Errorf("without a smarthost: mail %+v, egress %+v, mail's output %+v; want a relay that holds, no egress, no output", held.Mail, held.Egress, held.Node("mail").Firewall.Output)
	}
}

// TestExporters: with a monitor, each role's exporter is a plan fact
// beside its agent, the monitor alone may reach it, and its port is in the
// matrix; where Debian has none, the agent reads the daemon's figures on
// the node itself. Without a monitor there is none of it.
func TestExporters(t *testing.T) {
	for _, c := range []struct {
		tiers string
		ports map[string]int    // node -> exporter port
		pkgs  map[string]string // node -> package ("" for the daemon's own)
		stats map[string]string // node -> what its agent reads, format@addr
	}{
		{"edge: {}\n  app: {}\n  cache: {}\n  db: {}\n",
			map[string]int{"edge": 9113, "app-1": 9117, "db": 9104},
			map[string]string{"edge": "prometheus-nginx-exporter", "app-1": "prometheus-apache-exporter", "db": "prometheus-mysqld-exporter"},
			map[string]string{"app-1": "php-fpm@127.0.0.1:8079", "cache": "memcached@10.77.0.3:11211"}},
		{"edge: {software: haproxy}\n  app: {software: nginx}\n  cache: {software: redis}\n  db: {software: postgresql}\n",
			map[string]int{"edge": 8405, "app-1": 9113, "cache": 9121, "db": 9187},
			map[string]string{"edge": "", "app-1": "prometheus-nginx-exporter", "cache": "prometheus-redis-exporter", "db": "prometheus-postgres-exporter"},
			map[string]string{"app-1": "php-fpm@127.0.0.1:8079"}},
	} {
		p := build(t, "name: mon\ntiers:\n  "+c.tiers+"  monitor: {}\n")
		for _, n := range p.Nodes {
			e := n.Exporter
			want, ok := c.ports[n.Name]
			switch {
			case !ok && e != nil:
				t.Errorf("%s (%s) has exporter %+v; want none", n.Name, n.Software, e)
			case ok && (e == nil || e.Addr != netip.AddrPortFrom(n.Metrics.Addr(), uint16(want)) || e.Package != c.pkgs[n.Name]):
				t.Errorf("%s (%s) exporter = %+v; want %s on port %d beside the agent (%v)", n.Name, n.Software, e, c.pkgs[n.Name], want, n.Metrics)
			}
			got := ""
			if n.Stats != nil {
				got = n.Stats.Format + "@" + n.Stats.Addr.String()
			}
			if got != c.stats[n.Name] {
				t.Errorf("%s (%s) stats = %q, want %q", n.Name, n.Software, got, c.stats[n.Name])
			}
			if !ok {
				continue
			}
			port := plan.Port{Proto: "tcp", Number: want}
			if !p.Matrix.Allowed("monitor", n.Name, port) || !slices.Contains(p.Matrix.Ports, port) {
				t.Errorf("the matrix does not let the monitor reach %s's exporter", n.Name)
			}
			for _, from := range p.Matrix.Sources {
				if from != "monitor" && from != n.Name && p.Matrix.Allowed(from, n.Name, port) {
					t.Errorf("%s may reach %s's exporter", from, n.Name)
				}
			}
		}
		if e := p.Node("edge").Exporter; e != nil && e.Status.IsValid() && e.Status != netip.MustParseAddrPort("127.0.0.1:8079") {
			t.Errorf("edge exporter reads %v; want 127.0.0.1:8079", e.Status)
		}
		pkgs := p.Packages(p.Node("edge"))
		if slices.Contains(pkgs, "") {
			t.Errorf("edge packages %q hold an empty name", pkgs)
		}

		bare := build(t, "name: mon\ntiers:\n  "+c.tiers)
		for _, n := range bare.Nodes {
			if n.Exporter != nil || n.Stats != nil {
				t.Errorf("without a monitor, %s has exporter %+v, stats %+v", n.Name, n.Exporter, n.Stats)
			}
			if pkgs := bare.Packages(&n); slices.ContainsFunc(pkgs, func(s string) bool { return strings.HasPrefix(s, "prometheus") }) {
				t.Errorf("without a monitor, %s installs %q", n.Name, pkgs)
			}
		}
		for port := range maps.Values(c.ports) {
			if slices.Contains(bare.Matrix.Ports, plan.Port{Proto: "tcp", Number: port}) {
				t.Errorf("port %d in the matrix without a monitor", port)
			}
		}
	}
}
