package verify

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
)

// pair is two scratch namespaces joined by a veth, 10.249.0.1 (client) and
// 10.249.0.2 (server). The host has no address or route in that subnet, so
// nothing the test sends can leave the two namespaces.
type pair struct {
	client, server      string
	clientH, serverH    *netns.Handle
	clientAddr, srvAddr netip.Addr
}

func newPair(t *testing.T) *pair {
	t.Helper()
	hosttest.RequireRoot(t)
	ctx := context.Background()
	id := os.Getpid() % 100000
	p := &pair{
		client: fmt.Sprintf("bhtest-vc-%d", id), server: fmt.Sprintf("bhtest-vs-%d", id),
		clientAddr: netip.MustParseAddr("10.249.0.1"), srvAddr: netip.MustParseAddr("10.249.0.2"),
	}
	for _, ns := range []string{p.client, p.server} {
		if err := netns.Add(ctx, ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := netns.Delete(context.Background(), ns); err != nil {
				t.Error(err)
			}
		})
	}
	// The pair is made inside the client namespace, so it never exists on
	// the host.
	for _, args := range [][]string{
		{"-n", p.client, "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", p.server},
		{"-n", p.client, "addr", "add", "10.249.0.1/24", "dev", "c0"},
		{"-n", p.server, "addr", "add", "10.249.0.2/24", "dev", "s0"},
		{"-n", p.client, "link", "set", "c0", "up"},
		{"-n", p.server, "link", "set", "s0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	var err error
	if p.clientH, err = netns.Open(p.client); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.clientH.Close() })
	if p.serverH, err = netns.Open(p.server); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.serverH.Close() })
	return p
}

// TestClassify probes real sockets behind a real firewall and checks each
// of the four outcomes, half-open (a SYN from a raw socket) and with a
// connect, which must agree.
func TestClassify(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	// The server drops tcp/2222 on the way in; tcp/3333 has a listener and
	// no rule; tcp/4444 has neither. The client drops tcp/5555 on the way
	// out, where the server listens too. The server rejects tcp/6666 with
	// an ICMP port unreachable, tcp/6667 with a host unreachable, tcp/6668
	// with a reset, all three in front of a listener.
	rules := `table inet t {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 2222 drop
		tcp dport 6666 reject with icmp type port-unreachable
		tcp dport 6667 reject with icmp type host-unreachable
		tcp dport 6668 reject with tcp reset
	}
}
`
	if err := nft.Apply(ctx, p.server, []byte(rules)); err != nil {
		t.Fatal(err)
	}
	if err := nft.Apply(ctx, p.client, []byte(`table inet t {
	chain output { type filter hook output priority filter; policy accept; tcp dport 5555 drop; }
}
`)); err != nil {
		t.Fatal(err)
	}
	var l listeners
	defer l.Close()
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(p.srvAddr, port) }
	if err := l.add(p.serverH, []netip.AddrPort{at(2222), at(3333), at(5555), at(6666), at(6667), at(6668)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		to   netip.AddrPort
		want Status
	}{
		{"listener behind a drop rule", at(2222), Filtered},
		{"listener, no rule", at(3333), Open},
		{"no listener, no rule", at(4444), Refused},
		{"dropped on the way out", at(5555), Filtered},
		{"no route", netip.MustParseAddrPort("10.248.0.9:80"), Unreachable},
		{"rejected with port unreachable", at(6666), Refused},
		{"rejected with host unreachable", at(6667), Unreachable},
		{"rejected with a reset", at(6668), Refused},
	}
	// The same probe twice, as the bypass check's egress probes may be:
	// each gets its own answer (from one worker, which shares its sockets).
	cases = append(cases, cases[1], cases[2])
	var probes []Probe
	for _, c := range cases {
		probes = append(probes, Probe{From: 0, To: c.to})
	}
	for _, connect := range []bool{false, true} {
		start := time.Now()
		pr := prober{Timeout: 300 * time.Millisecond, Window: 100, Workers: 1, connect: connect}
		got, err := pr.run(ctx, []*netns.Handle{p.clientH}, probes)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			if got[i] != c.want {
				t.Errorf("connect=%v: %s (%s): %s, want %s", connect, c.name, c.to, got[i], c.want)
			}
		}
		t.Logf("connect=%v: %d probes, 2 of them filtered, in %v", connect, len(probes), time.Since(start))
	}

	// The judgement: a denied cell that is refused was reached, which is a
	// failure; filtered and unreachable are what a denied cell should be.
	for _, c := range []struct {
		allow   bool
		primary bool
		status  Status
		ok      bool
	}{
		{false, false, Refused, false},
		{false, false, Open, false},
		{false, false, Filtered, true},
		{false, false, Unreachable, true},
		{true, true, Open, true},
		{true, true, Filtered, false},
		{true, true, Refused, false},
	} {
		cell := Cell{From: "a", To: "b", Port: 1, Allow: c.allow, Targets: []Target{{Addr: p.srvAddr, Status: c.status, Primary: c.primary}}}
		cell.judge()
		if cell.OK != c.ok {
			t.Errorf("allow=%v %s: ok=%v (%s), want %v", c.allow, c.status, cell.OK, cell.Why, c.ok)
		}
	}
}

