package netns

import (
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

// Open opens a named namespace, or with name "" the one this process
// started in (the host's, for bulkhead).
func Open(name string) (*Handle, error) {
	path := Path(name)
	if name == "" {
		// Threads that enter other namespaces are locked and discarded (see
		// Do), so the process's leader thread is always in the original one.
		path = "/proc/self/ns/net"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", name, err)
	}
	return &Handle{Name: name, f: f}, nil
}

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
