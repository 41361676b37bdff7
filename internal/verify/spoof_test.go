package verify

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

func TestSynPacket(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.77.0.8:61234"), netip.MustParseAddrPort("10.77.0.5:3306")
	b := synPacket(src, dst, 0xdeadbeef)
	// A header with its checksum in sums to all ones.
	if got := checksum(0, b[:20]); got != 0xffff {
		t.Errorf("IP header sums to %#x", got)
	}
	var pseudo [12]byte
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(pseudo[:], s[:])
	copy(pseudo[4:], d[:])
	pseudo[9], pseudo[11] = 6, 20
	if got := checksum(checksum(0, pseudo[:]), b[20:]); got != 0xffff {
		t.Errorf("TCP segment sums to %#x", got)
	}
	gs, gd, seq, ok := parseSYN(b)
	if !ok || gs != src || gd != dst || seq != 0xdeadbeef {
		t.Errorf("parseSYN = %v %v %#x %v", gs, gd, seq, ok)
	}
	ack := slices.Clone(b)
	ack[33] |= 0x10
	if _, _, _, ok := parseSYN(ack); ok {
		t.Errorf("parseSYN took a SYN-ACK")
	}
	if _, _, _, ok := parseSYN(b[:30]); ok {
		t.Errorf("parseSYN took a short packet")
	}
}

// TestSpoofs: every node with a peer gets a test, and a sharp one where
// some other node may reach that peer on that port.
func TestSpoofs(t *testing.T) {
	for _, tt := range []struct {
		p     *plan.Plan
		nodes []string
		want  []string
		idle  []string
	}{
		{poolPlan(t, 2), nil, []string{
			"edge as cache to static:80 (blunt)", // only the edge may reach static
			"static as app-1 to storage:22",
			"app-1 as static to storage:22",
			"app-2 as static to storage:22",
		}, []string{"cache", "db", "storage"}},
		{poolPlan(t, 2), []string{"app-2"}, []string{"app-2 as static to storage:22"}, nil},
	} {
		tests, idle := spoofs(tt.p, tt.nodes)
		var got []string
		for _, s := range tests {
			g := s.String()
			if !s.Sharp {
				g += " (blunt)"
			}
			got = append(got, g)
			if s.Real != tt.p.Node(s.From).Addr(plan.NetPrivate) || s.Claim != tt.p.Node(s.As).Addr(plan.NetPrivate) ||
				s.Dst.Addr() != tt.p.Node(s.To).Addr(plan.NetPrivate) {
				t.Errorf("%s: addresses %+v", s, s)
			}
		}
		if !slices.Equal(got, tt.want) || !slices.Equal(idle, tt.idle) {
			t.Errorf("nodes %q: tests %q, idle %q; want %q, %q", tt.nodes, got, idle, tt.want, tt.idle)
		}
	}
	// The self-test's hole is in an app node, whose spoofed SYN nothing
	// else would stop.
	p := poolPlan(t, 2)
	var names []string
	for _, m := range Mutations(p) {
		names = append(names, m.Name)
	}
	for _, want := range []string{
		"a UDP hole: cache also accepts udp/11211 on its private side",
		"anti-spoofing removed for app-1: the host's bridge table no longer checks its source address",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("mutations %q lack %q", names, want)
		}
	}
	if got, want := string(antiSpoofHole(p, p.Node("edge"))), "delete element bridge bulkhead_bulkhead nodes { \"bulkhead-1u\", \"bulkhead-1p\" }\n"; got != want {
		t.Errorf("antiSpoofHole(edge) = %q, want %q", got, want)
	}
}

