package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Handle is an open network namespace. Holding it keeps the namespace
// addressable for as long as the handle is open, whatever happens to its
// name.
type Handle struct {
	Name string // "" for the namespace this process started in
	f    *os.File
}

// origin is the namespace this process started in, opened while package
// initialisation runs on the main thread. It can't be looked up later:
// a goroutine that locks the main thread and exits leaves that thread
// parked wherever it was, so /proc/self/ns/net may name a node's namespace.
var origin, originErr = os.Open("/proc/thread-self/ns/net")

// Open opens a named namespace, or with name "" the one this process
// started in (the host's, for bulkhead).
func Open(name string) (*Handle, error) {
	if name == "" {
		if originErr != nil {
			return nil, fmt.Errorf("open this process's network namespace: %w", originErr)
		}
		fd, err := unix.FcntlInt(origin.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open this process's network namespace: %w", err)
		}
		return &Handle{f: os.NewFile(uintptr(fd), "/proc/thread-self/ns/net")}, nil
	}
	f, err := os.Open(Path(name))
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", name, err)
	}
	return &Handle{Name: name, f: f}, nil
}

// Inode identifies the namespace, as /proc/PID/ns/net names it
// ("net:[INODE]").
func (h *Handle) Inode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(h.f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat network namespace %q: %w", h.Name, err)
	}
	return st.Ino, nil
}

// Fd is the namespace's file descriptor, for calls that take one (netlink
// sockets opened in it). It stays the handle's: valid until Close.
func (h *Handle) Fd() int { return int(h.f.Fd()) }

// Close releases the handle.
func (h *Handle) Close() error { return h.f.Close() }

// Enter moves the calling OS thread into h. The caller must have called
// runtime.LockOSThread and must never unlock it: a goroutine that exits
// while locked takes its thread with it, so a thread in a foreign
// namespace never runs other goroutines.
func (h *Handle) Enter() error {
	if err := unix.Setns(int(h.f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %q: %w", h.Name, err)
	}
	return nil
}

// Do runs fn on a fresh OS thread inside h, and discards the thread
// afterwards. Sockets fn creates belong to h for their whole life, and may
// be used from any goroutine once fn has returned.
func Do(h *Handle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err := h.Enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// In runs fn on a fresh OS thread inside the named namespace, like Do. A
// process fn starts there (exec.Cmd.Run) is forked from that thread and so
// begins life in the namespace: unlike "ip netns exec", which also makes
// a mount namespace and remounts /sys for every command, this costs one
// setns. A file fn opens under /proc/sys/net is the namespace's own
// setting.
func In(name string, fn func() error) error {
	h, err := Open(name)
	if err != nil {
		return err
	}
	defer h.Close()
	return Do(h, fn)
}

// DoEach runs fn(i) inside hs[i] for every i, on up to workers OS threads
// that each move from namespace to namespace: a hundred namespaces cost a
// hundred setns calls, not a hundred threads. The threads are discarded
// afterwards, like Do's.
func DoEach(hs []*Handle, workers int, fn func(i int) error) error {
	workers = max(1, min(workers, len(hs)))
	next := make(chan int)
	errs := make([]error, len(hs))
	done := make(chan struct{})
	for range workers {
		go func() {
			runtime.LockOSThread()
			defer func() { done <- struct{}{} }()
			for i := range next {
				if err := hs[i].Enter(); err != nil {
					errs[i] = err
					continue
				}
				errs[i] = fn(i)
			}
		}()
	}
	for i := range hs {
		next <- i
	}
	close(next)
	for range workers {
		<-done
	}
	return errors.Join(errs...)
}
