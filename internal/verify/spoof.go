package verify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// The anti-spoofing check. A node has no NET_RAW, but it can still send as
// an address it does not own: IP_FREEBIND needs no capability, and its own
// firewall matches destinations, not sources. The host's bridge table
// (render.HostNftables, "a node sends as another") is what drops such a
// packet at the node's bridge port. The check sends, from inside each
// node's namespace and with the host's CAP_NET_RAW, a TCP SYN to a peer
// the node may reach, as another node, and watches whether it arrives at
// the peer. It sends the same SYN from the node's own address too, as a
// control: only when that one arrives does a missing spoofed one mean it
// was dropped.

// SpoofCheck names the anti-spoofing check in a report.
const SpoofCheck = "spoofed sources are dropped"

// spoof is one test: node From sends a SYN to peer To at Dst from its own
// address Real, and again as node As, from Claim.
type spoof struct {
	From, As, To string
	Real, Claim  netip.Addr
	Dst          netip.AddrPort
	// Sharp says that To accepts As on Dst's port: were the anti-spoofing
	// table gone, no other wall would stop the spoofed SYN, so the test
	// shows that table itself at work. Otherwise the host's flow table
	// would drop the SYN too.
	Sharp bool
}

func (t spoof) String() string {
	return fmt.Sprintf("%s as %s to %s:%d", t.From, t.As, t.To, t.Dst.Port())
}

// spoofs plans one test for every node that has a TCP flow to a peer (of
// those in nodes, or all when nodes is empty), and lists the nodes that
// have none: their own firewall lets no new connection out, spoofed or
// not, which the matrix shows already. For each node it picks the first
// peer and claimed node that make a sharp test, and otherwise its first
// peer and the first other node on that network.
func spoofs(p *plan.Plan, nodes []string) (tests []spoof, idle []string) {
	for i := range p.Nodes {
		n := &p.Nodes[i]
		if len(nodes) > 0 && !slices.Contains(nodes, n.Name) {
			continue
		}
		var first *spoof
		var sharp *spoof
		for _, peer := range p.Peers(n) {
			f := peer.Flow
			real, dst := n.Addr(f.Network), peer.Node.Addr(f.Network)
			if f.Port.Proto != "tcp" || peer.Node == n || !real.IsValid() || !dst.IsValid() {
				continue
			}
			t := spoof{From: n.Name, To: peer.Node.Name, Real: real, Dst: netip.AddrPortFrom(dst, uint16(f.Port.Number))}
			if as := trusted(p, n, peer.Node, f); as != nil {
				t.As, t.Claim, t.Sharp = as.Name, as.Addr(f.Network), true
				sharp = &t
				break
			}
			if first == nil {
				if as := other(p, f.Network, n, peer.Node); as != nil {
					t.As, t.Claim = as.Name, as.Addr(f.Network)
					first = &t
				}
			}
		}
		switch {
		case sharp != nil:
			tests = append(tests, *sharp)
		case first != nil:
			tests = append(tests, *first)
		default:
			idle = append(idle, n.Name)
		}
	}
	return tests, idle
}

// trusted finds a node, not n and not peer, that a flow like f (same
// destination tier, port and network) lets reach peer.
func trusted(p *plan.Plan, n, peer *plan.Node, f plan.Flow) *plan.Node {
	for _, g := range p.Flows {
		if g.From == spec.Outside || g.To != f.To || g.Port != f.Port || g.Network != f.Network {
			continue
		}
		for _, s := range p.Tier(g.From) {
			if s != n && s != peer {
				return s
			}
		}
	}
	return nil
}

// other finds the first node on network that is neither n nor peer.
func other(p *plan.Plan, network string, n, peer *plan.Node) *plan.Node {
	for i := range p.Nodes {
		s := &p.Nodes[i]
		if s != n && s != peer && s.Addr(network).IsValid() {
			return s
		}
	}
	return nil
}

