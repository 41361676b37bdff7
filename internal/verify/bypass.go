package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
)

// Off-stack addresses a node must have no route to: the documentation
// ranges (RFC 5737) stand for the internet. The host's own addresses are
// added at run time. A route lookup sends nothing.
var offStack = []netip.Addr{
	netip.MustParseAddr("192.0.2.1"),
	netip.MustParseAddr("198.51.100.1"),
	netip.MustParseAddr("203.0.113.1"),
}

// bypass runs the checks on the ways around the matrix: the host's routes,
// the nodes' routes, the published ports, and a node sending as another.
func (s *session) bypass(ctx context.Context) []Check {
	return []Check{
		s.subnetsStay(ctx),
		s.noEgress(),
		s.egress(ctx),
		s.publishedEdgeOnly(ctx),
		s.supervisorListens(),
		s.spoofing(ctx),
	}
}

// subnetsStay checks that the host routes every stack subnet onto its own
// bridge, so no stack address can leave the machine by the default route.
func (s *session) subnetsStay(ctx context.Context) Check {
	ch := Check{Name: "subnets stay on this host"}
	var names []string
	for _, n := range s.p.Networks {
		names = append(names, n.Subnet.String())
		for _, a := range []netip.Addr{n.Gateway.Next(), n.LastHost()} {
			dev, err := netns.RouteDev(ctx, "", a.String())
			switch {
			case errors.Is(err, netns.ErrNoRoute):
				// Unreachable is fine: it cannot leave either.
			case err != nil:
				ch.Errors = append(ch.Errors, err.Error())
			case dev != n.Bridge:
				ch.Errors = append(ch.Errors, fmt.Sprintf("the host routes %s (network %s) via %s, not its bridge %s", a, n.Name, dev, n.Bridge))
			}
		}
	}
	ch.OK = len(ch.Errors) == 0
	ch.Detail = fmt.Sprintf("the host routes %s only onto the stack's bridges", strings.Join(names, ", "))
	return ch
}

// noEgress checks, by route lookups inside every node, that no node has a
// route out of the stack: not to the internet, not to the host's own
// addresses. It sends no packet.
func (s *session) noEgress() Check {
	ch := Check{Name: "no route out of the stack"}
	dests := slices.Clone(offStack)
	dests = append(dests, s.hostAddrs()...)
	nodes := s.vs[outsideIdx+1:]
	reach := make([][]string, len(nodes))
	hs := make([]*netns.Handle, len(nodes))
	for i, v := range nodes {
		hs[i] = v.h
	}
	err := netns.DoEach(hs, 2, func(i int) error {
		for _, d := range dests {
			if s.egressTo(nodes[i].node, d) {
				continue // its own egress, which egress checks
			}
			ok, err := routable(d)
			if err != nil {
				return fmt.Errorf("%s: %w", nodes[i].name, err)
			}
			if ok {
				reach[i] = append(reach[i], d.String())
			}
		}
		return nil
	})
	if err != nil {
		ch.Errors = append(ch.Errors, err.Error())
	}
	var answer []string // nodes whose plan gives them a way back to visitors
	for i, r := range reach {
		if gw := nodes[i].node.Gateway; gw.IsValid() {
			// An edge published beyond the host's loopback answers
			// visitors from any address through the host, which
			// forwards nothing new of the stack's but its flows (the
			// matrix checks those).
			answer = append(answer, fmt.Sprintf("%s answers visitors via %s", nodes[i].name, gw))
			continue
		}
		if len(r) > 0 {
			ch.Errors = append(ch.Errors, fmt.Sprintf("%s has a route to %s", nodes[i].name, strings.Join(r, ", ")))
		}
	}
	ch.OK = len(ch.Errors) == 0
	var ds []string
	for _, d := range dests {
		ds = append(ds, d.String())
	}
	ch.Detail = fmt.Sprintf("%d nodes have no route to %s", len(nodes)-len(answer), strings.Join(ds, ", "))
	if len(answer) > 0 {
		ch.Detail += "; " + strings.Join(answer, ", ")
	}
	return ch
}

