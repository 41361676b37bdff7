package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A TCP probe is half-open, the way a SYN scan is: verify sends the SYN
// itself from a raw socket in the source's namespace and reads what comes
// back there, a SYN-ACK (open) or a reset (refused), or an ICMP error
// about it. The SYN is a real packet through the real path, so both
// firewalls and the fabric judge it and conntrack tracks it as they would
// a connect; only what verify needs no longer costs a socket: as of
// 2026-11 a socket, a connect and a close were most of verify's CPU at a
// hundred nodes. The source's kernel answers the SYN-ACK with a reset (it
// has no socket for it), which ends the half-open connection at the far
// end too, so no listener's queue fills.
//
// Raw sockets see a namespace's packets only once its own input firewall
// has let them in, so a reply that firewall drops is not seen, as a
// connect would not see it.
//
// A UDP probe is a datagram from one unconnected UDP socket per source
// namespace, not one connected socket each: an echo is read from it by
// the address it came from, and an ICMP error from the raw ICMP socket by
// the datagram it quotes. The socket does not ask for ICMP errors
// (IP_RECVERR): on an unconnected socket an error would fail the next
// send, whichever probe it was about. Its port is one the kernel picks
// from the ephemeral range, as for a connected socket.

// synSock is the raw sockets a worker probes from in one namespace.
type synSock struct {
	tcp     int // sends SYNs (with their IP header) and reads the replies
	icmp    int // reads ICMP errors about them
	udp     int // sends UDP probes and reads their echoes
	route   int // a UDP socket that asks the kernel for source addresses
	port    uint16
	udpPort uint16
	seq     uint32
	// srcs holds the source address the kernel picks for each destination
	// (an invalid one when it has no route).
	srcs map[netip.Addr]netip.Addr
	// drops counts replies the kernel dropped because the socket's queue
	// was full: a lost reply would read as filtered, so probes whose
	// replies may have been lost are done again.
	drops uint32
	lost  bool
}

// synKey names a probe in flight: from the vantage at index from to dst,
// over UDP or TCP.
type synKey struct {
	from int
	dst  netip.AddrPort
	udp  bool
}

// syns are a worker's half-open probes.
type syns struct {
	socks   map[int]*synSock
	order   []int // vantages in the order their sockets opened
	pending map[synKey]int
	polls   []unix.PollFd
	buf     []byte
}

func newSyns() *syns {
	return &syns{socks: map[int]*synSock{}, pending: map[synKey]int{}, buf: make([]byte, 256)}
}

func (s *syns) close() {
	for _, ss := range s.socks {
		if ss != nil {
			unix.Close(ss.tcp)
			unix.Close(ss.icmp)
			unix.Close(ss.udp)
			unix.Close(ss.route)
		}
	}
}

// open returns the raw sockets of vantage from, opening them in the
// calling thread's namespace, which must be from's, the first time. It
// returns nil, and remembers that, when this process may not open raw
// sockets there (a probe pod without CAP_NET_RAW): its probes connect.
func (s *syns) open(from int) (*synSock, error) {
	if ss, ok := s.socks[from]; ok {
		return ss, nil
	}
	ss := &synSock{port: uint16(synPortMin + rand.IntN(synPortRange)), seq: rand.Uint32(), srcs: map[netip.Addr]netip.Addr{}}
	var err error
	ss.tcp, err = rawSocket(unix.IPPROTO_TCP, tcpReplies(ss.port))
	if errors.Is(err, unix.EPERM) {
		s.socks[from] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(ss.tcp, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
		unix.Close(ss.tcp)
		return nil, fmt.Errorf("raw socket: IP_HDRINCL: %w", err)
	}
	if ss.icmp, err = rawSocket(unix.IPPROTO_ICMP, unreachables); err != nil {
		unix.Close(ss.tcp)
		return nil, err
	}
	if ss.udp, ss.udpPort, err = udpSocket(); err != nil {
		unix.Close(ss.tcp)
		unix.Close(ss.icmp)
		return nil, err
	}
	if ss.route, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		unix.Close(ss.tcp)
		unix.Close(ss.icmp)
		unix.Close(ss.udp)
		return nil, fmt.Errorf("socket: %w", err)
	}
	s.socks[from] = ss
	s.order = append(s.order, from)
	return ss, nil
}

// Source ports above the kernel's ephemeral range (32768-60999 by default),
// so that no probe shares its four-tuple with a real connection.
const (
	synPortMin   = 61000
	synPortRange = 4500
)

// synRcvBuf is the receive buffer of the raw sockets, in bytes: room for
// the answers of a whole window from one namespace, though most probes
// are never answered (a firewall drops them).
var synRcvBuf = 16 << 20

// rawSocket opens a raw IPv4 socket for proto that passes only what the
// filter prog keeps, with room to queue the replies of a whole window.
func rawSocket(proto int, prog []unix.SockFilter) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("raw socket: %w", err)
	}
	// Packets that arrived before the filter was attached would be read
	// and, not matching any probe, ignored.
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attach filter: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, synRcvBuf)
	return fd, nil
}

