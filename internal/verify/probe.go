package verify

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// Status is what one probe saw: a TCP connection attempt, or a UDP
// datagram sent to a stand-in that echoes it.
type Status uint8

const (
	Unknown     Status = iota
	Open               // TCP: connected; UDP: an answer came back
	Refused            // a reset or an ICMP port unreachable: reached, but nothing listens
	Filtered           // no answer before the timeout: dropped on the way
	Unreachable        // no route to the address
)

var statusNames = [...]string{"unknown", "open", "refused", "filtered", "unreachable"}

func (s Status) String() string { return statusNames[s] }

// MarshalText makes a Status read as its name in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a Status from its name, as recorded results hold it.
func (s *Status) UnmarshalText(b []byte) error {
	for i, name := range statusNames {
		if string(b) == name {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("unknown probe status %q (one of %s)", b, strings.Join(statusNames[:], ", "))
}

// Probe is one attempt from the namespace at index From of the handles
// given to probe: a TCP connect to To, or with UDP a datagram to To.
type Probe struct {
	From int
	To   netip.AddrPort
	UDP  bool
}

// udpProbe is the datagram a UDP probe sends. verify's stand-ins echo it;
// any answer from the address, echo or not, reads as open.
var udpProbe = []byte("bulkhead verify probe\n")

// prober runs probes concurrently. Each attempt is a non-blocking connect
// (for UDP, a connected socket and one datagram) whose outcome is read from
// the socket once Timeout has passed (or at once when it fails outright),
// so a dropped SYN or datagram costs Timeout of wall time but no more, and
// Window attempts are in flight per worker.
type prober struct {
	Timeout time.Duration
	Window  int
	Workers int
	// connect gives every probe a socket of its own, as before 2026-12:
	// a TCP connect, never half-open, and a connected UDP socket.
	connect bool
	// inflight, if set, hears how many attempts wait at each wait.
	inflight func(int)
	// lost, if set, hears that answers to half-open probes were lost.
	lost func()
}

func (p prober) workers() int {
	if p.Workers > 0 {
		return p.Workers
	}
	return max(1, runtime.NumCPU())
}

// run probes ps from the namespaces ns and returns one Status per probe.
func (p prober) run(ctx context.Context, ns []*netns.Handle, ps []Probe) ([]Status, error) {
	out := make([]Status, len(ps))
	// Each worker takes a contiguous share in source order, so that it
	// changes namespace once per source.
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return ps[a].From - ps[b].From })
	n := min(p.workers(), max(1, len(ps)))
	p.Window = fitWindow(max(1, p.Window), n)
	errc := make(chan error, n)
	for w := range n {
		share := order[w*len(order)/n : (w+1)*len(order)/n]
		go func() {
			runtime.LockOSThread()
			// Never unlocked: the thread leaves the host's namespace, so it
			// must die with this goroutine.
			errc <- p.work(ctx, ns, ps, share, out)
		}()
	}
	var errs []error
	for range n {
		errs = append(errs, <-errc)
	}
	return out, errors.Join(errs...)
}

// fitWindow shrinks a window so that workers of them fit in this
// process's open files limit, raising the limit first as far as it may:
// the soft limit to the hard one, and, for root, the hard one up to the
// kernel's fs.nr_open. A smaller window costs time, not results.
func fitWindow(window, workers int) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return window
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	want := uint64(window*workers + len(fds) + 256)
	if lim.Cur < want {
		raised := lim
		raised.Cur = max(lim.Cur, min(want, lim.Max))
		if want > lim.Max {
			if nrOpen, err := readUint("/proc/sys/fs/nr_open"); err == nil && nrOpen > lim.Max {
				// Only root may raise the hard limit; for anyone
				// else this fails and the soft one is raised alone.
				raised.Max = min(want, nrOpen)
				raised.Cur = raised.Max
			}
		}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil && raised.Max != lim.Max {
			raised.Max = lim.Max
			raised.Cur = max(lim.Cur, min(want, lim.Max))
			_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &raised)
		}
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	free := int(min(lim.Cur, 1<<30)) - len(fds) - 256
	return max(1, min(window, free/workers))
}

