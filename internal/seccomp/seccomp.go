// Package seccomp builds the seccomp profile a node's container runs under:
// Docker's default profile (github.com/moby/profiles/seccomp v0.3.0) for the
// node's capabilities, narrowed. The default action stays Docker's: fail
// with EPERM.
//
// The threat model assumes root inside any node. Docker's default is written
// for containers that may hold any capability; bulkhead's nodes hold a few,
// and a node root must not reach the kernel's larger attack surfaces whatever
// capabilities a caller grants. So every node is denied the following, even
// where Docker allows it or a capability would unlock it. Each line is as of
// 2026-11, with Docker's profile v0.3.0 on kernel 6.18:
//
//   - unshare, setns: no new namespaces, above all user namespaces, whose
//     "root" reaches code paths (netfilter, mounts) meant for the host's.
//   - clone with any CLONE_NEW* flag: the same, through clone. Thread and
//     fork flags stay allowed; Go's runtime and glibc need them.
//   - clone3: fails with ENOSYS, as in Docker, because its flags sit behind
//     a pointer seccomp cannot read; glibc and Go fall back to clone.
//   - keyctl, add_key, request_key: the keyring is not namespaced.
//   - bpf: verifier bugs are a steady source of kernel exploits.
//   - mount, umount, umount2, move_mount, open_tree, fsopen, fsmount,
//     fsconfig, fspick, mount_setattr, pivot_root: a node's filesystem view
//     is fixed by the host; remounting would undo read-only releases.
//   - ptrace, process_vm_readv, process_vm_writev: Docker allows them since
//     kernel 4.8; a node root could read or patch the agent or a daemon and
//     take over the work of another user in the same node.
//   - kcmp, pidfd_getfd, process_madvise: the rest of what CAP_SYS_PTRACE
//     unlocks in Docker; pidfd_getfd steals another process's descriptors.
//   - kexec_load, kexec_file_load: replace the running kernel.
//   - init_module, finit_module, delete_module: load or remove kernel code.
//   - perf_event_open: a side channel and a history of kernel bugs.
//   - userfaultfd: lets an exploit pause the kernel mid-copy to win races.
//   - open_by_handle_at: bypasses the mount namespace to reach any file of
//     the filesystem (the 2014 "shocker" escape); Docker allows it with
//     CAP_DAC_READ_SEARCH. An nfs storage node has that capability because
//     nfs-ganesha's VFS backend opens files by handle, and would need this
//     call; NFS cannot run under the local driver on these kernels, so
//     nothing runs it yet.
//   - name_to_handle_at: the half that makes handles; no daemon needs it.
//   - swapon, swapoff: host-wide memory policy.
//   - reboot: even in a PID namespace, it ends the node for everyone.
//   - acct: host-wide process accounting.
//   - quotactl, quotactl_fd: host filesystem quotas.
//   - lookup_dcookie: oprofile's interface, gone from recent kernels
//     (ENOSYS on 6.18), but still wired on older ones.
//   - io_uring_setup, io_uring_enter, io_uring_register: io_uring performs
//     reads, writes, connects and opens without making their syscalls, so
//     seccomp never sees them. Docker's default denies it too, so this only
//     keeps a later Docker profile from letting it back; MariaDB 10.11 then
//     uses libaio, as under Docker.
//   - personality: only the values Docker allows (Linux, 32-bit, UNAME26
//     and the query); no ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC.
//   - socketcall: the 32-bit multiplexer hides socket's domain from seccomp,
//     so it would bypass the domain allow-list below; 32-bit glibc calls
//     socket directly since kernel 4.3.
//   - socket outside AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK: nodes speak
//     TCP, UDP and Unix sockets (and netlink for interface lists and sshd's
//     audit); rarer families (packet, RDS, TIPC, CAN, X.25, XDP...) keep
//     yielding kernel exploits.
//   - chroot outside the storage role: only sshd's privilege separation and
//     sftp's ChrootDirectory need it.
package seccomp

import (
	"fmt"
	"runtime"
	"slices"

	moby "github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/spec"
)