// TestMutationsExplain: the UDP hole and the anti-spoofing hole are
// caught only when verify reports them and nothing else.
func TestMutationsExplain(t *testing.T) {
	p := poolPlan(t, 2)
	byName := map[string]Mutation{}
	for _, m := range Mutations(p) {
		byName[strings.SplitN(m.Name, ":", 2)[0]] = m
	}
	udp, spoof := byName["a UDP hole"], byName["anti-spoofing removed for app-1"]
	if udp.explains == nil || spoof.explains == nil {
		t.Fatalf("mutations: %v", byName)
	}
	hole := func(c *Cell, t *Target) {
		if c.From == Host && c.To == "cache" && c.udp() && c.Port == 11211 {
			t.Status = Open
		}
	}
	tcpToo := func(c *Cell, t *Target) {
		hole(c, t)
		if c.From == Host && c.To == "cache" && !c.udp() && c.Port == 11211 {
			t.Status = Open
		}
	}
	spoofed := Check{Name: SpoofCheck, Errors: []string{"app-1 sent a SYN as static (10.77.0.3) to storage 10.77.0.6:22 and it arrived: the fabric lets app-1 send as another node"}}
	other := Check{Name: SpoofCheck, Errors: []string{"app-2 sent a SYN as static (10.77.0.3) to storage 10.77.0.6:22 and it arrived: the fabric lets app-2 send as another node"}}
	for _, tt := range []struct {
		name   string
		m      Mutation
		see    func(*Cell, *Target)
		checks []Check
		caught bool
	}{
		{"udp hole alone", udp, hole, nil, true},
		{"udp hole and tcp/11211 from the host", udp, tcpToo, nil, false},
		{"udp hole not seen", udp, nil, nil, false},
		{"udp hole and a spoof", udp, hole, []Check{spoofed}, false},
		{"spoof alone", spoof, nil, []Check{spoofed}, true},
		{"spoof from another node", spoof, nil, []Check{other}, false},
		{"spoof not seen", spoof, nil, []Check{{Name: SpoofCheck, OK: true}}, false},
		{"spoof and the udp hole", spoof, hole, []Check{spoofed}, false},
	} {
		r := observed(p, nil, tt.see)
		r.Checks = append(r.Checks, tt.checks...)
		r.tally()
		stray := tt.m.explains(r)
		if caught := len(r.Failures()) > 0 && len(stray) == 0; caught != tt.caught {
			t.Errorf("%s: caught %v, want %v (failures %q, not explained %q)", tt.name, caught, tt.caught, r.Failures(), stray)
		}
	}
}

// TestSYNs sends a SYN as the client and one as an address the client
// does not own, over a bare veth: both arrive, and the server's TCP takes
// them as sound (no checksum error). A rule in the client's output that
// drops what it does not own stops the second one.
func TestSYNs(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	dst := netip.AddrPortFrom(p.srvAddr, 3306)
	claim := netip.MustParseAddr("10.249.0.77")
	tests := []synTest{{from: p.clientH, to: p.serverH, real: p.clientAddr, claim: claim, dst: dst}}
	before := tcpCounters(t, p.server)
	res, err := sendSYNs(ctx, tests, 5*time.Second, 200*time.Millisecond)
	if err != nil || res[0].err != nil {
		t.Fatal(err, res[0].err)
	}
	if !res[0].control || !res[0].spoof {
		t.Errorf("over a bare veth: control arrived %v, spoof arrived %v; want both", res[0].control, res[0].spoof)
	}
	after := tcpCounters(t, p.server)
	if after["InCsumErrors"] != before["InCsumErrors"] || after["InSegs"] < before["InSegs"]+2 {
		t.Errorf("the server's TCP counters went from %v to %v: the SYNs are not sound", before, after)
	}

	if err := nft.Apply(ctx, p.client, []byte(`table inet t {
	chain output { type filter hook output priority filter; policy accept; ip saddr != 10.249.0.1 drop; }
}
`)); err != nil {
		t.Fatal(err)
	}
	res, err = sendSYNs(ctx, tests, 5*time.Second, 200*time.Millisecond)
	if err != nil || res[0].err != nil {
		t.Fatal(err, res[0].err)
	}
	if !res[0].control || res[0].spoof {
		t.Errorf("behind an anti-spoofing rule: control arrived %v, spoof arrived %v; want only the control", res[0].control, res[0].spoof)
	}
}