// spoofing runs the anti-spoofing check on the stack.
func (s *session) spoofing(ctx context.Context) Check {
	ch := Check{Name: SpoofCheck}
	tests, idle := spoofs(s.p, s.o.Nodes)
	byName := map[string]*vantage{}
	for _, v := range s.vs {
		if v.node != nil {
			byName[v.name] = v
		}
	}
	runs := make([]synTest, len(tests))
	for i, t := range tests {
		runs[i] = synTest{from: byName[t.From].h, to: byName[t.To].h, real: t.Real, claim: t.Claim, dst: t.Dst}
	}
	res, err := sendSYNs(ctx, runs, s.o.Retry, s.o.Timeout)
	if err != nil {
		ch.Errors = append(ch.Errors, err.Error())
	}
	for i, t := range tests {
		if i >= len(res) {
			break
		}
		switch r := res[i]; {
		case r.err != nil:
			ch.Errors = append(ch.Errors, fmt.Sprintf("%s: %v", t.From, r.err))
		case r.spoof:
			ch.Errors = append(ch.Errors, fmt.Sprintf("%s sent a SYN as %s (%s) to %s %s and it arrived: the fabric lets %s send as another node",
				t.From, t.As, t.Claim, t.To, t.Dst, t.From))
		case !r.control:
			ch.Errors = append(ch.Errors, fmt.Sprintf("could not test %s: its own SYN to %s %s did not arrive either", t.From, t.To, t.Dst))
		}
	}
	ch.OK = len(ch.Errors) == 0
	var shown []string
	for i, t := range tests {
		if i == 4 {
			shown = append(shown, fmt.Sprintf("and %d more", len(tests)-i))
			break
		}
		shown = append(shown, t.String())
	}
	ch.Detail = fmt.Sprintf("from %s, a SYN sent as another node to a peer was dropped, and one sent as itself arrived: %s",
		Plural(len(tests), "node"), strings.Join(shown, ", "))
	if len(tests) == 0 {
		ch.Detail = "no node has a peer to send to"
	}
	if len(idle) > 0 {
		ch.Detail += fmt.Sprintf("; %s start no connection, so their own firewall drops a spoofed SYN", strings.Join(idle, ", "))
	}
	return ch
}

// synTest is one test as sendSYNs runs it: a SYN from namespace from to
// dst as real, and one as claim, watched for in namespace to.
type synTest struct {
	from, to    *netns.Handle
	real, claim netip.Addr
	dst         netip.AddrPort
}

// synResult says which of a test's two SYNs arrived.
type synResult struct {
	control, spoof bool
	err            error
}

