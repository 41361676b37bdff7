// Package verify proves a running stack's isolation empirically. It lists
// what listens inside every node, sends real connection attempts from every
// vantage point (each node, the outside namespace that stands in for the
// internet, and the host) to every node on every port of interest, and
// compares what happened with the Plan's matrix. It never reads a firewall
// rule back: a rule that looks right but does not hold is caught, and so is
// a hole no rule explains.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// CommonPorts are TCP ports attackers try first. Every node is probed on
// them whatever the plan says, besides the plan's own ports and every port
// found listening.
var CommonPorts = []int{21, 22, 23, 25, 53, 80, 111, 443, 445, 2049, 3306, 5432, 6379, 8080, 8443, 9000, 9200, 11211, 27017}

// CommonUDPPorts are the UDP ports every node is probed on, besides the
// plan's UDP ports and every UDP port found bound in a node. They are the
// services that answer an unauthenticated datagram, and so carry
// reflection and amplification attacks or leak what they know, and that a
// stack's own daemons could open by a changed default: DNS (53), the
// portmapper (111), NTP (123), SNMP (161), NFS (2049, which ganesha could
// also serve over UDP) and memcached (11211, the cache role's daemon,
// whose UDP side render turns off). They are few because UDP cells cost
// what TCP cells do: a denied one waits out the Timeout.
var CommonUDPPorts = []int{53, 111, 123, 161, 2049, 11211}

// Vantage names besides the nodes'.
const (
	Host    = spec.Host
	Outside = spec.Outside
)

// Options tune a run.
type Options struct {
	// Timeout is how long a connection attempt may stay unanswered before
	// it counts as filtered. An allowed cell that does not open in time is
	// tried again with Retry.
	Timeout time.Duration
	Retry   time.Duration
	// Window is how many attempts each worker keeps in flight.
	Window int
	// Supervisor is the PID of the stack's supervisor, which must listen on nothing,
	// or 0.
	Supervisor int
	// Nodes, when not empty, limits the matrix to the rows and columns of
	// these nodes: every cell from or to one of them. A rolling deploy
	// re-verifies just the nodes it changed.
	Nodes []string
}

// Defaults: a filtered cell costs Timeout of wall time, shared by up to
// Window attempts per worker (one worker per CPU). On a veth the kernel answers a SYN within
// microseconds, so a quarter second is ample even on a loaded host, and an
// allowed cell gets a second, longer chance anyway.
//
// A stack of 106 nodes has about 300,000 probes, most of them cells a
// firewall drops, each waiting out the Timeout: with 10,000 in flight per
// worker, as until 2026-11, that was 15 rounds of 250 ms on two cores.
// An attempt in flight is an open socket, a few KB of kernel memory: the
// window costs about 100 MB per worker at most, for the seconds a run
// lasts (fitWindow shrinks it to what the open files limit allows).
const (
	DefaultTimeout = 250 * time.Millisecond
	DefaultRetry   = 2 * time.Second
	DefaultWindow  = 32768
)

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	return o
}

// vantage is a namespace verify probes from and to: the host, the outside
// stand-in, or a node.
type vantage struct {
	name string
	h    *netns.Handle
	node *plan.Node // nil for the host and outside
	nets []string   // the stack networks it has a leg on
	addr netip.Addr // outside's address
}

// session is one run's live state.
type session struct {
	p        *plan.Plan
	o        Options
	vs       []*vantage // host, outside, then the nodes in plan order
	gateways map[string]netip.Addr
	socks    [][]Socket // per vantage, before any stand-in
	owners   map[uint64][]Owner
}

const (
	hostIdx    = 0
	outsideIdx = 1
)

// Run verifies the running stack p and returns the report. An error means
// verify could not run (the stack is not up, a namespace is missing); a
// stack that fails verification is a Report whose Failures is not zero.
func Run(ctx context.Context, p *plan.Plan, o Options) (*Report, error) {
	start := time.Now()
	s := newSession(p, o)
	if err := s.open(); err != nil {
		s.close()
		return nil, err
	}
	defer s.close()
	r := &Report{Stack: p.Stack, Plan: p}
	if err := s.matrix(ctx, r); err != nil {
		return nil, err
	}
	mark := time.Now()
	r.Checks = s.bypass(ctx)
	r.Phases = append(r.Phases, Phase{Name: "bypass checks", Duration: time.Since(mark)})
	s.name(r)
	r.Duration = time.Since(start)
	r.tally()
	return r, nil
}

func newSession(p *plan.Plan, o Options) *session {
	s := &session{p: p, o: o.withDefaults(), vs: vantages(p), gateways: map[string]netip.Addr{}}
	for _, n := range p.Networks {
		s.gateways[n.Name] = n.Gateway
	}
	return s
}