// udpSocket opens the UDP socket a namespace's UDP probes share, bound to
// a port the kernel picks.
func udpSocket() (int, uint16, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, synRcvBuf)
	var sa unix.Sockaddr
	if err = unix.Bind(fd, &unix.SockaddrInet4{}); err == nil {
		sa, err = unix.Getsockname(fd)
	}
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("bind a UDP socket: %w", err)
	}
	return fd, uint16(sa.(*unix.SockaddrInet4).Port), nil
}

// tcpReplies passes TCP segments to port, the probes' source port. A raw
// socket's packets start with the IP header.
func tcpReplies(port uint16) []unix.SockFilter {
	return []unix.SockFilter{
		{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 0},                          // 0: X = header length
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: 2},                           // 1: destination port
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(port), Jt: 0, Jf: 1}, // 2
		{Code: unix.BPF_RET | unix.BPF_K, K: 128},                                       // 3: keep the headers
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},                                         // 4: drop
	}
}

// unreachables passes ICMP destination unreachable messages.
var unreachables = []unix.SockFilter{
	{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 0},                             // 0: X = header length
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_IND, K: 0},                              // 1: ICMP type
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: icmpDestUnreach, Jt: 0, Jf: 1}, // 2
	{Code: unix.BPF_RET | unix.BPF_K, K: 256},                                          // 3: the headers and the packet quoted
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},                                            // 4: drop
}

// send sends the SYN of probe idx from vantage from, whose namespace the
// calling thread is in, to dst, or with udp its datagram. A Status other
// than Unknown is a final answer (the route or the namespace's own
// firewall refused to send it); ok is false when the probe must use a
// socket of its own: from has no raw socket, or the same probe is in
// flight already, whose answer would not tell the two apart.
func (s *syns) send(from, idx int, dst netip.AddrPort, udp bool) (st Status, ok bool, err error) {
	if _, dup := s.pending[synKey{from, dst, udp}]; dup {
		return Unknown, false, nil
	}
	ss, err := s.open(from)
	if err != nil || ss == nil {
		return Unknown, false, err
	}
	if udp {
		err := unix.Sendto(ss.udp, udpProbe, 0, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()})
		if err != nil {
			if st := classify(err); st != Unknown {
				return st, true, nil
			}
			return Unknown, true, fmt.Errorf("send: %w", err)
		}
		return s.wait(synKey{from, dst, true}, idx), true, nil
	}
	src, ok := ss.srcs[dst.Addr()]
	if !ok {
		if src, err = source(ss.route, dst.Addr()); err != nil {
			if st := classify(err); st != Unknown {
				return st, true, nil
			}
			return Unknown, true, fmt.Errorf("route to %s: %w", dst.Addr(), err)
		}
		ss.srcs[dst.Addr()] = src
	}
	if !src.IsValid() {
		return Unreachable, true, nil
	}
	pkt := synPacket(netip.AddrPortFrom(src, ss.port), dst, ss.seq)
	err = unix.Sendto(ss.tcp, pkt, 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()})
	if err != nil {
		if st := classify(err); st != Unknown {
			return st, true, nil
		}
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			// Dropped on the way out for want of room, as a SYN can be
			// on any busy host: unanswered, like any lost SYN.
			return s.wait(synKey{from, dst, false}, idx), true, nil
		}
		return Unknown, true, fmt.Errorf("send a SYN to %s: %w", dst, err)
	}
	return s.wait(synKey{from, dst, false}, idx), true, nil
}

func (s *syns) wait(k synKey, idx int) Status {
	s.pending[k] = idx
	return Unknown
}

// source asks the kernel which source address it would send from to
// dst, by connecting the UDP socket fd (which sends nothing), and then
// disconnects it: a socket connected again without that keeps the source
// address it was given first. ENETUNREACH means no route.
func source(fd int, dst netip.Addr) (netip.Addr, error) {
	defer disconnect(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: dst.As4()}); err != nil {
		return netip.Addr{}, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, err
	}
	in, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.Addr{}, fmt.Errorf("source address to %s: %T", dst, sa)
	}
	return netip.AddrFrom4(in.Addr), nil
}

// disconnect dissolves a UDP socket's association, and with it the source
// address it chose: a connect to an AF_UNSPEC address, which x/sys/unix
// has no Sockaddr for.
func disconnect(fd int) {
	sa := unix.RawSockaddrInet4{Family: unix.AF_UNSPEC}
	unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
}

// done forgets the probe from vantage from to dst: its time is up.
func (s *syns) done(from int, dst netip.AddrPort, udp bool) {
	delete(s.pending, synKey{from, dst, udp})
}