// readUint reads a number from a file such as a sysctl's.
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
}

type attempt struct {
	fd       int // -1 for a half-open probe, which the namespace's raw socket answers
	idx      int
	udp      bool
	deadline time.Time
}

// work probes share, and then again, each with a socket of its own, every
// probe from a shared socket that read filtered but whose answer may have
// been lost.
func (p prober) work(ctx context.Context, ns []*netns.Handle, ps []Probe, share []int, out []Status) error {
	syn := newSyns()
	defer syn.close()
	if err := p.workWith(ctx, ns, ps, share, out, syn); err != nil {
		return err
	}
	var again []int
	for _, idx := range share {
		if ss := syn.socks[ps[idx].From]; ss != nil && ss.lost && out[idx] == Filtered {
			again = append(again, idx)
		}
	}
	if len(again) == 0 {
		return nil
	}
	if p.lost != nil {
		p.lost()
	}
	p.connect = true
	return p.workWith(ctx, ns, ps, again, out, syn)
}

func (p prober) workWith(ctx context.Context, ns []*netns.Handle, ps []Probe, share []int, out []Status, syn *syns) error {
	window := max(1, p.Window)
	var queue []attempt // in deadline order: every attempt waits the same Timeout
	defer func() {
		for _, a := range queue {
			if a.fd >= 0 {
				unix.Close(a.fd)
			}
		}
	}()
	cur := -1
	next := 0
	var polls []unix.PollFd
	for next < len(share) || len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		for len(queue) < window && next < len(share) {
			idx := share[next]
			next++
			pr := ps[idx]
			if pr.From != cur {
				// A nil handle is this process's own namespace, which
				// a probe pod has no privilege to enter again.
				if h := ns[pr.From]; h != nil {
					if err := h.Enter(); err != nil {
						return err
					}
				}
				cur = pr.From
			}
			if !p.connect {
				st, ok, err := syn.send(pr.From, idx, pr.To, pr.UDP)
				if err != nil {
					return fmt.Errorf("probe %s from %s: %w", pr.To, nsName(ns[pr.From]), err)
				}
				if st != Unknown {
					out[idx] = st
					continue
				}
				if ok {
					queue = append(queue, attempt{fd: -1, idx: idx, udp: pr.UDP, deadline: time.Now().Add(p.Timeout)})
					continue
				}
			}
			fd, st, err := dial(pr)
			if err != nil {
				return fmt.Errorf("probe %s from %s: %w", pr.To, nsName(ns[pr.From]), err)
			}
			if st != Unknown {
				out[idx] = st
				continue
			}
			queue = append(queue, attempt{fd: fd, idx: idx, udp: pr.UDP, deadline: time.Now().Add(p.Timeout)})
		}
		if len(queue) == 0 {
			continue
		}
		if wait := time.Until(queue[0].deadline); wait > 0 && (len(queue) >= window || next >= len(share)) {
			if p.inflight != nil {
				p.inflight(len(queue))
			}
			time.Sleep(wait)
		}
		now := time.Now()
		done := 0
		for done < len(queue) && !queue[done].deadline.After(now) {
			done++
		}
		if done == 0 {
			continue
		}
		syn.drain(out)
		if err := outcomes(queue[:done], out, &polls); err != nil {
			return err
		}
		for _, a := range queue[:done] {
			if a.fd >= 0 {
				unix.Close(a.fd)
				continue
			}
			if out[a.idx] == Unknown {
				out[a.idx] = Filtered
			}
			syn.done(ps[a.idx].From, ps[a.idx].To, a.udp)
		}
		queue = queue[done:]
	}
	return nil
}

