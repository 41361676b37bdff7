// Command attack is what a hostile root inside a node tries: the e2e drill
// streams it into a node's /tmp and runs it there. Each attack prints one
// line, "NAME: allowed" or "NAME: denied (ERRNO)", and the test decides
// which answer is a failure. It uses raw system calls so that no library
// hides an error.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

type attack struct {
	name string
	try  func() error
}

var attacks = []attack{
	{"unshare-user", func() error { return unshareLocked(unix.CLONE_NEWUSER) }},
	{"unshare-net", func() error { return unshareLocked(unix.CLONE_NEWNET) }},
	{"unshare-mount", func() error { return unshareLocked(unix.CLONE_NEWNS) }},
	{"clone-newuser", func() error {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		return cmd.Run()
	}},
	{"keyctl-user-keyring", func() error {
		_, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_USER_KEYRING, 0, 0, 0)
		return err
	}},
	{"add-key", func() error {
		_, err := unix.AddKey("user", "bulkhead-drill", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
		return err
	}},
	{"bpf", func() error {
		attr := make([]byte, 128)
		_, _, e := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
		return errno(e)
	}},
	{"mount-tmpfs", func() error { return unix.Mount("none", "/tmp", "tmpfs", 0, "") }},
	{"ptrace-attach-pid1", func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := unix.PtraceAttach(1)
		if err == nil {
			unix.PtraceDetach(1)
		}
		return err
	}},
	{"process-vm-readv-pid1", func() error {
		buf := make([]byte, 8)
		local := []unix.Iovec{{Base: &buf[0], Len: 8}}
		remote := []unix.RemoteIovec{{Base: 0x400000, Len: 8}}
		_, err := unix.ProcessVMReadv(1, local, remote, 0)
		if err == unix.EFAULT || err == unix.ESRCH {
			return nil // the call itself went through
		}
		return err
	}},
	{"perf-event-open", func() error {
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK}
		attr.Size = uint32(unsafe.Sizeof(attr))
		fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}},
	{"userfaultfd", func() error {
		fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, 0, 0, 0)
		if e == 0 {
			unix.Close(int(fd))
		}
		return errno(e)
	}},
	{"open-by-handle-at", func() error {
		h := unix.NewFileHandle(1, make([]byte, 8))
		_, err := unix.OpenByHandleAt(unix.AT_FDCWD, h, 0)
		if err == unix.EBADF || err == unix.ESTALE || err == unix.EINVAL {
			return nil
		}
		return err
	}},
	{"kexec-load", func() error {
		_, _, e := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0)
		if e == unix.EINVAL {
			return nil
		}
		return errno(e)
	}},
	{"init-module", func() error {
		_, _, e := unix.Syscall(unix.SYS_INIT_MODULE, 0, 0, 0)
		if e == unix.EFAULT || e == unix.EINVAL {
			return nil
		}
		return errno(e)
	}},
	{"io-uring-setup", func() error {
		params := make([]byte, 120)
		fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		if e == 0 {
			unix.Close(int(fd))
		}
		return errno(e)
	}},
	{"raw-socket", func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}},
	{"packet-socket", func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}},
	{"setns-host-net", func() error {
		// The host's network namespace is not reachable by path; the call
		// itself must be refused before any path matters.
		_, _, e := unix.Syscall(unix.SYS_SETNS, 0, unix.CLONE_NEWNET, 0)
		if e == unix.EBADF || e == unix.EINVAL {
			return nil
		}
		return errno(e)
	}},
	{"chroot", func() error { return unix.Chroot("/tmp") }},
	{"mknod-block-device", func() error {
		return unix.Mknod("/tmp/drill-sda", unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0)))
	}},
	{"reboot", func() error {
		return unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	}},
}

func unshareLocked(flag int) error {
	runtime.LockOSThread() // the thread is spoilt if it works; never unlocked
	return unix.Unshare(flag)
}

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func main() {
	// Only ever inside a node: its PID 1 is the bulkhead agent. On the
	// host these calls would succeed and change the host.
	if cmd, _ := os.ReadFile("/proc/1/cmdline"); !strings.HasPrefix(string(cmd), "/bulkhead/bulkhead\x00agent") {
		fmt.Fprintln(os.Stderr, "attack: refusing to run outside a bulkhead node")
		os.Exit(2)
	}
	want := map[string]bool{}
	for _, a := range os.Args[1:] {
		want[a] = true
	}
	for _, a := range attacks {
		if len(want) > 0 && !want[a.name] {
			continue
		}
		if err := a.try(); err != nil {
			name := "?"
			var e syscall.Errno
			if errors.As(err, &e) {
				name = unix.ErrnoName(e)
			}
			fmt.Printf("%s: denied (%s: %v)\n", a.name, name, err)
			continue
		}
		fmt.Printf("%s: allowed\n", a.name)
	}
}