// matrix lists the listeners, probes every cell and judges it, into r.
// The stand-ins it puts up are gone when it returns.
func (s *session) matrix(ctx context.Context, r *Report) error {
	mark := time.Now()
	phase := func(name string) {
		now := time.Now()
		r.Phases = append(r.Phases, Phase{Name: name, Duration: now.Sub(mark)})
		mark = now
	}
	if err := s.inventory(); err != nil {
		return err
	}
	phase("inventory")
	r.Listeners = s.listenerFindings()
	r.Ports, r.UDPPorts = s.ports()
	cells, probes, primaries := s.cells(r.Ports, r.UDPPorts)
	phase("matrix")

	var tmp listeners
	defer tmp.Close()
	if err := s.standIns(&tmp, cells); err != nil {
		return err
	}
	phase("stand-in listeners")
	handles := s.handles()
	pr := prober{Timeout: s.o.Timeout, Window: s.o.Window}
	statuses, err := pr.run(ctx, handles, probes)
	if err != nil {
		return err
	}
	phase("probes")
	// An allowed cell that did not open gets a second, longer chance, so
	// that a busy host does not read as a broken flow.
	var again []int
	for _, i := range primaries {
		if statuses[i] != Open {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		retry := make([]Probe, len(again))
		for k, i := range again {
			retry[k] = probes[i]
		}
		pr.Timeout = s.o.Retry
		st, err := pr.run(ctx, handles, retry)
		if err != nil {
			return err
		}
		for k, i := range again {
			statuses[i] = st[k]
		}
		phase("retries")
	}
	for i := range cells {
		c := &cells[i]
		for t := range c.Targets {
			c.Targets[t].Status = statuses[c.Targets[t].probe]
		}
		c.judge()
	}
	r.Cells = cells
	r.Probes = len(probes)
	return nil
}

func (s *session) open() error {
	h, err := netns.Open("")
	if err != nil {
		return err
	}
	s.vs[hostIdx].h = h
	var missing []string
	var errs []error
	for _, v := range s.vs[outsideIdx:] {
		ns := s.p.Outside.Netns
		if v.node != nil {
			ns = v.node.Netns
		}
		var err error
		v.h, err = netns.Open(ns)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, v.name)
		case err != nil:
			errs = append(errs, err)
		}
	}
	if len(missing) == len(s.vs)-1 {
		return fmt.Errorf("stack %s is down; run 'bulkhead up' first", s.p.Stack)
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("stack %s is not whole: no network namespace for %s; run 'bulkhead up' to repair it", s.p.Stack, strings.Join(missing, ", ")))
	}
	return errors.Join(errs...)
}

// vantages lists p's vantages, not yet opened: the host, the outside,
// then the nodes in plan order.
func vantages(p *plan.Plan) []*vantage {
	host := &vantage{name: Host}
	for _, n := range p.Networks {
		host.nets = append(host.nets, n.Name)
	}
	out := &vantage{name: Outside, nets: []string{p.Outside.Iface.Network}, addr: p.Outside.Iface.Addr}
	vs := []*vantage{host, out}
	for i := range p.Nodes {
		n := &p.Nodes[i]
		v := &vantage{name: n.Name, node: n}
		for _, i := range n.Ifaces {
			v.nets = append(v.nets, i.Network)
		}
		vs = append(vs, v)
	}
	return vs
}

// name fills in the report's sources and their tiers.
func (s *session) name(r *Report) {
	r.Sources = make([]string, len(s.vs))
	r.Tiers = map[string]string{}
	for i, v := range s.vs {
		r.Sources[i] = v.name
		if v.node != nil {
			r.Tiers[v.name] = v.node.Tier
		}
	}
}

func (s *session) handles() []*netns.Handle {
	hs := make([]*netns.Handle, len(s.vs))
	for i, v := range s.vs {
		hs[i] = v.h
	}
	return hs
}

func (s *session) close() {
	for _, v := range s.vs {
		if v.h != nil {
			v.h.Close()
		}
	}
}

// inventory lists every vantage's sockets.
func (s *session) inventory() error {
	var err error
	if s.socks, err = listeningAll(s.handles()); err != nil {
		return err
	}
	// Name the holders of the nodes' listening sockets, and of the
	// supervisor's: the host's are the host's business.
	want := map[uint64]map[uint64]bool{}
	for i, v := range s.vs {
		if i == hostIdx {
			continue
		}
		ino, err := v.h.Inode()
		if err != nil {
			return err
		}
		for _, so := range s.socks[i] {
			if so.Listening() {
				if want[ino] == nil {
					want[ino] = map[uint64]bool{}
				}
				want[ino][so.Inode] = true
			}
		}
	}
	s.owners = owners(want)
	if s.o.Supervisor > 0 {
		for _, inode := range socketInodes(s.o.Supervisor) {
			s.owners[inode] = append(s.owners[inode], Owner{PID: s.o.Supervisor, Name: "bulkhead supervise"})
		}
	}
	return nil
}