func nsName(h *netns.Handle) string {
	if h == nil {
		return "this namespace"
	}
	if h.Name == "" {
		return "the host"
	}
	return h.Name
}

// dial starts a probe. A Status other than Unknown is a final answer and
// the socket is already closed.
func dial(pr Probe) (int, Status, error) {
	if pr.UDP {
		return dialUDP(pr.To)
	}
	return dialTCP(pr.To)
}

// dialTCP starts a non-blocking connect.
func dialTCP(to netip.AddrPort) (int, Status, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, Unknown, fmt.Errorf("socket: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()})
	if errors.Is(err, unix.EINPROGRESS) {
		return fd, Unknown, nil
	}
	unix.Close(fd)
	if st := classify(err); st != Unknown {
		return -1, st, nil
	}
	return -1, Unknown, fmt.Errorf("connect: %w", err)
}

// dialUDP sends one datagram from a connected UDP socket. Connecting
// looks the route up, and makes the kernel report an ICMP error that
// comes back (port or host unreachable) on this socket.
func dialUDP(to netip.AddrPort) (int, Status, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, Unknown, fmt.Errorf("socket: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()})
	if err == nil {
		_, err = unix.Write(fd, udpProbe)
		if err == nil {
			return fd, Unknown, nil
		}
	}
	unix.Close(fd)
	if st := classify(err); st != Unknown {
		return -1, st, nil
	}
	return -1, Unknown, fmt.Errorf("send: %w", err)
}

// classify maps a connection error to a Status; nil is Open.
func classify(err error) Status {
	switch {
	case err == nil:
		return Open
	case errors.Is(err, unix.ECONNREFUSED):
		return Refused
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		return Unreachable
	case errors.Is(err, unix.ETIMEDOUT), errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		// EPERM: a firewall on the way out dropped it at once.
		return Filtered
	}
	return Unknown
}

// outcomes reads how the attempts in as have ended, with one poll for
// all of them. TCP: writable is connected; an error is a reset or an
// unreachable host; neither is a SYN still unanswered, dropped somewhere.
// UDP: a datagram to read is an answer; an error is an ICMP port or host
// unreachable; neither is a datagram dropped somewhere (a stand-in that
// got it would have answered).
func outcomes(as []attempt, out []Status, polls *[]unix.PollFd) error {
	ps := (*polls)[:0]
	for _, a := range as {
		if a.fd < 0 {
			continue
		}
		ev := int16(unix.POLLOUT)
		if a.udp {
			ev = unix.POLLIN
		}
		ps = append(ps, unix.PollFd{Fd: int32(a.fd), Events: ev})
	}
	*polls = ps
	for {
		_, err := unix.Poll(ps, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		break
	}
	i := -1
	for _, a := range as {
		if a.fd < 0 {
			continue
		}
		i++
		ev := ps[i].Revents
		switch {
		case a.udp:
			out[a.idx] = udpOutcome(a.fd, ev)
		case ev&(unix.POLLERR|unix.POLLHUP) != 0:
			e, err := unix.GetsockoptInt(a.fd, unix.SOL_SOCKET, unix.SO_ERROR)
			st := Open // connected, then reset or closed: it was reached
			if err == nil && e != 0 {
				if c := classify(unix.Errno(e)); c != Unknown {
					st = c
				}
			}
			out[a.idx] = st
		case ev&unix.POLLOUT != 0:
			out[a.idx] = Open
		default:
			out[a.idx] = Filtered
		}
	}
	return nil
}

// udpOutcome reads what came back to a UDP probe's socket: a datagram is
// an answer; a pending ICMP error reads as that error (and reading it
// clears it, so it is read once, here).
func udpOutcome(fd int, ev int16) Status {
	if ev&(unix.POLLIN|unix.POLLERR) == 0 {
		return Filtered
	}
	var buf [64]byte
	_, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT)
	switch {
	case err == nil:
		return Open
	case errors.Is(err, unix.EAGAIN):
		return Filtered
	}
	return classify(err)
}