// Denied are the syscalls no node may make, whatever its role and
// capabilities, on top of those Docker's default already denies. clone,
// personality and socket are absent: they are allowed with conditions (see
// the package doc).
var Denied = []string{
	"unshare", "setns",
	"keyctl", "add_key", "request_key",
	"bpf",
	"mount", "umount", "umount2", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr", "pivot_root",
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
	"kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module",
	"perf_event_open",
	"userfaultfd",
	"open_by_handle_at", "name_to_handle_at",
	"swapon", "swapoff",
	"reboot",
	"acct",
	"quotactl", "quotactl_fd",
	"lookup_dcookie",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"socketcall",
}

// SocketDomains are the address families a node may create sockets in.
var SocketDomains = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// namespaceFlags are clone's flags that make a namespace. CLONE_NEWTIME is
// absent because clone cannot take it (its bit is part of the exit signal);
// only unshare and clone3 can, and both are denied.
const namespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// roleDenied are syscalls a role does not need although its capabilities
// would allow them.
func roleDenied(role string) []string {
	if role == spec.RoleStorage {
		return nil
	}
	return []string{"chroot"}
}

// Profile returns the seccomp profile of a node of role (spec.RoleEdge ...)
// whose process holds caps (CAP_CHOWN ...). The result is the same for the
// same role and set of capabilities, whatever their order, on a given
// architecture.
func Profile(role string, caps []string) (*specs.LinuxSeccomp, error) {
	if !slices.Contains(spec.Roles, role) {
		return nil, fmt.Errorf("seccomp profile: unknown role %q (one of %v)", role, spec.Roles)
	}
	for _, c := range caps {
		if !slices.Contains(knownCaps, c) {
			return nil, fmt.Errorf("seccomp profile: unknown capability %q (names look like CAP_CHOWN)", c)
		}
	}
	docker, err := moby.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: caps},
	}})
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: docker's default: %w", err)
	}
	// Replaced below by rules of our own, whatever Docker made of them
	// for these capabilities.
	replaced := []string{"clone", "clone3", "socket"}
	deny := slices.Concat(Denied, roleDenied(role), replaced)

	p := &specs.LinuxSeccomp{
		DefaultAction:   docker.DefaultAction,
		DefaultErrnoRet: docker.DefaultErrnoRet,
		Architectures:   docker.Architectures,
	}
	for _, r := range docker.Syscalls {
		var names []string
		for _, n := range r.Names {
			// personality is allowed only with Docker's argument
			// conditions; a bare allow would let any persona through.
			if slices.Contains(deny, n) || (n == "personality" && len(r.Args) == 0) {
				continue
			}
			names = append(names, n)
		}
		if len(names) == 0 {
			continue
		}
		r.Names = names
		p.Syscalls = append(p.Syscalls, r)
	}
	p.Syscalls = append(p.Syscalls, cloneRule(), clone3Rule())
	for _, d := range SocketDomains {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names:  []string{"socket"},
			Action: specs.ActAllow,
			Args:   []specs.LinuxSeccompArg{{Index: 0, Value: d, Op: specs.OpEqualTo}},
		})
	}
	return p, nil
}

// cloneRule allows clone without namespace flags: threads, fork, vfork and
// Go's clone(CLONE_VFORK|CLONE_VM|CLONE_PIDFD) for os/exec.
func cloneRule() specs.LinuxSyscall {
	flags := uint(0)
	if runtime.GOARCH == "s390x" {
		flags = 1 // s390 swaps clone's first two arguments
	}
	return specs.LinuxSyscall{
		Names:  []string{"clone"},
		Action: specs.ActAllow,
		Args:   []specs.LinuxSeccompArg{{Index: flags, Value: namespaceFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}},
	}
}

// clone3Rule makes clone3 look absent, so that callers fall back to clone,
// whose flags seccomp can read.
func clone3Rule() specs.LinuxSyscall {
	nosys := uint(unix.ENOSYS)
	return specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &nosys}
}

// knownCaps are the capability names of Linux 6.18, for catching a typo
// that would silently change the profile. They are in the kernel's order:
// a name's index is its number.
var knownCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}