// tcpCounters reads the Tcp line of /proc/net/snmp inside namespace ns.
func tcpCounters(t *testing.T, ns string) map[string]int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == "Tcp:" {
			lines = append(lines, f[1:])
		}
	}
	if len(lines) != 2 {
		t.Fatalf("no Tcp lines in /proc/net/snmp:\n%s", out)
	}
	m := map[string]int{}
	for i, k := range lines[0] {
		m[k], _ = strconv.Atoi(lines[1][i])
	}
	return m
}

// fabric is a stack's network without its containers or daemons: the
// plan's namespaces, and in place of the host a namespace of its own that
// holds the bridges, the gateways and the host's tables. Nothing it does
// touches the host's own network: every address lives inside the
// namespaces it makes.
type fabric struct {
	p   *plan.Plan
	fab string
	s   *session
}

func newFabric(t *testing.T) *fabric {
	t.Helper()
	hosttest.RequireRoot(t)
	ctx := context.Background()
	id := os.Getpid() % 100000
	st := poolStack(2)
	st.Name = fmt.Sprintf("vt%d", id)
	st.Networks.Private = netip.MustParsePrefix("10.249.8.0/24")
	st.Networks.Public = netip.MustParsePrefix("10.249.9.0/24")
	pl := build(t, st)
	var err error
	f := &fabric{p: pl, fab: fmt.Sprintf("bhtest-fab-%d", id)}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	namespaces := []string{f.fab, pl.Outside.Netns}
	for _, n := range pl.Nodes {
		namespaces = append(namespaces, n.Netns)
	}
	for _, ns := range namespaces {
		if netns.Exists(ns) {
			t.Fatalf("namespace %s exists already", ns)
		}
		if err := netns.Add(ctx, ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := netns.Delete(context.Background(), ns); err != nil {
				t.Error(err)
			}
		})
	}
	for _, n := range pl.Networks {
		ip("-n", f.fab, "link", "add", n.Bridge, "type", "bridge")
		ip("-n", f.fab, "addr", "add", fmt.Sprintf("%s/%d", n.Gateway, n.Subnet.Bits()), "dev", n.Bridge)
		ip("-n", f.fab, "link", "set", n.Bridge, "up")
	}
	leg := func(ns string, i plan.Interface) {
		ip("-n", ns, "link", "add", i.Name, "type", "veth", "peer", "name", i.Host, "netns", f.fab)
		ip("-n", f.fab, "link", "set", i.Host, "master", pl.Network(i.Network).Bridge, "up")
		ip("-n", ns, "addr", "add", fmt.Sprintf("%s/%d", i.Addr, i.Bits), "dev", i.Name)
		ip("-n", ns, "link", "set", i.Name, "up")
	}
	leg(pl.Outside.Netns, pl.Outside.Iface)
	for _, n := range pl.Nodes {
		for _, i := range n.Ifaces {
			leg(n.Netns, i)
		}
		if err := nft.Apply(ctx, n.Netns, render.Nftables(&n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nft.Apply(ctx, f.fab, render.HostNftables(pl)); err != nil {
		t.Fatal(err)
	}

	s := newSession(pl, Options{})
	for _, v := range s.vs {
		name := f.fab
		switch {
		case v.node != nil:
			name = v.node.Netns
		case v.name == Outside:
			name = pl.Outside.Netns
		}
		if v.h, err = netns.Open(name); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.close)
	f.s = s
	return f
}

// TestSpoofCheck runs the anti-spoofing check on a stack's fabric with the
// host's real tables: it passes, and with one node taken out of the
// anti-spoofing set, as the self-test does, it fails for that node alone.
func TestSpoofCheck(t *testing.T) {
	f := newFabric(t)
	ctx := context.Background()
	ch := f.s.spoofing(ctx)
	t.Logf("%s: ok=%v: %s %q", ch.Name, ch.OK, ch.Detail, ch.Errors)
	if !ch.OK {
		t.Fatalf("the check fails on a sound fabric: %q", ch.Errors)
	}
	var m Mutation
	for _, mm := range Mutations(f.p) {
		if strings.HasPrefix(mm.Name, "anti-spoofing removed for ") {
			m = mm
		}
	}
	if m.explains == nil {
		t.Fatal("no anti-spoofing mutation")
	}
	node := f.p.Node("app-1")
	if err := nft.Apply(ctx, f.fab, antiSpoofHole(f.p, node)); err != nil {
		t.Fatal(err)
	}
	ch = f.s.spoofing(ctx)
	t.Logf("with the hole: %s: ok=%v: %q", ch.Name, ch.OK, ch.Errors)
	want := fmt.Sprintf("app-1 sent a SYN as static (%s) to storage %s:22 and it arrived: the fabric lets app-1 send as another node",
		f.p.Node("static").Addr(plan.NetPrivate), f.p.Node("storage").Addr(plan.NetPrivate))
	if ch.OK || !slices.Equal(ch.Errors, []string{want}) {
		t.Errorf("with app-1 out of the anti-spoofing set: errors %q, want %q", ch.Errors, want)
	}
	r := &Report{Plan: f.p, Checks: []Check{ch}}
	r.tally()
	if stray := m.explains(r); len(stray) > 0 {
		t.Errorf("the self-test would not count this as caught: %q", stray)
	}
	if err := nft.Apply(ctx, f.fab, render.HostNftables(f.p)); err != nil {
		t.Fatal(err)
	}
	if ch = f.s.spoofing(ctx); !ch.OK {
		t.Errorf("after the anti-spoofing set is restored: %q", ch.Errors)
	}
}

// TestUDPHole probes a stack's fabric, with the host's and the nodes' real
// rulesets and a stand-in for each role's daemon, from every vantage (the
// fabric's namespace stands in for the host). The matrix passes, UDP
// included; with the self-test's UDP hole planted it fails on exactly
// that hole.
func TestUDPHole(t *testing.T) {
	f := newFabric(t)
	ctx := context.Background()
	// The roles' daemons: a listener on each node's ports.
	var daemons listeners
	defer daemons.Close()
	for _, v := range f.s.vs {
		if v.node == nil {
			continue
		}
		var as []netip.AddrPort
		for _, pt := range v.node.Listens {
			as = append(as, netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(pt.Number)))
		}
		if err := daemons.add(v.h, as); err != nil {
			t.Fatal(err)
		}
	}
	run := func() *Report {
		t.Helper()
		r := &Report{Stack: f.p.Stack, Plan: f.p}
		if err := f.s.matrix(ctx, r); err != nil {
			t.Fatal(err)
		}
		f.s.name(r)
		r.tally()
		return r
	}
	r := run()
	if r.Counts.Failures != 0 {
		t.Fatalf("a sound fabric fails: %q", r.Failures())
	}
	udpCells := 0
	for _, c := range r.Cells {
		if c.udp() {
			udpCells++
		}
	}
	if udpCells == 0 || len(r.UDPPorts) == 0 {
		t.Fatalf("no UDP cell probed: ports %v", r.UDPPorts)
	}
	t.Logf("clean: %d cells (%d udp), %d probes", len(r.Cells), udpCells, r.Probes)

	var m Mutation
	for _, mm := range Mutations(f.p) {
		if strings.HasPrefix(mm.Name, "a UDP hole: ") {
			m = mm
		}
	}
	restore, err := m.breakIt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = run()
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s:\n%s", m.Name, b.String())
	want := fmt.Sprintf("host -> cache:11211/udp: denied, but %s:11211/udp is open", f.p.Node("cache").Addr(plan.NetPrivate))
	if got := r.Failures(); !slices.Equal(got, []string{want}) {
		t.Errorf("with the UDP hole: failures %q, want %q", got, want)
	}
	if stray := m.explains(r); len(stray) > 0 {
		t.Errorf("the self-test would not count this as caught: %q", stray)
	}
	if r = run(); r.Counts.Failures != 0 {
		t.Errorf("after the restore: %q", r.Failures())
	}
}
