//go:build linux && amd64

package seccomp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// probe is one syscall the container makes, by number, through python's
// ctypes. Arguments are chosen so that, were the call allowed, it would
// fail harmlessly with an errno other than EPERM (a null pointer, a bad
// descriptor, bad flags): the control run, without a filter and with every
// capability, shows which probes can tell the filter's EPERM apart.
type probe struct {
	Name string `json:"name"`
	Nr   int    `json:"nr"`   // -1: start a thread; -2: fork
	Args []any  `json:"args"` // integers, or strings passed as char*
}

// Expected outcomes under a profile.
const (
	deny    = "EPERM"
	nosys   = "ENOSYS"
	ok      = "0"
	allowed = "not denied" // returns, with any result but EPERM or ENOSYS
)

type check struct {
	probe
	want func(n node) string
}

func always(s string) func(node) string { return func(node) string { return s } }

func checks() []check {
	c := func(name string, nr int, want string, args ...any) check {
		return check{probe{name, nr, args}, always(want)}
	}
	return []check{
		c("thread", -1, ok),
		c("fork", -2, ok),
		c("getpid", unix.SYS_GETPID, ok),
		c("setresuid(-1,-1,-1)", unix.SYS_SETRESUID, ok, -1, -1, -1),
		c("epoll_create1", unix.SYS_EPOLL_CREATE1, ok, 0),
		c("accept4(-1)", unix.SYS_ACCEPT4, allowed, -1, 0, 0, 0),
		c("pidfd_open(1)", unix.SYS_PIDFD_OPEN, ok, 1, 0),
		c("socket(AF_INET)", unix.SYS_SOCKET, ok, unix.AF_INET, unix.SOCK_STREAM, 0),
		c("socket(AF_UNIX)", unix.SYS_SOCKET, ok, unix.AF_UNIX, unix.SOCK_STREAM, 0),
		c("socket(AF_NETLINK)", unix.SYS_SOCKET, ok, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE),
		c("socket(AF_PACKET)", unix.SYS_SOCKET, deny, unix.AF_PACKET, unix.SOCK_RAW, 0),
		c("socket(AF_VSOCK)", unix.SYS_SOCKET, deny, unix.AF_VSOCK, unix.SOCK_STREAM, 0),
		c("socket(AF_ALG)", unix.SYS_SOCKET, deny, unix.AF_ALG, unix.SOCK_SEQPACKET, 0),
		c("personality(query)", unix.SYS_PERSONALITY, ok, 0xffffffff),
		c("personality(ADDR_NO_RANDOMIZE)", unix.SYS_PERSONALITY, deny, 0x0040000),
		{probe{"chroot(/)", unix.SYS_CHROOT, []any{"/"}}, func(n node) string {
			if n.role == spec.RoleStorage && slices.Contains(n.caps, "CAP_SYS_CHROOT") {
				return ok
			}
			return deny
		}},
		c("unshare(CLONE_NEWUSER)", unix.SYS_UNSHARE, deny, unix.CLONE_NEWUSER),
		c("unshare(CLONE_NEWNS)", unix.SYS_UNSHARE, deny, unix.CLONE_NEWNS),
		c("clone(CLONE_NEWUSER|CLONE_FS)", unix.SYS_CLONE, deny, unix.CLONE_NEWUSER|unix.CLONE_FS, 0, 0, 0, 0),
		c("clone3", unix.SYS_CLONE3, nosys, 0, 0),
		c("setns", unix.SYS_SETNS, deny, -1, 0),
		c("keyctl", unix.SYS_KEYCTL, deny, 0x7fffffff, 0, 0, 0, 0),
		c("add_key", unix.SYS_ADD_KEY, deny, 0, 0, 0, 0, 0),
		c("request_key", unix.SYS_REQUEST_KEY, deny, 0, 0, 0, 0),
		c("bpf", unix.SYS_BPF, deny, 0x7fffffff, 0, 0),
		c("mount", unix.SYS_MOUNT, deny, 0, 0, 0, 0, 0),
		c("umount2", unix.SYS_UMOUNT2, deny, 0, 0),
		c("move_mount", unix.SYS_MOVE_MOUNT, deny, -1, 0, -1, 0, 0xffffffff),
		c("open_tree", unix.SYS_OPEN_TREE, deny, -1, 0, 0xffffffff),
		c("fsopen", unix.SYS_FSOPEN, deny, 0, 0xffffffff),
		c("fsmount", unix.SYS_FSMOUNT, deny, -1, 0xffffffff, 0),
		c("pivot_root", unix.SYS_PIVOT_ROOT, deny, 0, 0),
		c("ptrace(ATTACH)", unix.SYS_PTRACE, deny, unix.PTRACE_ATTACH, 0x7ffffff0, 0, 0),
		c("process_vm_readv", unix.SYS_PROCESS_VM_READV, deny, 0, 0, 0, 0, 0, 1),
		c("process_vm_writev", unix.SYS_PROCESS_VM_WRITEV, deny, 0, 0, 0, 0, 0, 1),
		c("kcmp", unix.SYS_KCMP, deny, 0, 0, 0x7fffffff, 0, 0),
		c("pidfd_getfd", unix.SYS_PIDFD_GETFD, deny, -1, 0, 0),
		c("process_madvise", unix.SYS_PROCESS_MADVISE, deny, -1, 0, 0, 0, 0),
		c("kexec_load", unix.SYS_KEXEC_LOAD, deny, 0, 0, 0, 0xffffffff),
		c("kexec_file_load", unix.SYS_KEXEC_FILE_LOAD, deny, -1, -1, 0, 0, 0xffffffff),
		c("init_module", unix.SYS_INIT_MODULE, deny, 0, 0, 0),
		c("finit_module", unix.SYS_FINIT_MODULE, deny, -1, 0, 0),
		c("delete_module", unix.SYS_DELETE_MODULE, deny, 0, 0),
		c("perf_event_open", unix.SYS_PERF_EVENT_OPEN, deny, 0, 0, -1, -1, 0),
		c("userfaultfd", unix.SYS_USERFAULTFD, deny, 0xffffffff),
		c("open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, deny, -1, 0, 0),
		c("name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT, deny, -1, 0, 0, 0, 0xffffffff),
		c("swapon", unix.SYS_SWAPON, deny, 0, 0),
		c("swapoff", unix.SYS_SWAPOFF, deny, 0),
		c("reboot(bad magic)", unix.SYS_REBOOT, deny, 0, 0, 0, 0),
		c("acct(bad pointer)", unix.SYS_ACCT, deny, 1),
		c("quotactl", unix.SYS_QUOTACTL, deny, 0, 0, 0, 0),
		c("lookup_dcookie", unix.SYS_LOOKUP_DCOOKIE, deny, 0, 0, 0),
		c("io_uring_setup", unix.SYS_IO_URING_SETUP, deny, 1, 0),
		c("io_uring_enter", unix.SYS_IO_URING_ENTER, deny, -1, 0, 0, 0, 0, 0),
		c("io_uring_register", unix.SYS_IO_URING_REGISTER, deny, -1, 0, 0, 0),
	}
}

// prober runs each probe in a forked child, so that one that succeeds
// (unshare, chroot) cannot change what the next one sees, and prints a JSON
// object of results: 0, an errno, or minus the signal that killed the child.
const prober = `
import ctypes, json, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def run(p):
    if p["nr"] == -1:
        done = []
        t = threading.Thread(target=lambda: done.append(1))
        t.start(); t.join()
        return 0 if done else 255
    if p["nr"] == -2:
        return 0
    args = [ctypes.c_char_p(a.encode()) if isinstance(a, str) else ctypes.c_long(a) for a in p["args"] or []]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(p["nr"]), *args)
    return ctypes.get_errno() if r == -1 else 0
out = {}
for line in open("/proc/self/status"):
    if line.startswith("Seccomp:"):
        out["seccomp mode"] = int(line.split()[1])
for p in json.loads(sys.argv[1]):
    try:
        pid = os.fork()
    except OSError as e:
        out[p["name"]] = e.errno
        continue
    if pid == 0:
        try:
            code = run(p)
        except Exception:
            code = 255
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    out[p["name"]] = os.waitstatus_to_exitcode(st)
print(json.dumps(out))
`

// TestKernel loads each profile with runc and makes the denied calls for
// real, as root in a throwaway container whose process is the host's
// python3. A control container without a filter, holding every
// capability, shows which probes would not have failed with EPERM anyway.
func TestKernel(t *testing.T) {
	hosttest.RequireRoot(t)
	for _, bin := range []string{"runc", "/usr/bin/python3"} {
		_, err := exec.LookPath(bin)
		hosttest.Require(t, err == nil, "%s (apt-get install runc python3): %v", bin, err)
	}
	checks := checks()
	probes := make([]probe, len(checks))
	for i, c := range checks {
		probes[i] = c.probe
	}
	control := runProbes(t, "control", nil, knownCaps, probes)
	if control["seccomp mode"] != 0 {
		t.Fatalf("control runs under seccomp mode %d; it must run unfiltered", control["seccomp mode"])
	}
	// A probe is telling when, unfiltered, it does not fail with EPERM.
	// These must be: if one is not, the probe is wrong, not the host.
	mustTell := []string{"unshare(CLONE_NEWUSER)", "clone(CLONE_NEWUSER|CLONE_FS)", "keyctl", "ptrace(ATTACH)",
		"bpf", "mount", "setns", "io_uring_setup", "open_by_handle_at", "socket(AF_PACKET)", "chroot(/)",
		"personality(ADDR_NO_RANDOMIZE)"}
	for _, name := range mustTell {
		if control[name] == int(unix.EPERM) {
			t.Errorf("control: %s fails with EPERM without a filter; the probe cannot tell", name)
		}
	}
	for _, n := range nodes {
		t.Run(n.name, func(t *testing.T) {
			got := runProbes(t, n.name, profile(t, n.role, n.caps), n.caps, probes)
			if got["seccomp mode"] != 2 {
				t.Fatalf("seccomp mode %d, want 2 (filter)", got["seccomp mode"])
			}
			for _, c := range checks {
				want, res := c.want(n), got[c.Name]
				pass := false
				switch want {
				case deny:
					pass = res == int(unix.EPERM)
				case nosys:
					pass = res == int(unix.ENOSYS)
				case ok:
					pass = res == 0
				case allowed:
					pass = res >= 0 && res != int(unix.EPERM) && res != int(unix.ENOSYS)
				}
				if !pass {
					t.Errorf("%s: %s, want %s", c.Name, outcome(res), want)
				}
				if want == deny && control[c.Name] == int(unix.EPERM) {
					t.Logf("%s: EPERM also without a filter on this host; proven by TestDenied only", c.Name)
				}
			}
		})
	}
}

// lacking returns the capabilities of caps outside this process's
// bounding set.
func lacking(caps []string) []string {
	var out []string
	for _, c := range caps {
		nr := slices.Index(knownCaps, c)
		if in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(nr), 0, 0, 0); err != nil || in != 1 {
			out = append(out, c)
		}
	}
	return out
}

func outcome(res int) string {
	if res < 0 {
		return fmt.Sprintf("killed by signal %d", -res)
	}
	return fmt.Sprintf("%d (%v)", res, unix.Errno(res))
}

// runProbes runs the prober in a container under profile (none if nil)
// with caps, and returns each probe's result. The rootfs is empty but for
// the host's /usr, read-only, as in internal/driver/local; runc keeps its
// state in a directory of its own, away from any live stack's.
func runProbes(t *testing.T, name string, profile *specs.LinuxSeccomp, caps []string, probes []probe) map[string]int {
	t.Helper()
	dir := t.TempDir()
	rootfs, state := filepath.Join(dir, "rootfs"), filepath.Join(dir, "state")
	for _, d := range []string{"usr", "proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"} {
		if err := os.Symlink(target, filepath.Join(rootfs, link)); err != nil {
			t.Fatal(err)
		}
	}
	arg, err := json.Marshal(probes)
	if err != nil {
		t.Fatal(err)
	}
	s := specs.Spec{
		Version: "1.0.2",
		Process: &specs.Process{
			Args:            []string{"/usr/bin/python3", "-I", "-c", prober, string(arg)},
			Env:             []string{"PATH=/usr/bin:/usr/sbin", "LANG=C.UTF-8"},
			Cwd:             "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: "seccomp-test",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755", "size=1024k"}},
			{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "nosuid", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=1024k"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}},
			Seccomp: profile,
		},
	}
	if missing := lacking(caps); len(missing) > 0 {
		// A test host may itself run in a container (as of 2026-11 this
		// one lacks CAP_SYS_RESOURCE), and runc cannot grant more.
		t.Logf("%s: the host's bounding set lacks %v; the container runs without them", name, missing)
		kept := slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return slices.Contains(missing, c) })
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: kept, Effective: kept, Permitted: kept}
	}
	data, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("bulkhead-seccomp-test-%d-%s", os.Getpid(), name)
	t.Cleanup(func() {
		exec.Command("runc", "--root", state, "delete", "--force", id).Run()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "runc", "--root", state, "run", "--bundle", dir, id)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run %s: %v\nstdout: %s\nstderr: %s", id, err, stdout.String(), stderr.String())
	}
	var got map[string]int
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%s: prober output %q: %v\nstderr: %s", name, stdout.String(), err, stderr.String())
	}
	for _, p := range probes {
		if _, ok := got[p.Name]; !ok {
			t.Fatalf("%s: no result for %s in %s", name, p.Name, stdout.String())
		}
	}
	t.Logf("%s: %v", name, got)
	return got
}