// egressTo reports whether one of the plan's egress flows takes node n to
// address a.
func (s *session) egressTo(n *plan.Node, a netip.Addr) bool {
	return slices.ContainsFunc(s.p.Egress, func(e plan.Egress) bool { return e.Node == n.Name && e.Target.Addr() == a })
}

// egress proves each of the plan's flows out of the stack by connecting:
// from its own node it reaches its target (a connection or a reset: the
// path is open either way), and from every other node and from the
// outside stand-in it does not.
func (s *session) egress(ctx context.Context) Check {
	ch := Check{Name: "egress only along its flows"}
	if len(s.p.Egress) == 0 {
		ch.OK = true
		ch.Detail = "the plan has no egress: no node reaches beyond the host"
		return ch
	}
	type want struct {
		e    plan.Egress
		v    *vantage
		open bool
	}
	var probes []Probe
	var wants []want
	for _, e := range s.p.Egress {
		for vi := outsideIdx; vi < len(s.vs); vi++ {
			v := s.vs[vi]
			probes = append(probes, Probe{From: vi, To: e.Target})
			wants = append(wants, want{e: e, v: v, open: v.node != nil && v.node.Name == e.Node})
		}
	}
	reached := func(st Status) bool { return st == Open || st == Refused }
	pr := prober{Timeout: s.o.Timeout, Window: s.o.Window}
	st, err := pr.run(ctx, s.handles(), probes)
	if err == nil {
		// A busy host gets a second, longer chance on the allowed ones.
		var again []int
		for i, w := range wants {
			if w.open && !reached(st[i]) {
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			retry := make([]Probe, len(again))
			for k, i := range again {
				retry[k] = probes[i]
			}
			pr.Timeout = s.o.Retry
			var st2 []Status
			if st2, err = pr.run(ctx, s.handles(), retry); err == nil {
				for k, i := range again {
					st[i] = st2[k]
				}
			}
		}
	}
	if err != nil {
		ch.Errors = append(ch.Errors, err.Error())
		return ch
	}
	var details []string
	for _, e := range s.p.Egress {
		closed := 0
		for i, w := range wants {
			if w.e.Name != e.Name {
				continue
			}
			switch {
			case w.open && !reached(st[i]):
				ch.Errors = append(ch.Errors, fmt.Sprintf("egress %s: %s cannot reach %s (%s)", e.Name, w.v.name, e.Target, st[i]))
			case !w.open && reached(st[i]):
				ch.Errors = append(ch.Errors, fmt.Sprintf("egress %s: %s reaches %s (%s), but only %s may", e.Name, w.v.name, e.Target, st[i], e.Node))
			case !w.open:
				closed++
			}
		}
		details = append(details, fmt.Sprintf("%s: %s reaches %s; %d other vantages (every other node and outside) do not", e.Name, e.Node, e.Target, closed))
	}
	ch.OK = len(ch.Errors) == 0
	ch.Detail = strings.Join(details, "; ")
	return ch
}

// hostAddrs lists the host's IPv4 addresses outside the stack's subnets.
func (s *session) hostAddrs() []netip.Addr {
	ifaces, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifaces {
		pfx, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := pfx.Addr()
		if !a.Is4() || a.IsLoopback() || slices.ContainsFunc(s.p.Networks, func(n plan.Network) bool { return n.Subnet.Contains(a) }) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// routable reports whether the calling thread's namespace has a route to
// a. Connecting a UDP socket looks the route up and sends nothing.
func routable(a netip.Addr) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: a.As4()})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		return false, nil
	}
	return false, fmt.Errorf("route lookup %s: %w", a, err)
}

// PublishedCheck is the name of the check that the published ports lead
// only to the edge.
const PublishedCheck = "published ports reach only the edge"

