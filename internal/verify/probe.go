package verify

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// Status is what one TCP connection attempt saw.
type Status uint8

const (
	Unknown     Status = iota
	Open               // connected
	Refused            // a reset: reached, but nothing listens
	Filtered           // no answer before the timeout: dropped on the way
	Unreachable        // no route to the address
)

var statusNames = [...]string{"unknown", "open", "refused", "filtered", "unreachable"}

func (s Status) String() string { return statusNames[s] }

// MarshalText makes a Status read as its name in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Probe is one connection attempt: from the namespace at index From of the
// handles given to probe, to a TCP address.
type Probe struct {
	From int
	To   netip.AddrPort
}

// prober runs probes concurrently. Each attempt is a non-blocking connect
// whose outcome is read from the socket's TCP state once Timeout has passed
// (or at once when connect fails outright), so a dropped SYN costs Timeout
// of wall time but no more, and Window attempts are in flight per worker.
type prober struct {
	Timeout time.Duration
	Window  int
	Workers int
	// inflight, if set, hears how many attempts wait at each wait.
	inflight func(int)
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
// process's open files limit, raising the soft limit to the hard one
// first. A smaller window costs time, not results.
func fitWindow(window, workers int) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return window
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	free := int(min(lim.Cur, 1<<30)) - len(fds) - 256
	return max(1, min(window, free/workers))
}

type attempt struct {
	fd       int
	idx      int
	deadline time.Time
}

func (p prober) work(ctx context.Context, ns []*netns.Handle, ps []Probe, share []int, out []Status) error {
	window := max(1, p.Window)
	var queue []attempt // in deadline order: every attempt waits the same Timeout
	defer func() {
		for _, a := range queue {
			unix.Close(a.fd)
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
				if err := ns[pr.From].Enter(); err != nil {
					return err
				}
				cur = pr.From
			}
			fd, st, err := dial(pr.To)
			if err != nil {
				return fmt.Errorf("probe %s from %s: %w", pr.To, nsName(ns[pr.From]), err)
			}
			if st != Unknown {
				out[idx] = st
				continue
			}
			queue = append(queue, attempt{fd: fd, idx: idx, deadline: time.Now().Add(p.Timeout)})
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
		if err := outcomes(queue[:done], out, &polls); err != nil {
			return err
		}
		for _, a := range queue[:done] {
			unix.Close(a.fd)
		}
		queue = queue[done:]
	}
	return nil
}

func nsName(h *netns.Handle) string {
	if h.Name == "" {
		return "the host"
	}
	return h.Name
}

// dial starts a non-blocking connect. A Status other than Unknown is a
// final answer and the socket is already closed.
func dial(to netip.AddrPort) (int, Status, error) {
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

// outcomes reads how the connects in as have ended, with one poll for
// all of them: writable is connected; an error is a reset or an
// unreachable host; neither is a SYN still unanswered, dropped somewhere.
func outcomes(as []attempt, out []Status, polls *[]unix.PollFd) error {
	ps := (*polls)[:0]
	for _, a := range as {
		ps = append(ps, unix.PollFd{Fd: int32(a.fd), Events: unix.POLLOUT})
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
	for i, a := range as {
		ev := ps[i].Revents
		switch {
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
