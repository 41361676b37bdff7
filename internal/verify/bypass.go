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
	for i, r := range reach {
		if len(r) > 0 {
			ch.Errors = append(ch.Errors, fmt.Sprintf("%s has a route to %s", nodes[i].name, strings.Join(r, ", ")))
		}
	}
	ch.OK = len(ch.Errors) == 0
	var ds []string
	for _, d := range dests {
		ds = append(ds, d.String())
	}
	ch.Detail = fmt.Sprintf("%d nodes have no route to %s", len(s.vs)-2, strings.Join(ds, ", "))
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

// publishedEdgeOnly connects through each published port and checks where
// the connection lands: on the edge's public address, on the port that is
// published, and nowhere else. Every connection any node has from the
// host's side must be one of those.
func (s *session) publishedEdgeOnly(ctx context.Context) Check {
	ch := Check{Name: "published ports reach only the edge"}
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
	for _, f := range s.p.Published {
		addr := f.Listen
		if addr.Addr().IsUnspecified() {
			addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), addr.Port())
		}
		targets[f.Node] = append(targets[f.Node], f.Target)
		lines = append(lines, fmt.Sprintf("%s -> %s %s", f.Listen, f.Node, f.Target))
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := d.DialContext(dctx, "tcp", addr.String())
		cancel()
		if err != nil {
			ch.Errors = append(ch.Errors, fmt.Sprintf("connect to the published %s: %v", f.Listen, err))
			continue
		}
		held = append(held, c)
		if !s.landed(s.p.Node(f.Node), f.Target) {
			ch.Errors = append(ch.Errors, fmt.Sprintf("a connection to %s did not arrive at %s %s", f.Listen, f.Node, f.Target))
		}
	}
	// Whatever arrived from the host's side, in any node, must be one of
	// the published targets.
	gw := map[netip.Addr]bool{}
	for _, a := range s.gateways {
		gw[a] = true
	}
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

// landed waits briefly for the forwarder's connection to show up at the
// edge: an established socket on want from the public gateway.
func (s *session) landed(edge *plan.Node, want netip.AddrPort) bool {
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
				if so.Proto == "tcp" && so.State == tcpEstablishedState && so.Local == want && so.Remote.Addr() == gw {
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

// supervisorListens checks that the process publishing the stack listens
// on the published addresses and nothing else.
func (s *session) supervisorListens() Check {
	ch := Check{Name: "the supervisor listens only on the published ports"}
	var want []netip.AddrPort
	var listed []string
	for _, f := range s.p.Published {
		want = append(want, f.Listen)
		listed = append(listed, f.Listen.String())
	}
	ch.Detail = strings.Join(listed, " and ")
	if s.o.Supervisor == 0 {
		ch.OK, ch.Detail = true, "no supervisor running: nothing is published"
		return ch
	}
	found := 0
	for _, so := range s.socks[hostIdx] {
		if !so.Listening() || !slices.ContainsFunc(s.owners[so.Inode], func(o Owner) bool { return o.PID == s.o.Supervisor }) {
			continue
		}
		if so.Proto == "tcp" && slices.Contains(want, so.Local) {
			found++
			continue
		}
		ch.Errors = append(ch.Errors, fmt.Sprintf("the supervisor (pid %d) also listens on %s/%s", s.o.Supervisor, so.Proto, so.Local))
	}
	if found < len(want) {
		ch.Errors = append(ch.Errors, fmt.Sprintf("the supervisor (pid %d) listens on %d of the %d published ports", s.o.Supervisor, found, len(want)))
	}
	ch.OK = len(ch.Errors) == 0
	return ch
}