// expectedListener says whether the plan accounts for a socket listening
// in vantage v: only a node's role ports, on its own addresses and over
// their own protocol, its agent's metrics port on the one address the
// plan gives it, and its role exporter's port there with the daemon's
// status page on the loopback that the exporter reads.
func (v *vantage) expectedListener(so Socket) bool {
	if v.node == nil {
		return false
	}
	if so.Proto == "tcp" && v.node.Metrics.IsValid() && so.Local == v.node.Metrics {
		return true
	}
	if e := v.node.Exporter; e != nil && so.Proto == "tcp" && (so.Local == e.Addr || (e.Status.IsValid() && so.Local == e.Status)) {
		return true
	}
	if !slices.Contains(v.node.Listens, plan.Port{Proto: so.Proto, Number: int(so.Local.Port())}) {
		return false
	}
	a := so.Local.Addr()
	if a.IsUnspecified() {
		return true
	}
	return slices.ContainsFunc(v.node.Ifaces, func(i plan.Interface) bool { return i.Addr == a })
}

func (s *session) listenerFindings() []Listener {
	var out []Listener
	for i, v := range s.vs {
		if i == hostIdx {
			continue // the host's own services are the host's business
		}
		for _, so := range s.socks[i] {
			if !so.Listening() {
				continue
			}
			out = append(out, Listener{Node: v.name, Proto: so.Proto, Addr: so.Local,
				Owners: s.owners[so.Inode], Expected: v.expectedListener(so)})
		}
	}
	return out
}

// ports lists the TCP and the UDP ports of interest: the common ones, the
// plan's, and every port something listens on in a node.
func (s *session) ports() (tcp, udp []int) {
	tcp, udp = slices.Clone(CommonPorts), slices.Clone(CommonUDPPorts)
	add := func(proto string, port int) {
		switch proto {
		case "tcp":
			tcp = append(tcp, port)
		case "udp":
			udp = append(udp, port)
		}
	}
	for _, pt := range s.p.Matrix.Ports {
		add(pt.Proto, pt.Number)
	}
	for i := range s.vs {
		if i == hostIdx {
			continue
		}
		for _, so := range s.socks[i] {
			if so.Listening() {
				add(so.Proto, int(so.Local.Port()))
			}
		}
	}
	slices.Sort(tcp)
	slices.Sort(udp)
	return slices.Compact(tcp), slices.Compact(udp)
}

// targets lists the addresses of dst that src aims at, and which of them
// carries an allowed flow: a node's address on a network src shares with
// it, or its public one for the host and outside.
func (s *session) targets(src, dst *vantage) (addrs []netip.Addr, primary netip.Addr) {
	switch {
	case dst.node != nil:
		for _, i := range dst.node.Ifaces {
			addrs = append(addrs, i.Addr)
		}
		primary = addrs[0]
		if src.node == nil {
			if a := dst.node.Addr(plan.NetPublic); a.IsValid() {
				primary = a
			}
			return addrs, primary
		}
		for _, i := range dst.node.Ifaces {
			if slices.Contains(src.nets, i.Network) {
				return addrs, i.Addr
			}
		}
		return addrs, primary
	case dst.name == Host:
		// The host's addresses on the networks src is on: its gateways.
		for _, n := range src.nets {
			addrs = append(addrs, s.gateways[n])
		}
		return addrs, netip.Addr{}
	default:
		return []netip.Addr{dst.addr}, netip.Addr{}
	}
}

// allowed is the expected verdict of a cell, as the plan's matrix has it
// for every vantage, the host included: the host may reach only what it
// publishes, and nothing may reach the host or the outside.
func (s *session) allowed(src, dst *vantage, port plan.Port) bool {
	return s.p.Matrix.Allowed(src.name, dst.name, port)
}

// wanted reports whether the cell from src to dst is in Options.Nodes'
// rows and columns.
func (s *session) wanted(src, dst *vantage) bool {
	return len(s.o.Nodes) == 0 || slices.Contains(s.o.Nodes, src.name) || slices.Contains(s.o.Nodes, dst.name)
}