// publishedEdgeOnly connects through each published port and checks where
// the connection lands: on the edge's public address, on the port that is
// published, and nowhere else. Every connection any node has from the
// host's side must be one of those.
func (s *session) publishedEdgeOnly(ctx context.Context) Check {
	ch := Check{Name: PublishedCheck}
	if len(s.p.Published) == 0 {
		ch.OK, ch.Detail = true, "no edge: nothing is published"
		return ch
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var lines []string
	targets := map[string][]netip.AddrPort{} // node -> where the host may land on it
	// The host's sources: a gateway, for a loopback client (see
	// render.HostNftables), or the published address itself.
	gw := map[netip.Addr]bool{}
	for _, a := range s.gateways {
		gw[a] = true
	}
	for _, f := range s.p.Published {
		targets[f.Node] = append(targets[f.Node], f.Target)
		lines = append(lines, fmt.Sprintf("%s -> %s %s", f.Listen, f.Node, f.Target))
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := d.DialContext(dctx, "tcp", f.Listen.String())
		cancel()
		if err != nil {
			ch.Errors = append(ch.Errors, fmt.Sprintf("connect to the published %s: %v", f.Listen, err))
			continue
		}
		held = append(held, c)
		from := netip.MustParseAddrPort(c.LocalAddr().String()).Addr()
		if !from.IsLoopback() {
			gw[from] = true
		}
		if !s.landed(s.p.Node(f.Node), f.Target, from) {
			ch.Errors = append(ch.Errors, fmt.Sprintf("a connection to %s did not arrive at %s %s", f.Listen, f.Node, f.Target))
		}
	}
	// Whatever arrived from the host's side, in any node, must be one of
	// the published targets.
	nodes := s.vs[outsideIdx+1:]
	hs := make([]*netns.Handle, len(nodes))
	for i, v := range nodes {
		hs[i] = v.h
	}
	all, err := socketsAll(hs, true)
	if err != nil {
		ch.Errors = append(ch.Errors, err.Error())
	}
	for i, socks := range all {
		v := nodes[i]
		for _, so := range socks {
			if so.Proto != "tcp" || so.State != tcpEstablishedState || !gw[so.Remote.Addr()] {
				continue
			}
			if !slices.Contains(targets[v.node.Name], so.Local) {
				ch.Errors = append(ch.Errors, fmt.Sprintf("%s has a connection from the host %s on %s", v.name, so.Remote, so.Local))
			}
		}
	}
	ch.OK = len(ch.Errors) == 0
	ch.Detail = strings.Join(lines, ", ")
	return ch
}

// landed waits briefly for the host's connection from address from to
// show up at the edge: an established socket on want from the public
// gateway (a loopback client's, rewritten) or from from itself.
func (s *session) landed(edge *plan.Node, want netip.AddrPort, from netip.Addr) bool {
	var v *vantage
	for _, x := range s.vs {
		if x.node == edge {
			v = x
		}
	}
	gw := s.gateways[plan.NetPublic]
	deadline := time.Now().Add(2 * time.Second)
	for {
		socks, err := sockets(v.h, true)
		if err == nil {
			for _, so := range socks {
				if so.Proto == "tcp" && so.State == tcpEstablishedState && so.Local == want && (so.Remote.Addr() == gw || so.Remote.Addr() == from) {
					return true
				}
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// supervisorListens checks that the supervisor, root on the host,
// listens on no port: the published ports are the kernel's (DNAT in the
// stack's host table), and the supervisor needs none of its own.
func (s *session) supervisorListens() Check {
	ch := Check{Name: "the supervisor listens on no port"}
	if s.o.Supervisor == 0 {
		ch.OK, ch.Detail = true, "no supervisor running"
		return ch
	}
	ch.Detail = fmt.Sprintf("pid %d", s.o.Supervisor)
	for _, so := range s.socks[hostIdx] {
		if !so.Listening() || !slices.ContainsFunc(s.owners[so.Inode], func(o Owner) bool { return o.PID == s.o.Supervisor }) {
			continue
		}
		ch.Errors = append(ch.Errors, fmt.Sprintf("the supervisor (pid %d) listens on %s/%s", s.o.Supervisor, so.Proto, so.Local))
	}
	ch.OK = len(ch.Errors) == 0
	return ch
}
