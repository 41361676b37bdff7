package verify

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// Socket is one socket as the kernel lists it in a namespace's /proc/net
// tables.
type Socket struct {
	Proto  string         `json:"proto"` // tcp or udp
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	State  int            `json:"-"` // the kernel's TCP state number
	Inode  uint64         `json:"-"`
}

// Listening reports whether s accepts connections (TCP) or datagrams from
// anyone (an unconnected, bound UDP socket).
func (s Socket) Listening() bool {
	if s.Proto == "tcp" {
		return s.State == tcpListen
	}
	return s.State == tcpClose && s.Remote.Port() == 0
}

const (
	tcpEstablishedState = 1
	tcpListen           = 10
	tcpClose            = 7
)

// sockets lists the TCP and (unless tcpOnly) UDP sockets, IPv4 and IPv6,
// of namespace h.
func sockets(h *netns.Handle, tcpOnly bool) ([]Socket, error) {
	var out []Socket
	err := netns.Do(h, func() (err error) {
		out, err = socketsHere(tcpOnly)
		return err
	})
	return out, err
}

// socketsAll lists the sockets of every namespace in hs: TCP only when
// tcpOnly. Each file walks the kernel's whole socket hash table, which
// all namespaces share, so what is not needed is not read.
func socketsAll(hs []*netns.Handle, tcpOnly bool) ([][]Socket, error) {
	out := make([][]Socket, len(hs))
	err := netns.DoEach(hs, 2, func(i int) (err error) {
		out[i], err = socketsHere(tcpOnly)
		return err
	})
	return out, err
}

// listeningAll lists the TCP sockets that listen and every UDP socket of
// each namespace in hs. The TCP ones come from the kernel's sock_diag,
// asked for listening sockets only, which it finds without the walk of
// the whole connection hash table (262,144 buckets here, shared by all
// namespaces) that reading /proc/net/tcp costs.
func listeningAll(hs []*netns.Handle) ([][]Socket, error) {
	out := make([][]Socket, len(hs))
	err := netns.DoEach(hs, 2, func(i int) error {
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			ss, err := tcpListeners(family)
			if err != nil {
				return err
			}
			out[i] = append(out[i], ss...)
		}
		for _, f := range []string{"udp", "udp6"} {
			ss, err := readSockets("/proc/thread-self/net/"+f, "udp")
			if err != nil {
				return err
			}
			out[i] = append(out[i], ss...)
		}
		return nil
	})
	return out, err
}

// diagRequest is sock_diag's inet_diag_req_v2 for a dump of one family's
// TCP sockets in the states whose bits are set.
type diagRequest struct {
	family uint8
	states uint32
}

func (r *diagRequest) Len() int { return 56 }

func (r *diagRequest) Serialize() []byte {
	b := make([]byte, r.Len())
	b[0] = r.family
	b[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], r.states)
	return b
}

// tcpListeners lists the calling thread's namespace's listening TCP
// sockets of one address family. A kernel without IPv6 has none of it.
func tcpListeners(family uint8) ([]Socket, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
	req.AddData(&diagRequest{family: family, states: 1 << tcpListen})
	msgs, err := req.Execute(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY)
	if err != nil {
		if family == unix.AF_INET6 && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT)) {
			return nil, nil
		}
		return nil, fmt.Errorf("list listening sockets (sock_diag): %w", err)
	}
	var out []Socket
	for _, m := range msgs {
		// inet_diag_msg: family, state, timer, retrans; the socket id
		// (ports, then 16 bytes per address, big-endian); then expires,
		// queues, uid and inode.
		if len(m) < 72 || m[0] != family {
			return nil, fmt.Errorf("list listening sockets (sock_diag): a message of %d bytes", len(m))
		}
		n := 4
		if family == unix.AF_INET6 {
			n = 16
		}
		src, _ := netip.AddrFromSlice(m[8 : 8+n])
		dst, _ := netip.AddrFromSlice(m[24 : 24+n])
		out = append(out, Socket{
			Proto:  "tcp",
			Local:  netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(m[4:])),
			Remote: netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(m[6:])),
			State:  int(m[1]),
			Inode:  uint64(binary.NativeEndian.Uint32(m[68:])),
		})
	}
	return out, nil
}

// socketsHere lists the sockets of the calling thread's namespace.
func socketsHere(tcpOnly bool) ([]Socket, error) {
	var out []Socket
	for _, t := range []struct{ file, proto string }{
		{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"},
	} {
		if tcpOnly && t.proto != "tcp" {
			continue
		}
		// thread-self: this thread's namespace, not the process's.
		ss, err := readSockets("/proc/thread-self/net/"+t.file, t.proto)
		if err != nil {
			return nil, err
		}
		out = append(out, ss...)
	}
	return out, nil
}

func readSockets(path, proto string) ([]Socket, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil // no IPv6 in this kernel
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Socket
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		local, err1 := parseHexAddr(fs[1])
		remote, err2 := parseHexAddr(fs[2])
		state, err3 := strconv.ParseUint(fs[3], 16, 8)
		inode, err4 := strconv.ParseUint(fs[9], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("%s: cannot read line %q", path, sc.Text())
		}
		out = append(out, Socket{Proto: proto, Local: local, Remote: remote, State: int(state), Inode: inode})
	}
	return out, sc.Err()
}

// parseHexAddr reads the kernel's "0100007F:0016" form: the address as
// 32-bit words in host byte order, then the port.
func parseHexAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", a)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// Owner is a process that holds a socket.
type Owner struct {
	PID  int    `json:"pid"`
	Name string `json:"process"`
}

// owners finds the processes that hold the sockets in want, per network
// namespace inode. It reads each process's namespace link, and the file
// descriptors only of processes in a namespace that still has a socket to
// account for, so a stack of a hundred nodes costs one pass over /proc and
// a few descriptor tables per node. Only the first holder of a socket is
// named (for a forking daemon, its parent).
func owners(want map[uint64]map[uint64]bool) map[uint64][]Owner {
	out := map[uint64][]Owner{}
	left := 0
	for _, socks := range want {
		left += len(socks)
	}
	procs, _ := os.ReadDir("/proc")
	pids := make([]int, 0, len(procs))
	for _, p := range procs {
		if pid, err := strconv.Atoi(p.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	// This process first: verify's own sockets live in namespaces its
	// main thread is not in.
	self := os.Getpid()
	mine := socketInodes(self)
	for _, socks := range want {
		for _, inode := range mine {
			if socks[inode] {
				comm, _ := os.ReadFile("/proc/self/comm")
				out[inode] = []Owner{{PID: self, Name: strings.TrimSpace(string(comm))}}
				delete(socks, inode)
				left--
			}
		}
	}
	slices.Sort(pids) // parents before the children they fork, mostly
	for _, pid := range pids {
		if left == 0 {
			break
		}
		dir := "/proc/" + strconv.Itoa(pid)
		link, err := os.Readlink(dir + "/ns/net")
		if err != nil {
			continue // gone, or a kernel thread
		}
		ns, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "net:["), "]"), 10, 64)
		if err != nil || len(want[ns]) == 0 {
			continue
		}
		for _, inode := range socketInodes(pid) {
			if !want[ns][inode] {
				continue
			}
			comm, _ := os.ReadFile(dir + "/comm")
			out[inode] = []Owner{{PID: pid, Name: strings.TrimSpace(string(comm))}}
			delete(want[ns], inode)
			left--
		}
	}
	return out
}

// socketInodes lists the sockets a process holds.
func socketInodes(pid int) []uint64 {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64); err == nil {
			out = append(out, inode)
		}
	}
	return out
}