// cells lays out every cell, on each TCP and each UDP port, with its
// probes, and returns the indexes of the probes that carry an allowed
// flow.
func (s *session) cells(tcp, udp []int) ([]Cell, []Probe, []int) {
	ports := make([]plan.Port, 0, len(tcp)+len(udp))
	for _, n := range tcp {
		ports = append(ports, plan.Port{Proto: "tcp", Number: n})
	}
	for _, n := range udp {
		ports = append(ports, plan.Port{Proto: "udp", Number: n})
	}
	type pair struct {
		si, di  int
		addrs   []netip.Addr
		primary netip.Addr
	}
	// Lay the pairs out first, so that the cells, targets and probes of a
	// hundred-node stack (over 200,000 of each) are three allocations.
	var pairs []pair
	ncells, nprobes := 0, 0
	for si, src := range s.vs {
		for di, dst := range s.vs {
			if si == di || (si == hostIdx && di == outsideIdx) || !s.wanted(src, dst) {
				continue
			}
			addrs, primary := s.targets(src, dst)
			pairs = append(pairs, pair{si, di, addrs, primary})
			ncells += len(ports)
			nprobes += len(ports) * len(addrs)
		}
	}
	cells := make([]Cell, 0, ncells)
	targets := make([]Target, 0, nprobes)
	probes := make([]Probe, 0, nprobes)
	var primaries []int
	for _, pr := range pairs {
		src, dst := s.vs[pr.si], s.vs[pr.di]
		for _, port := range ports {
			c := Cell{From: src.name, To: dst.name, Port: port.Number, Proto: port.Proto, Allow: s.allowed(src, dst, port), dest: pr.di}
			start := len(targets)
			for _, a := range pr.addrs {
				t := Target{Addr: a, probe: len(probes), Primary: c.Allow && a == pr.primary}
				if t.Primary {
					primaries = append(primaries, t.probe)
				}
				probes = append(probes, Probe{From: pr.si, To: netip.AddrPortFrom(a, uint16(port.Number)), UDP: c.udp()})
				targets = append(targets, t)
			}
			c.Targets = targets[start:len(targets):len(targets)]
			cells = append(cells, c)
		}
	}
	return cells, probes, primaries
}

// standIns puts a listener on every probed (address, port) that nothing
// listens on yet, so that a denied cell reads filtered only when something
// really dropped the probe. Without one, a TCP probe that got through
// would read refused, which a denied cell also fails on; but a UDP probe
// would rely on an ICMP port unreachable coming back, which the kernel
// rate-limits per peer (net.ipv4.icmp_ratelimit, 1000 ms with a burst of
// six): as of 2026-11, on kernel 6.18, 50 datagrams to 50 closed ports
// over an open path read 6 refused and 44 filtered.
//
// An address an allowed TCP flow aims at gets none: the role's daemon
// must answer there. An allowed UDP flow's does, when nothing listens:
// no role in the catalog serves UDP, so a UDP flow in a stack file leads
// to whatever its owner runs, whose protocol verify cannot speak, and the
// echo proves the path instead. (A real UDP socket there gets the probe
// datagram itself, and must answer it.)
func (s *session) standIns(l *listeners, cells []Cell) error {
	var errs []error
	for _, udp := range []bool{false, true} {
		dests, addrs := s.standInAddrs(cells, udp)
		hs := make([]*netns.Handle, len(dests))
		for i, di := range dests {
			hs[i] = s.vs[di].h
		}
		errs = append(errs, l.addEach(hs, addrs, udp))
	}
	return errors.Join(errs...)
}

// standInAddrs lists, per destination vantage (by index), the addresses
// that get a stand-in over UDP, or over TCP when udp is false.
func (s *session) standInAddrs(cells []Cell, udp bool) (dests []int, addrs [][]netip.AddrPort) {
	proto := "tcp"
	if udp {
		proto = "udp"
	}
	need := make([]map[netip.AddrPort]bool, len(s.vs))
	for _, c := range cells {
		if c.udp() != udp {
			continue
		}
		for _, t := range c.Targets {
			if need[c.dest] == nil {
				need[c.dest] = map[netip.AddrPort]bool{}
			}
			ap := netip.AddrPortFrom(t.Addr, uint16(c.Port))
			if t.Primary && !udp {
				need[c.dest][ap] = false
			} else if _, seen := need[c.dest][ap]; !seen {
				need[c.dest][ap] = true
			}
		}
	}
	for di, set := range need {
		var as []netip.AddrPort
		for ap, ok := range set {
			if ok && !s.listened(di, ap, proto) {
				as = append(as, ap)
			}
		}
		if len(as) == 0 {
			continue
		}
		slices.SortFunc(as, func(a, b netip.AddrPort) int { return a.Compare(b) })
		dests = append(dests, di)
		addrs = append(addrs, as)
	}
	return dests, addrs
}

// listened reports whether something in vantage vi listens on ap over
// proto.
func (s *session) listened(vi int, ap netip.AddrPort, proto string) bool {
	for _, so := range s.socks[vi] {
		if so.Proto == proto && so.Listening() && so.Local.Port() == ap.Port() &&
			(so.Local.Addr() == ap.Addr() || so.Local.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}