// drain reads every reply waiting on the raw sockets into out: a SYN-ACK
// is open, a reset refused, an ICMP port unreachable refused and the
// other fatal ones unreachable, as a connect reads them.
func (s *syns) drain(out []Status) {
	if len(s.pending) == 0 {
		return
	}
	ps := s.polls[:0]
	for _, from := range s.order {
		ss := s.socks[from]
		ps = append(ps, unix.PollFd{Fd: int32(ss.tcp), Events: unix.POLLIN}, unix.PollFd{Fd: int32(ss.icmp), Events: unix.POLLIN},
			unix.PollFd{Fd: int32(ss.udp), Events: unix.POLLIN})
	}
	s.polls = ps
	if n, err := unix.Poll(ps, 0); err != nil || n == 0 {
		return
	}
	for i, from := range s.order {
		ss := s.socks[from]
		tcp, icmp, udp := ps[3*i].Revents&unix.POLLIN != 0, ps[3*i+1].Revents&unix.POLLIN != 0, ps[3*i+2].Revents&unix.POLLIN != 0
		if tcp {
			s.read(from, ss, ss.tcp, out)
		}
		if icmp {
			s.read(from, ss, ss.icmp, out)
		}
		if udp {
			s.read(from, ss, ss.udp, out)
		}
		// A queue that overflowed has something to read, so its drops
		// are counted here.
		if tcp || icmp || udp {
			if d := drops(ss.tcp) + drops(ss.icmp) + drops(ss.udp); d != ss.drops {
				ss.drops, ss.lost = d, true
			}
		}
	}
}

func (s *syns) read(from int, ss *synSock, fd int, out []Status) {
	for {
		n, sa, err := unix.Recvfrom(fd, s.buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		var k synKey
		var st Status
		var ok bool
		switch fd {
		case ss.tcp:
			k.dst, st, ok = ss.parseReply(s.buf[:n])
		case ss.icmp:
			k.dst, k.udp, st, ok = ss.parseUnreachable(s.buf[:n])
		case ss.udp:
			// Any answer from the address is open, as on a connected
			// socket.
			in, isIn := sa.(*unix.SockaddrInet4)
			if isIn {
				k.dst, k.udp, st, ok = netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)), true, Open, true
			}
		}
		if !ok {
			continue
		}
		k.from = from
		if idx, ok := s.pending[k]; ok {
			out[idx] = st
			delete(s.pending, k)
		}
	}
}

// parseReply reads a TCP segment that answers one of ss's SYNs: a SYN-ACK
// or a reset that acknowledges it. peer is the address the SYN went to.
func (ss *synSock) parseReply(b []byte) (peer netip.AddrPort, st Status, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return peer, Unknown, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+20 {
		return peer, Unknown, false
	}
	t := b[ihl:]
	if binary.BigEndian.Uint16(t[2:]) != ss.port || binary.BigEndian.Uint32(t[8:]) != ss.seq+1 {
		return peer, Unknown, false
	}
	const syn, rst, ack = 0x02, 0x04, 0x10
	switch flags := t[13]; {
	case flags&(syn|ack|rst) == syn|ack:
		st = Open
	case flags&(rst|ack) == rst|ack:
		st = Refused
	default:
		return peer, Unknown, false
	}
	peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), binary.BigEndian.Uint16(t[0:]))
	return peer, st, true
}

// parseUnreachable reads an ICMP destination unreachable that quotes one
// of ss's SYNs or UDP probes. The codes a connected socket treats as fatal
// read as it reads them; the others are not an answer.
func (ss *synSock) parseUnreachable(b []byte) (peer netip.AddrPort, udp bool, st Status, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_ICMP {
		return peer, false, Unknown, false
	}
	ihl := int(b[0]&0x0f) * 4
	if len(b) < ihl+8+20 || b[ihl] != icmpDestUnreach {
		return peer, false, Unknown, false
	}
	code := b[ihl+1]
	q := b[ihl+8:] // the quoted packet: our probe's IP header and 8 bytes of TCP or UDP
	qihl := int(q[0]&0x0f) * 4
	if q[0]>>4 != 4 || qihl < 20 || len(q) < qihl+8 {
		return peer, false, Unknown, false
	}
	t := q[qihl:]
	switch q[9] {
	case unix.IPPROTO_TCP:
		if binary.BigEndian.Uint16(t[0:]) != ss.port || binary.BigEndian.Uint32(t[4:]) != ss.seq {
			return peer, false, Unknown, false
		}
	case unix.IPPROTO_UDP:
		if binary.BigEndian.Uint16(t[0:]) != ss.udpPort {
			return peer, false, Unknown, false
		}
		udp = true
	default:
		return peer, false, Unknown, false
	}
	// As the kernel's icmp_err_convert has them for a connecting socket.
	switch code {
	case 3: // port unreachable: ECONNREFUSED
		st = Refused
	case 0, 1, 6, 9, 10, 13, 14, 15: // network or host unreachable, unknown, prohibited, filtered
		st = Unreachable
	default:
		return peer, false, Unknown, false
	}
	peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(q[16:20])), binary.BigEndian.Uint16(t[2:]))
	return peer, udp, st, true
}

// drops reads how many packets the kernel dropped at fd's full queue
// (SO_MEMINFO, whose ninth number is SK_MEMINFO_DROPS).
func drops(fd int) uint32 {
	var mem [9]uint32
	size := uint32(unsafe.Sizeof(mem))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return 0
	}
	return mem[8]
}

// icmpDestUnreach is ICMP's type for destination unreachable.
const icmpDestUnreach = 3
