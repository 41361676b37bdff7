package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// UserDir is where AddOwned pins the user namespaces that own network
// namespaces. It is on /run, like Dir: both go with a reboot.
const UserDir = "/run/bulkhead/userns"

// UserPath returns where the user namespace owning the named network
// namespace is pinned.
func UserPath(name string) string { return filepath.Join(UserDir, name) }

// IDMap maps a namespace's ids 0..Size-1 to the host's Host..Host+Size-1.
type IDMap struct{ Host, Size uint32 }

// AddOwned creates a named network namespace owned by a new user
// namespace with the given id map, and pins both: the network namespace
// under Dir, the user namespace at UserPath(name). A process that joins
// that user namespace then has its capabilities over the network
// namespace (binding port 80, mounting sysfs), while the host's root keeps
// all of its own. Creating what exists succeeds; a network namespace
// without its user namespace is an error, because it cannot be given one.
func AddOwned(ctx context.Context, name string, ids IDMap) error {
	user := UserPath(name)
	_, userErr := os.Stat(user)
	switch {
	case Exists(name) && userErr == nil:
		return setup(ctx, name)
	case Exists(name):
		return fmt.Errorf("network namespace %s exists but is owned by the host's user namespace, not its own; remove it (bulkhead down) and create it again", name)
	}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(UserDir, 0o700); err != nil {
		return err
	}
	// A child that does nothing holds both namespaces while they are
	// pinned; the kernel creates the network namespace under the new user
	// namespace because they are made by one clone. The Go runtime writes
	// the id maps before the child runs.
	cmd := exec.CommandContext(ctx, "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.Host), Size: int(ids.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.Host), Size: int(ids.Size)}},
		// Daemons drop supplementary groups when they change user
		// (sshd's privilege separation): allow setgroups(2), as runc
		// would for a user namespace of its own.
		GidMappingsEnableSetgroups: true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	// Pdeathsig fires when the thread that forked the child ends, not
	// the process: held by this goroutine, the thread cannot be taken by
	// one that locks it to enter a namespace and ends with it (Do),
	// killing the child before its namespaces are pinned.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("create user and network namespaces for %s: %w", name, err)
	}
	defer func() {
		cmd.Process.Kill() // ours, by pid
		cmd.Wait()
	}()
	pid := cmd.Process.Pid
	if err := pin(fmt.Sprintf("/proc/%d/ns/user", pid), user); err != nil {
		return err
	}
	if err := pin(fmt.Sprintf("/proc/%d/ns/net", pid), Path(name)); err != nil {
		unpin(user)
		return err
	}
	return setup(ctx, name)
}

// CheckUserNamespaces makes a throwaway user namespace, to learn before
// anything is created whether this kernel allows them; an error says what
// to change.
func CheckUserNamespaces(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "true")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65534, Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		limit, _ := os.ReadFile("/proc/sys/user/max_user_namespaces")
		return fmt.Errorf("this kernel does not let bulkhead make user namespaces (%v; user.max_user_namespaces = %s): every node runs in one of its own, so root in a node is not root on the host; allow them (sysctl -w user.max_user_namespaces=15000) and run up again", err, strings.TrimSpace(string(limit)))
	}
	return nil
}

// setup readies a namespace that exists: IPv6 off, loopback up.
func setup(ctx context.Context, name string) error {
	h, err := Open(name)
	if err != nil {
		return err
	}
	defer h.Close()
	// Both settings from one thread inside the namespace.
	if err := Do(h, func() error {
		for _, key := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+key+"/disable_ipv6", []byte("1"), 0o644); err != nil {
				return fmt.Errorf("sysctl net.ipv6.conf.%s.disable_ipv6=1 in %s: %w", key, name, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	nl, err := links(h)
	if err != nil {
		return err
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", name, err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := nl.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return nil
}

// pin bind-mounts a namespace file onto path, which it creates.
func pin(ns, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("pin %s: %w", path, err)
	}
	f.Close()
	if err := unix.Mount(ns, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("pin %s on %s: %w", ns, path, err)
	}
	return nil
}

// unpin undoes pin; a path that is gone is not an error.
func unpin(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// DeleteOwned removes a named network namespace and the user namespace
// AddOwned pinned for it.
func DeleteOwned(ctx context.Context, name string) error {
	if err := Delete(ctx, name); err != nil {
		return err
	}
	return unpin(UserPath(name))
}