// sendSYNs runs tests: it starts watching every destination, sends each
// test's spoofed SYN and then its control from the sender's namespace,
// and collects what arrives until every control has, and grace more (a
// spoofed SYN sent first on the same path would have arrived by then),
// or until limit has passed.
func sendSYNs(ctx context.Context, tests []synTest, limit, grace time.Duration) ([]synResult, error) {
	out := make([]synResult, len(tests))
	if len(tests) == 0 {
		return out, nil
	}
	// One sniffer per destination address and port, in its namespace.
	type key struct {
		src   netip.Addr
		sport uint16
		seq   uint32
	}
	type which struct {
		test    int
		control bool
	}
	expect := map[key]which{}
	sniffers := map[netip.AddrPort]int{}
	defer func() {
		for _, fd := range sniffers {
			unix.Close(fd)
		}
	}()
	type packet struct {
		from, to netip.AddrPort
		seq      uint32
	}
	fakes := make([]packet, len(tests))
	controls := make([]packet, len(tests))
	var errs []error
	for i, t := range tests {
		if _, ok := sniffers[t.dst]; !ok {
			var fd int
			err := netns.Do(t.to, func() (err error) {
				fd, err = sniff(t.dst)
				return err
			})
			if err != nil {
				return out, fmt.Errorf("watch for SYNs to %s in %s: %w", t.dst, nsName(t.to), err)
			}
			sniffers[t.dst] = fd
		}
		// Source ports above the kernel's ephemeral range (32768-60999 by
		// default), so that no test shares its four-tuple with a real
		// connection; a random sequence number tells the tests apart.
		fakes[i] = packet{netip.AddrPortFrom(t.claim, uint16(61000+rand.IntN(4500))), t.dst, rand.Uint32()}
		controls[i] = packet{netip.AddrPortFrom(t.real, uint16(61000+rand.IntN(4500))), t.dst, rand.Uint32()}
		expect[key{fakes[i].from.Addr(), fakes[i].from.Port(), fakes[i].seq}] = which{i, false}
		expect[key{controls[i].from.Addr(), controls[i].from.Port(), controls[i].seq}] = which{i, true}
	}

	// Send, from each sender's namespace in turn.
	var senders []*netns.Handle
	bySender := map[*netns.Handle][]int{}
	for i, t := range tests {
		if bySender[t.from] == nil {
			senders = append(senders, t.from)
		}
		bySender[t.from] = append(bySender[t.from], i)
	}
	sent := make([]bool, len(tests))
	err := netns.DoEach(senders, 2, func(si int) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket in %s (verify needs CAP_NET_RAW): %w", nsName(senders[si]), err)
		}
		defer unix.Close(fd)
		for _, i := range bySender[senders[si]] {
			to := &unix.SockaddrInet4{Addr: tests[i].dst.Addr().As4()}
			sp, ct := fakes[i], controls[i]
			// EPERM: the node's own firewall dropped the spoofed SYN,
			// which is a drop too.
			if err := unix.Sendto(fd, synPacket(sp.from, sp.to, sp.seq), 0, to); err != nil && !errors.Is(err, unix.EPERM) {
				out[i].err = fmt.Errorf("send a SYN as %s to %s: %w", sp.from.Addr(), sp.to, err)
				continue
			}
			if err := unix.Sendto(fd, synPacket(ct.from, ct.to, ct.seq), 0, to); err != nil {
				out[i].err = fmt.Errorf("send a SYN as itself (%s) to %s: %w", ct.from.Addr(), ct.to, err)
				continue
			}
			sent[i] = true
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}

	// Watch.
	waiting := 0
	for i := range tests {
		if sent[i] {
			waiting++
		}
	}
	polls := make([]unix.PollFd, 0, len(sniffers))
	for _, fd := range sniffers {
		polls = append(polls, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	}
	deadline := time.Now().Add(limit)
	if waiting == 0 {
		deadline = time.Now()
	}
	buf := make([]byte, 256)
	for {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		if _, err := unix.Poll(polls, int(min(wait, 50*time.Millisecond)/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return out, fmt.Errorf("poll: %w", err)
		}
		for _, p := range polls {
			for {
				n, from, err := unix.Recvfrom(int(p.Fd), buf, unix.MSG_DONTWAIT)
				if err != nil {
					break
				}
				if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
					continue
				}
				src, _, seq, ok := parseSYN(buf[:n])
				if !ok {
					continue
				}
				w, ok := expect[key{src.Addr(), src.Port(), seq}]
				if !ok {
					continue
				}
				delete(expect, key{src.Addr(), src.Port(), seq})
				if w.control {
					out[w.test].control = true
					if waiting--; waiting == 0 {
						deadline = time.Now().Add(grace)
					}
				} else {
					out[w.test].spoof = true
				}
			}
		}
	}
	return out, errors.Join(errs...)
}

// sniff opens a packet socket in the calling thread's namespace that sees
// every TCP SYN to dst as it comes in from the wire, before the
// namespace's own firewall. A filter in the kernel passes nothing else,
// so a busy node costs nothing.
func sniff(dst netip.AddrPort) (int, error) {
	// Protocol 0 receives nothing until bind, so nothing arrives before
	// the filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	a := dst.Addr().As4()
	// On a SOCK_DGRAM packet socket, offset 0 is the IP header.
	const drop = 12
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 9},                               // 0: protocol
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.IPPROTO_TCP, Jf: drop - 2}, // 1
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 16},                              // 2: destination
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: binary.BigEndian.Uint32(a[:]), Jf: drop - 4},
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 6},                      // 4: fragment offset
		{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x1fff, Jt: drop - 6}, // 5: a later fragment
		{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 0},                     // 6: X = header length
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: 2},                      // 7: destination port
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(dst.Port()), Jf: drop - 9},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_IND, K: 13},                    // 9: TCP flags
		{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x02, Jf: drop - 11}, // 10: SYN
		{Code: unix.BPF_RET | unix.BPF_K, K: 256},                                 // 11: keep the headers
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},                                   // 12: drop
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attach filter: %w", err)
	}
	// Room for the SYNs of a hundred nodes' tests at once.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP)}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket: %w", err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// synPacket builds an IPv4 packet that carries a TCP SYN from src to dst
// with sequence number seq, as a raw socket with IP_HDRINCL sends it.
func synPacket(src, dst netip.AddrPort, seq uint32) []byte {
	b := make([]byte, 40)
	b[0] = 0x45 // IPv4, 20-byte header
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], 0x4000) // don't fragment
	b[8] = 64                                 // TTL
	b[9] = unix.IPPROTO_TCP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], ^checksum(0, b[:20]))
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12] = 5 << 4 // 20-byte header
	t[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	// The checksum covers a pseudo-header: addresses, protocol, length.
	var pseudo [12]byte
	copy(pseudo[0:], s[:])
	copy(pseudo[4:], d[:])
	pseudo[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(t)))
	binary.BigEndian.PutUint16(t[16:], ^checksum(checksum(0, pseudo[:]), t))
	return b
}

// checksum adds b to the ones' complement sum sum, as IP and TCP do.
func checksum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// parseSYN reads an IPv4 packet that carries a TCP segment with SYN set
// and ACK not: a connection's first packet.
func parseSYN(b []byte) (src, dst netip.AddrPort, seq uint32, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return src, dst, 0, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+20 {
		return src, dst, 0, false
	}
	t := b[ihl:]
	if t[13]&0x12 != 0x02 {
		return src, dst, 0, false
	}
	src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), binary.BigEndian.Uint16(t[0:]))
	dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), binary.BigEndian.Uint16(t[2:]))
	return src, dst, binary.BigEndian.Uint32(t[4:]), true
}
