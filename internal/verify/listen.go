package verify

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// listeners are TCP listening sockets that verify itself holds in the
// stack's namespaces: the stand-ins on denied ports, so that "blocked"
// means a firewall dropped the probe and not merely that nothing listens.
type listeners struct {
	fds []int
}

// add listens on every address in addrs inside h. An address something
// already listens on is skipped: it needs no stand-in.
func (l *listeners) add(h *netns.Handle, addrs []netip.AddrPort) error {
	return l.addEach([]*netns.Handle{h}, [][]netip.AddrPort{addrs})
}

// addEach listens on addrs[i] inside hs[i], for every i.
func (l *listeners) addEach(hs []*netns.Handle, addrs [][]netip.AddrPort) error {
	fds := make([][]int, len(hs))
	err := netns.DoEach(hs, 2, func(i int) error {
		for _, a := range addrs[i] {
			fd, err := listenTCP(a)
			if errors.Is(err, unix.EADDRINUSE) {
				continue
			}
			if err != nil {
				return fmt.Errorf("listen on %s in %s: %w", a, nsName(hs[i]), err)
			}
			fds[i] = append(fds[i], fd)
		}
		return nil
	})
	for _, f := range fds {
		l.fds = append(l.fds, f...)
	}
	return err
}

func listenTCP(a netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	// The probes connect and close at once: the kernel completes the
	// handshakes, and the backlog holds them until the socket closes.
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Close removes every listener.
func (l *listeners) Close() {
	for _, fd := range l.fds {
		unix.Close(fd)
	}
	l.fds = nil
}
