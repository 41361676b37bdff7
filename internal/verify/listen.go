package verify

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// listeners are listening sockets that verify itself holds in the stack's
// namespaces: the stand-ins on denied ports, so that "blocked" means a
// firewall dropped the probe and not merely that nothing listens. A TCP
// stand-in needs nobody behind it: the kernel completes the handshake. A
// UDP one must answer, so each has a goroutine that echoes what it gets.
type listeners struct {
	fds  []int
	udp  []net.PacketConn
	echo sync.WaitGroup
}

// add listens on TCP on every address in addrs inside h. An address
// something already listens on is skipped: it needs no stand-in.
func (l *listeners) add(h *netns.Handle, addrs []netip.AddrPort) error {
	return l.addEach([]*netns.Handle{h}, [][]netip.AddrPort{addrs}, false)
}

// addUDP is add for UDP: an echo on every address in addrs inside h.
func (l *listeners) addUDP(h *netns.Handle, addrs []netip.AddrPort) error {
	return l.addEach([]*netns.Handle{h}, [][]netip.AddrPort{addrs}, true)
}

// addEach listens on addrs[i] inside hs[i], for every i: on UDP, with an
// echo, when udp holds, and on TCP otherwise.
func (l *listeners) addEach(hs []*netns.Handle, addrs [][]netip.AddrPort, udp bool) error {
	fds := make([][]int, len(hs))
	listen, proto := listenTCP, "tcp"
	if udp {
		listen, proto = bindUDP, "udp"
	}
	err := netns.DoEach(hs, 2, func(i int) error {
		for _, a := range addrs[i] {
			fd, err := listen(a)
			if errors.Is(err, unix.EADDRINUSE) {
				continue
			}
			if err != nil {
				return fmt.Errorf("listen on %s/%s in %s: %w", a, proto, nsName(hs[i]), err)
			}
			fds[i] = append(fds[i], fd)
		}
		return nil
	})
	var errs []error
	for _, f := range fds {
		if !udp {
			l.fds = append(l.fds, f...)
			continue
		}
		for _, fd := range f {
			if err := l.echoOn(fd); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(append(errs, err)...)
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

func bindUDP(a netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// echoOn answers every datagram that arrives on the bound UDP socket fd
// with the same bytes, until Close. The socket belongs to its namespace
// for good, so the goroutine reading it runs on any thread; Go's poller
// waits on it. The answer is never larger than the question: a stand-in
// must not amplify anything during its brief life.
func (l *listeners) echoOn(fd int) error {
	f := os.NewFile(uintptr(fd), "udp stand-in")
	c, err := net.FilePacketConn(f) // a duplicate of fd
	f.Close()
	if err != nil {
		return fmt.Errorf("udp stand-in: %w", err)
	}
	l.udp = append(l.udp, c)
	l.echo.Add(1)
	go func() {
		defer l.echo.Done()
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// Transient (no memory): an unbound peer's ICMP error is
				// not reported on a socket that is not connected.
				continue
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return nil
}

// Close removes every listener, and waits for the echoes to stop.
func (l *listeners) Close() {
	for _, fd := range l.fds {
		unix.Close(fd)
	}
	l.fds = nil
	for _, c := range l.udp {
		c.Close()
	}
	l.udp = nil
	l.echo.Wait()
}
