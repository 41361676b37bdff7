package verify

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
)

// sockets lists the TCP and UDP sockets, IPv4 and IPv6, of namespace h.
func sockets(h *netns.Handle) ([]Socket, error) {
	var out []Socket
	err := netns.Do(h, func() error {
		for _, t := range []struct{ file, proto string }{
			{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"},
		} {
			// thread-self: this thread is in h; the process as a whole is not.
			ss, err := readSockets("/proc/thread-self/net/"+t.file, t.proto)
			if err != nil {
				return err
			}
			out = append(out, ss...)
		}
		return nil
	})
	return out, err
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

// owners maps socket inodes to the processes that hold them, reading every
// process's file descriptors once.
func owners() map[uint64][]Owner {
	out := map[uint64][]Owner{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or a kernel thread
		}
		var name string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if name == "" {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				name = strings.TrimSpace(string(comm))
			}
			have := out[inode]
			if len(have) == 0 || have[len(have)-1].PID != pid {
				out[inode] = append(have, Owner{PID: pid, Name: name})
			}
		}
	}
	return out
}