// TestClassifyUDP probes UDP through a real firewall to verify's echoing
// stand-ins, and checks each outcome: an echo is open, and only a dropped
// datagram is filtered.
func TestClassifyUDP(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	// The server drops udp/5354 on the way in, and rejects udp/5357 with
	// an ICMP host unreachable; udp/5353 has a stand-in and no rule;
	// udp/5355 has neither. The client drops udp/5356 on the way out.
	// Every port but 5355 has a stand-in.
	if err := nft.Apply(ctx, p.server, []byte(`table inet t {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 5354 drop
		udp dport 5357 reject with icmp type host-unreachable
	}
}
`)); err != nil {
		t.Fatal(err)
	}
	if err := nft.Apply(ctx, p.client, []byte(`table inet t {
	chain output { type filter hook output priority filter; policy accept; udp dport 5356 drop; }
}
`)); err != nil {
		t.Fatal(err)
	}
	var l listeners
	defer l.Close()
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(p.srvAddr, port) }
	if err := l.addUDP(p.serverH, []netip.AddrPort{at(5353), at(5354), at(5356), at(5357)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		to   netip.AddrPort
		want Status
	}{
		{"stand-in, no rule", at(5353), Open},
		{"stand-in behind a drop rule", at(5354), Filtered},
		{"no stand-in, no rule", at(5355), Refused},
		{"dropped on the way out", at(5356), Filtered},
		{"no route", netip.MustParseAddrPort("10.248.0.9:53"), Unreachable},
		{"stand-in behind a reject rule", at(5357), Unreachable},
	}
	// A connected UDP socket never hears of that host unreachable (as of
	// 2026-12 on kernel 6.18; its error stays 0), where a TCP connect does
	// and the raw ICMP socket does: it reads filtered, the same verdict.
	connectWant := map[netip.AddrPort]Status{at(5357): Filtered}
	var probes []Probe
	for _, c := range cases {
		probes = append(probes, Probe{From: 0, To: c.to, UDP: true})
	}
	// A TCP probe among them, to the same port as an echo: the two kinds
	// share a window and do not mix up their answers.
	probes = append(probes, Probe{From: 0, To: at(5353)})
	// From the namespace's shared sockets, and from a socket each.
	for _, connect := range []bool{false, true} {
		pr := prober{Timeout: 300 * time.Millisecond, Window: 100, connect: connect}
		got, err := pr.run(ctx, []*netns.Handle{p.clientH}, probes)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			if w, ok := connectWant[c.to]; ok && connect {
				c.want = w
			}
			if got[i] != c.want {
				t.Errorf("connect=%v: %s (udp %s): %s, want %s", connect, c.name, c.to, got[i], c.want)
			}
		}
		if got[len(cases)] != Refused {
			t.Errorf("connect=%v: tcp %s, where only a UDP stand-in listens: %s, want refused", connect, at(5353), got[len(cases)])
		}
	}

	// The inventory lists the stand-ins as UDP sockets that listen.
	socks, err := sockets(p.serverH, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint16{5353, 5354, 5356} {
		if !slices.ContainsFunc(socks, func(s Socket) bool { return s.Proto == "udp" && s.Listening() && s.Local == at(port) }) {
			t.Errorf("udp %s not in the inventory: %+v", at(port), socks)
		}
	}

	// Close stops the echoes: the same probe now reads refused.
	l.Close()
	for _, connect := range []bool{false, true} {
		pr := prober{Timeout: 300 * time.Millisecond, Window: 100, connect: connect}
		got, err := pr.run(ctx, []*netns.Handle{p.clientH}, probes[:1])
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != Refused {
			t.Errorf("connect=%v: udp %s after Close: %s, want refused", connect, at(5353), got[0])
		}
	}
}

// TestProbeConcurrency checks that filtered probes overlap: the prober
// keeps a whole window of dropped SYNs waiting at once, so a thousand of
// them cost about n/window timeouts, not n.
func TestProbeConcurrency(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	if err := nft.Apply(ctx, p.server, []byte(`table inet t {
	chain input { type filter hook input priority filter; policy drop; }
}
`)); err != nil {
		t.Fatal(err)
	}
	const n, window = 1000, 500
	var probes []Probe
	for i := range n {
		probes = append(probes, Probe{From: 0, To: netip.AddrPortFrom(p.srvAddr, uint16(20000+i))})
	}
	peak := 0
	pr := prober{Timeout: 200 * time.Millisecond, Window: window, Workers: 1,
		inflight: func(n int) { peak = max(peak, n) }}
	got, err := pr.run(ctx, []*netns.Handle{p.clientH}, probes)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range got {
		if s != Filtered {
			t.Fatalf("probe %d: %s, want filtered", i, s)
		}
	}
	if peak != window {
		t.Errorf("at most %d attempts waited together, want the window, %d", peak, window)
	}
}

// TestHalfOpenSource probes from a namespace on two networks, whose
// peer takes each network's packets only from that network's address:
// every SYN must carry the source address the kernel would give a
// connect to that destination, whichever destination came first.
func TestHalfOpenSource(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	for _, args := range [][]string{
		{"-n", p.client, "link", "add", "c1", "type", "veth", "peer", "name", "s1", "netns", p.server},
		{"-n", p.client, "addr", "add", "10.249.1.1/24", "dev", "c1"},
		{"-n", p.server, "addr", "add", "10.249.1.2/24", "dev", "s1"},
		{"-n", p.client, "link", "set", "c1", "up"},
		{"-n", p.server, "link", "set", "s1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := nft.Apply(ctx, p.server, []byte(`table inet t {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "s0" ip saddr != 10.249.0.1 drop
		iifname "s1" ip saddr != 10.249.1.1 drop
	}
}
`)); err != nil {
		t.Fatal(err)
	}
	var l listeners
	defer l.Close()
	other := netip.MustParseAddrPort("10.249.1.2:3333")
	if err := l.add(p.serverH, []netip.AddrPort{netip.AddrPortFrom(p.srvAddr, 3333), other}); err != nil {
		t.Fatal(err)
	}
	// Either order: the first destination must not fix the source of the
	// second.
	for _, probes := range [][]Probe{
		{{To: other}, {To: netip.AddrPortFrom(p.srvAddr, 3333)}},
		{{To: netip.AddrPortFrom(p.srvAddr, 3333)}, {To: other}},
	} {
		got, err := prober{Timeout: 300 * time.Millisecond, Window: 100, Workers: 1}.run(ctx, []*netns.Handle{p.clientH}, probes)
		if err != nil {
			t.Fatal(err)
		}
		for i, st := range got {
			if st != Open {
				t.Errorf("%s after %s: %s, want open", probes[i].To, probes[0].To, st)
			}
		}
	}
}

// TestHalfOpenLostReplies fills the shared sockets' queues so that the
// kernel drops answers to probes: the probes whose answer may have been
// lost are done again with a socket each, so an open port never reads
// filtered.
func TestHalfOpenLostReplies(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	const n = 300
	var addrs []netip.AddrPort
	var probes []Probe
	for i := range n {
		a := netip.AddrPortFrom(p.srvAddr, uint16(20000+i))
		addrs = append(addrs, a)
		probes = append(probes, Probe{To: a}, Probe{To: a, UDP: true})
	}
	var l listeners
	defer l.Close()
	if err := l.add(p.serverH, addrs); err != nil {
		t.Fatal(err)
	}
	if err := l.addUDP(p.serverH, addrs); err != nil {
		t.Fatal(err)
	}
	defer func(old int) { synRcvBuf = old }(synRcvBuf)
	synRcvBuf = 1 // the kernel's minimum: a few packets
	var lost bool
	pr := prober{Timeout: 300 * time.Millisecond, Window: 2 * n, Workers: 1, lost: func() { lost = true }}
	got, err := pr.run(ctx, []*netns.Handle{p.clientH}, probes)
	if err != nil {
		t.Fatal(err)
	}
	if !lost {
		t.Errorf("no answer was lost from a queue of a few packets: the test proves nothing")
	}
	for i, st := range got {
		if st != Open {
			t.Errorf("%+v: %s, want open", probes[i], st)
		}
	}
}

// TestInventory finds a listener in a namespace and the process that holds
// it.
func TestInventory(t *testing.T) {
	p := newPair(t)
	var l listeners
	defer l.Close()
	addr := netip.AddrPortFrom(p.srvAddr, 7777)
	if err := l.add(p.serverH, []netip.AddrPort{addr}); err != nil {
		t.Fatal(err)
	}
	socks, err := sockets(p.serverH, false)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(socks, func(s Socket) bool { return s.Listening() && s.Local == addr })
	if i < 0 {
		t.Fatalf("listener %s not in the inventory: %+v", addr, socks)
	}
	ino, err := p.serverH.Inode()
	if err != nil {
		t.Fatal(err)
	}
	own := owners(map[uint64]map[uint64]bool{ino: {socks[i].Inode: true}})
	if !slices.ContainsFunc(own[socks[i].Inode], func(o Owner) bool { return o.PID == os.Getpid() }) {
		t.Errorf("listener's owners %+v lack this process (%d)", own[socks[i].Inode], os.Getpid())
	}
	// sock_diag, asked for listening sockets, lists what /proc/net lists
	// as listening: the same listeners, with their inodes, and no others.
	listening, err := listeningAll([]*netns.Handle{p.serverH, p.clientH})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range []*netns.Handle{p.serverH, p.clientH} {
		all, err := sockets(h, false)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.DeleteFunc(all, func(s Socket) bool { return !s.Listening() })
		got := slices.DeleteFunc(slices.Clone(listening[i]), func(s Socket) bool { return !s.Listening() })
		key := func(a, b Socket) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
		slices.SortFunc(want, key)
		slices.SortFunc(got, key)
		if !slices.Equal(got, want) {
			t.Errorf("%s: sock_diag lists %+v, /proc/net %+v", h.Name, got, want)
		}
	}
	if !slices.ContainsFunc(listening[0], func(s Socket) bool { return s.Listening() && s.Local == addr && s.Inode == socks[i].Inode }) {
		t.Errorf("listener %s not among the listening sockets: %+v", addr, listening[0])
	}

	// The client's namespace has no such socket: the inventory is per
	// namespace.
	other, err := sockets(p.clientH, false)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(other, func(s Socket) bool { return s.Local == addr }) {
		t.Errorf("the client namespace lists the server's listener")
	}
}
