package sshfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
)

// The scratch network: the bridge takes the /24 before anything is sent, so
// the test's subnet can never fall through to the default route.
const (
	bridgeAddr = "10.214.0.1/24"
	serverAddr = "10.214.0.2"
	clientAddr = "10.214.0.3"
	sshPort    = 2222
	// www-data exists on every Debian host, and its shell (nologin) doesn't
	// matter to internal-sftp. sshd looks it up in the host's /etc/passwd.
	sftpUser = "www-data"
	wwwData  = 33
	nobody   = 65534
	greeting = "hello from storage\n"
)

// Bounds on waiting. They are generous: a test must not depend on the
// machine's speed, only finish on a working one.
const (
	mountWait   = 15 * time.Second
	recoverWait = 25 * time.Second
	fsOpLimit   = 10 * time.Second
	// Options give sshfs's attribute cache 2 s and the kernel's 1 s; its
	// default (20 s) would miss this.
	resyncWait = 8 * time.Second
)

// requireTools skips (or, under CI, fails) when the host lacks a program
// or FUSE.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, p := range []string{"ip", "nsenter", "unshare", "ss", "sshfs", "ssh", "ssh-keygen", "/usr/sbin/sshd"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse")
	}
	hosttest.Require(t, len(missing) == 0, "%s (packages: sshfs fuse3 openssh-server openssh-client iproute2 util-linux)", strings.Join(missing, ", "))
}

// fixture is a storage server and a client node, each in a namespace of its
// own on a scratch bridge: sshd chrooting www-data to a site directory in
// the server, and the client's key and pinned host key.
type fixture struct {
	t                    *testing.T
	server, client       string // namespaces
	bridge, vServer, vCl string // host links
	srv                  string // the server's files (key, config, site)
	site                 string // the chroot
	cfg                  string
	tmp                  string // the client side: keys, mount targets
	identity, knownHosts string
	sshd                 *exec.Cmd
	sshdLog              hosttest.Buffer
	sshdPIDs             []int
}

func newFixture(t *testing.T) *fixture {
	hosttest.RequireRoot(t)
	requireTools(t)
	ctx := context.Background()
	id := os.Getpid() % 10000
	f := &fixture{
		t:       t,
		server:  fmt.Sprintf("bhtest-sshfs-server-%d", id),
		client:  fmt.Sprintf("bhtest-sshfs-client-%d", id),
		bridge:  fmt.Sprintf("bhs%d-br", id),
		vServer: fmt.Sprintf("bhs%d-s", id),
		vCl:     fmt.Sprintf("bhs%d-c", id),
	}
	// Registered first, so it runs last: everything the test made is gone.
	t.Cleanup(f.checkHostClean)

	// The client side lives in the test's temp dir. The permission checks
	// run as www-data and nobody, who must be able to reach the targets.
	f.tmp = t.TempDir()
	for _, d := range []string{filepath.Dir(f.tmp), f.tmp} {
		must(t, os.Chmod(d, 0o755))
	}
	// sshd insists that every directory above a chroot and above the
	// authorized keys be root's and writable by no one else, which /tmp
	// (1777) is not.
	srv, err := os.MkdirTemp("/srv", "bulkhead-sshfs-test-")
	if err != nil {
		t.Fatalf("make the server's directory: %v", err)
	}
	f.srv = srv
	t.Cleanup(func() {
		if err := os.RemoveAll(f.srv); err != nil {
			t.Error(err)
		}
	})
	f.site = filepath.Join(srv, "site")
	for _, d := range []string{srv, f.site, filepath.Join(srv, "keys")} {
		must(t, os.MkdirAll(d, 0o755))
		must(t, os.Chmod(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(f.site, "hello.txt"), []byte(greeting), 0o644))
	uploads := filepath.Join(f.site, "uploads")
	must(t, os.Mkdir(uploads, 0o755))
	must(t, os.Chown(uploads, wwwData, wwwData))

	hostKey := filepath.Join(srv, "ssh_host_ed25519_key")
	f.identity = filepath.Join(f.tmp, "id_ed25519")
	keygen(t, hostKey)
	keygen(t, f.identity)
	hostPub := strings.Fields(string(readOrFatal(t, hostKey+".pub")))
	clientPub := strings.TrimSpace(string(readOrFatal(t, f.identity+".pub")))
	f.knownHosts = filepath.Join(f.tmp, "known_hosts")
	must(t, os.WriteFile(f.knownHosts, fmt.Appendf(nil, "[%s]:%d %s %s\n", serverAddr, sshPort, hostPub[0], hostPub[1]), 0o644))
	// As the storage node's keys are: usable only from the client's address.
	// A connection from any other namespace (or the host, 10.214.0.1) fails.
	must(t, os.WriteFile(filepath.Join(srv, "keys", sftpUser), fmt.Appendf(nil, "restrict,from=%q %s\n", clientAddr, clientPub), 0o644))

	f.cfg = filepath.Join(srv, "sshd_config")
	must(t, os.WriteFile(f.cfg, fmt.Appendf(nil, `ListenAddress %s:%d
AddressFamily inet
HostKey %s
PidFile %s/sshd.pid
AuthorizedKeysFile %s/keys/%%u
AllowUsers %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
Match User %s
	ChrootDirectory %s
	ForceCommand internal-sftp -u 0022
	DisableForwarding yes
`, serverAddr, sshPort, hostKey, srv, srv, sftpUser, sftpUser, f.site), 0o644))

	t.Cleanup(func() {
		for _, l := range []string{f.vServer, f.vCl, f.bridge} {
			if err := netns.DeleteLink(ctx, l); err != nil {
				t.Error(err)
			}
		}
		for _, ns := range []string{f.server, f.client} {
			if err := netns.Delete(ctx, ns); err != nil {
				t.Error(err)
			}
		}
	})
	must(t, netns.AddBridge(ctx, f.bridge, bridgeAddr, "bulkhead sshfs test"))
	for _, n := range []struct{ ns, veth, addr string }{{f.server, f.vServer, serverAddr}, {f.client, f.vCl, clientAddr}} {
		must(t, netns.Add(ctx, n.ns))
		must(t, netns.AddVeth(ctx, netns.Veth{Host: n.veth, Bridge: f.bridge, Netns: n.ns, Name: "eth0", Addr: n.addr + "/24"}))
	}
	t.Cleanup(f.stopSSHD)
	f.startSSHD()
	return f
}

func keygen(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bulkhead-test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v: %s", path, err, out)
	}
}

// sshdScript runs sshd in the server's network namespace with a /run of its
// own: ip netns exec gave it a private mount namespace, so the /run/sshd
// that sshd requires is made there and the host's /run is left alone.
const sshdScript = `mount -t tmpfs -o mode=0755,size=1m bulkhead-test /run && mkdir /run/sshd && exec /usr/sbin/sshd -D -e -f "$1"`

// startSSHD starts sshd and waits until it listens.
func (f *fixture) startSSHD() {
	t := f.t
	t.Helper()
	from := f.sshdLog.Len()
	// ip netns exec and sh both exec: the child's PID is sshd's.
	cmd := exec.Command("ip", "netns", "exec", f.server, "sh", "-c", sshdScript, "sh", f.cfg)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = &f.sshdLog, &f.sshdLog
	cmd.WaitDelay = time.Second
	must(t, cmd.Start())
	f.sshd = cmd
	f.sshdPIDs = append(f.sshdPIDs, cmd.Process.Pid)
	want := fmt.Sprintf("Server listening on %s port %d", serverAddr, sshPort)
	hosttest.Eventually(t, 10*time.Second, "sshd listening", func() error {
		log := f.sshdLog.String()[from:]
		if strings.Contains(log, want) {
			return nil
		}
		if p, ok := readProc(cmd.Process.Pid); !ok || p.state == 'Z' {
			t.Fatalf("sshd did not start listening:\n%s", log)
		}
		return fmt.Errorf("its log so far:\n%s", log)
	})
}

// stopSSHD kills sshd and the per-connection sshd processes it forked (they
// run in sessions of their own), by PID, as a crash of the storage node
// would: every SFTP connection drops. Idempotent.
func (f *fixture) stopSSHD() {
	if f.sshd == nil {
		return
	}
	pid := f.sshd.Process.Pid
	tree := descendants(pid)
	syscall.Kill(pid, syscall.SIGKILL)
	for _, d := range tree {
		syscall.Kill(d, syscall.SIGKILL)
	}
	f.sshd.Wait()
	f.sshd = nil
}

// checkHostClean runs after every other cleanup and checks that nothing the
// test made survives on the host.
func (f *fixture) checkHostClean() {
	t := f.t
	for _, ns := range []string{f.server, f.client} {
		if netns.Exists(ns) {
			t.Errorf("namespace %s survived", ns)
		}
	}
	for _, l := range []string{f.bridge, f.vServer, f.vCl} {
		if netns.LinkExists(l) {
			t.Errorf("link %s survived", l)
		}
	}
	if f.srv != "" {
		if _, err := os.Stat(f.srv); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("server directory %s survived: %v", f.srv, err)
		}
	}
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if (f.tmp != "" && strings.HasPrefix(m.point, f.tmp)) || (f.srv != "" && strings.HasPrefix(m.point, f.srv)) || m.fstype == fstype && strings.Contains(m.source, serverAddr) {
			t.Errorf("mount survived: %+v", m)
		}
	}
	for _, pid := range f.sshdPIDs {
		if p, ok := readProc(pid); ok {
			t.Errorf("sshd %d survived, state %c", pid, p.state)
		}
	}
	for _, p := range allProcs() {
		if p.ppid == os.Getpid() {
			t.Errorf("child process survived: %+v", p)
		}
	}
}

// dir makes a directory for a mount target under the client side.
func (f *fixture) dir(name string) string {
	d := filepath.Join(f.tmp, name)
	must(f.t, os.Mkdir(d, 0o755))
	return d
}

// mount is the Mount of the share on target, staged on target's
// sibling, target.stage (see stage).
func (f *fixture) mount(target string, readOnly bool) Mount {
	st := stage(target)
	if err := os.Mkdir(st, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		f.t.Fatal(err)
	}
	return Mount{
		Netns: f.client, Target: target, Stage: st,
		User: sftpUser, Host: serverAddr, Port: sshPort, Remote: "/",
		Identity: f.identity, KnownHosts: f.knownHosts,
		ReadOnly: readOnly, UID: wwwData, GID: wwwData,
	}
}

// run starts Run in the background and returns the function that cancels
// it and returns Run's result. Cleanup calls it too.
func (f *fixture) run(m Mount) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(testWriter{f.t}, nil))
	go func() { done <- Run(ctx, m, log) }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("Run did not return within 20 s of cancel")
		}
	})
	f.t.Cleanup(func() {
		if err := stop(); err != nil {
			f.t.Error(err)
		}
	})
	return stop
}

// waitMounted waits until Mounted(target) and the mount answers (sshfs
// mounts before it connects), and returns the PID of the sshfs behind it:
// the test's child running with target in its arguments.
func waitMounted(t *testing.T, target string) int {
	t.Helper()
	hosttest.Eventually(t, mountWait, target+" mounted and answering", func() bool {
		ok, err := Mounted(target)
		if err != nil {
			t.Fatal(err)
		}
		return ok && fsDo(func() error { _, err := os.Stat(target); return err }) == nil
	})
	pid := sshfsPID(target)
	if pid == 0 {
		t.Fatalf("%s is mounted but no sshfs child of the test serves it", target)
	}
	return pid
}

// stage is where the tests' sshfs mounts for target.
func stage(target string) string { return target + ".stage" }

// sshfsPID finds the sshfs that Run started for target, by scanning /proc.
func sshfsPID(target string) int {
	for _, p := range allProcs() {
		if p.ppid != os.Getpid() || p.comm != "sshfs" {
			continue
		}
		// sshfs is given the target's stage as its descriptor 3
		// (pinnedTarget).
		args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		pinned, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", p.pid))
		if bytes.HasSuffix(args, []byte("\x00"+pinnedTarget+"\x00")) && pinned == stage(target) {
			return p.pid
		}
	}
	return 0
}

// TestMount mounts the site read-write with a prepared target and
// read-only without, and checks what the node would see: contents, owners,
// the kernel's and the server's permission checks, the network namespace
// the connection uses, propagation into a container's mount namespace, and
// that stopping leaves nothing behind.
func TestMount(t *testing.T) {
	f := newFixture(t)
	rw, ro := f.dir("rw"), f.dir("ro")

	// Prepare twice: one bind of rw on itself, in a peer group.
	must(t, PrepareTarget(rw))
	must(t, PrepareTarget(rw))
	t.Cleanup(func() {
		for range 2 {
			if err := ReleaseTarget(rw); err != nil {
				t.Error(err)
			}
		}
		if n := len(mountsOn(t, rw)); n != 0 {
			t.Errorf("%s still has %d mounts after ReleaseTarget", rw, n)
		}
	})
	if ms := mountsOn(t, rw); len(ms) != 1 || !ms[0].shared() {
		t.Fatalf("after PrepareTarget twice, mounts on %s: %+v; want one shared bind", rw, ms)
	}

	// A container's view: a mount namespace of its own that bound rw
	// before anything was mounted on it, with slave propagation, as runc
	// does with an rslave bind.
	view := f.dir("view")
	viewPID := f.startView(rw, view)
	if m := viewTop(t, viewPID, view); m == nil || !slicesHasPrefix(m.optional, "master:") {
		t.Fatalf("container view of %s: %+v; want a slave mount", view, m)
	}

	stopRW := f.run(f.mount(rw, false))
	stopRO := f.run(f.mount(ro, true))
	rwPID, roPID := waitMounted(t, rw), waitMounted(t, ro)

	t.Run("read", func(t *testing.T) {
		for _, dir := range []string{rw, ro} {
			got, err := readFile(filepath.Join(dir, "hello.txt"))
			if err != nil || string(got) != greeting {
				t.Errorf("read through %s: %q, %v; want %q", dir, got, err, greeting)
			}
			// Root's file on the server shows as www-data's: uid= and gid=.
			if uid, gid := owner(t, filepath.Join(dir, "hello.txt")); uid != wwwData || gid != wwwData {
				t.Errorf("owner through %s: %d:%d, want %d:%d", dir, uid, gid, wwwData, wwwData)
			}
		}
	})

	t.Run("re-sync", func(t *testing.T) {
		// A deploy rewrites a file on the storage node; the node must see
		// the new version within seconds (the caches' timeouts), not serve
		// the old one from its page cache.
		server := filepath.Join(f.site, "index.php")
		must(t, os.WriteFile(server, []byte("<?php echo 1;\n"), 0o644))
		waitRead(t, filepath.Join(ro, "index.php"), "<?php echo 1;\n")
		must(t, os.WriteFile(server, []byte("<?php echo 'two';\n"), 0o644))
		began := time.Now()
		hosttest.Eventually(t, resyncWait, "the new version through the mount", func() error {
			// PHP's opcache revalidates by stat(), so the attributes must
			// change as well as the contents.
			var st syscall.Stat_t
			if err := fsDo(func() error { return syscall.Stat(filepath.Join(ro, "index.php"), &st) }); err != nil || st.Size != int64(len("<?php echo 'two';\n")) {
				return fmt.Errorf("stat through the mount says size %d, %v", st.Size, err)
			}
			got, err := readFile(filepath.Join(ro, "index.php"))
			if err == nil && string(got) == "<?php echo 'two';\n" {
				return nil
			}
			return fmt.Errorf("the mount still reads %q, %v", got, err)
		})
		t.Logf("the new version showed after %v", time.Since(began).Round(10*time.Millisecond))
	})

	t.Run("write", func(t *testing.T) {
		if err := fsDo(func() error {
			return os.WriteFile(filepath.Join(rw, "uploads", "root.txt"), []byte("from root\n"), 0o644)
		}); err != nil {
			t.Fatalf("write through the rw mount: %v", err)
		}
		server := filepath.Join(f.site, "uploads", "root.txt")
		got, err := os.ReadFile(server)
		if err != nil || string(got) != "from root\n" {
			t.Errorf("server side %s: %q, %v", server, got, err)
		}
		// The server writes as the SFTP account, whoever wrote locally.
		if uid, _ := owner(t, server); uid != wwwData {
			t.Errorf("server side owner %d, want %d (%s)", uid, wwwData, sftpUser)
		}
	})

	t.Run("permissions", func(t *testing.T) {
		// default_permissions: the kernel checks the mode bits as shown.
		// uploads shows as www-data's 0755, so nobody may not write there,
		// though the SFTP account could.
		err := writeAs(nobody, filepath.Join(rw, "uploads", "nobody.txt"))
		if err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("nobody writing through the mount: %v; want permission denied", err)
		}
		if err := writeAs(wwwData, filepath.Join(rw, "uploads", "www.txt")); err != nil {
			t.Errorf("www-data writing uploads: %v", err)
		}
		if uid, _ := owner(t, filepath.Join(f.site, "uploads", "www.txt")); uid != wwwData {
			t.Errorf("server side owner of www.txt %d, want %d", uid, wwwData)
		}
		// The chroot is root's on the server: the kernel lets www-data try
		// (it sees its own directory), the server refuses.
		if err := writeAs(wwwData, filepath.Join(rw, "top.txt")); err == nil {
			t.Error("www-data wrote into the root-owned chroot")
		}
		if _, err := os.Stat(filepath.Join(f.site, "top.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("top.txt on the server: %v", err)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		err := fsDo(func() error { return os.WriteFile(filepath.Join(ro, "uploads", "ro.txt"), []byte("x"), 0o644) })
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("write through the ro mount: %v; want EROFS", err)
		}
		if _, err := os.Stat(filepath.Join(f.site, "uploads", "ro.txt")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ro.txt on the server: %v", err)
		}
	})

	t.Run("netns", func(t *testing.T) {
		// The SSH connections are sockets of the client namespace, from its
		// address, owned by ssh; the host namespace has none. (The key's
		// from= option already refused any other source address.)
		peer := fmt.Sprintf("%s:%d", serverAddr, sshPort)
		in := ssEstablished(t, f.client)
		n := 0
		for _, l := range in {
			if strings.Contains(l, clientAddr+":") && strings.Contains(l, peer) && strings.Contains(l, `(("ssh",`) {
				n++
			}
		}
		if n != 2 {
			t.Errorf("ssh connections %s -> %s in %s: %d, want 2 (rw and ro):\n%s", clientAddr, peer, f.client, n, strings.Join(in, "\n"))
		}
		for _, l := range ssEstablished(t, "") {
			if strings.Contains(l, peer) {
				t.Errorf("the host namespace has a connection to %s: %s", peer, l)
			}
		}
	})

	t.Run("propagation", func(t *testing.T) {
		if m := viewTop(t, viewPID, view); m == nil || m.fstype != fstype {
			t.Fatalf("container view of %s: %+v; want the sshfs", view, m)
		}
		p := fmt.Sprintf("/proc/%d/root%s/hello.txt", viewPID, view)
		if got, err := readFile(p); err != nil || string(got) != greeting {
			t.Errorf("read %s: %q, %v", p, got, err)
		}
	})

	t.Run("links", func(t *testing.T) {
		// The storage node's root makes the links the share shows, and
		// runs the server that says where they lead: a node's daemon
		// that follows one (Caddy does) would serve the node's own
		// files. The kernel follows none of them (ELOOP), on the host
		// nor in the container's view, before it would ask the server;
		// without nosymfollow, only what the server answers decides.
		must(t, os.Symlink("/etc/hostname", filepath.Join(f.site, "uploads", "host.css")))
		must(t, os.Symlink("../hello.txt", filepath.Join(f.site, "uploads", "hello.css")))
		t.Cleanup(func() {
			os.Remove(filepath.Join(f.site, "uploads", "host.css"))
			os.Remove(filepath.Join(f.site, "uploads", "hello.css"))
		})
		for _, dir := range []string{rw, ro, fmt.Sprintf("/proc/%d/root%s", viewPID, view)} {
			for _, name := range []string{"host.css", "hello.css"} {
				p := filepath.Join(dir, "uploads", name)
				hosttest.Eventually(t, resyncWait, "the link "+p, func() error {
					fi, err := os.Lstat(p)
					if err == nil && fi.Mode()&fs.ModeSymlink == 0 {
						err = fmt.Errorf("%s is %v, not a link", p, fi.Mode())
					}
					return err
				})
				if got, err := readFile(p); !errors.Is(err, syscall.ELOOP) {
					t.Errorf("read through the link %s: %q, %v; want ELOOP", p, got, err)
				}
			}
		}
		for _, m := range []*mount{top(mustMountinfo(t), rw), viewTop(t, viewPID, view)} {
			if m == nil || !slices.Contains(m.opts, "nosymfollow") {
				t.Errorf("the share as the node sees it: %+v; want nosymfollow", m)
			}
		}
	})

	t.Run("stop", func(t *testing.T) {
		for _, stop := range []func() error{stopRW, stopRO} {
			if err := stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
		}
		for _, dir := range []string{rw, ro} {
			if ok, err := Mounted(dir); ok || err != nil {
				t.Errorf("Mounted(%s) after stop: %v, %v", dir, ok, err)
			}
		}
		// The prepared bind stays, for the next Run.
		if ms := mountsOn(t, rw); len(ms) != 1 || ms[0].fstype == fstype {
			t.Errorf("mounts on %s after stop: %+v; want the bind alone", rw, ms)
		}
		if m := viewTop(t, viewPID, view); m != nil && m.fstype == fstype {
			t.Errorf("the container view still shows the sshfs: %+v", m)
		}
		checkGone(t, rwPID)
		checkGone(t, roPID)
	})
}

// TestRecover kills the storage server and then sshfs itself, and checks
// that the mount comes back each time.
func TestRecover(t *testing.T) {
	f := newFixture(t)
	dir := f.dir("site")
	stop := f.run(f.mount(dir, false))
	pid := waitMounted(t, dir)
	if got, err := readFile(filepath.Join(dir, "hello.txt")); err != nil || string(got) != greeting {
		t.Fatalf("first read: %q, %v", got, err)
	}

	t.Run("server restart", func(t *testing.T) {
		f.stopSSHD()
		f.startSSHD()
		// A file the mount has never seen, so no cache can answer.
		must(t, os.WriteFile(filepath.Join(f.site, "after-restart.txt"), []byte("back\n"), 0o644))
		waitRead(t, filepath.Join(dir, "after-restart.txt"), "back\n")
		if now := sshfsPID(dir); now != pid {
			t.Logf("sshfs was restarted (pid %d, then %d)", pid, now)
		} else {
			t.Logf("sshfs %d reconnected", pid)
		}
	})

	t.Run("sshfs killed", func(t *testing.T) {
		old := sshfsPID(dir)
		if old == 0 {
			t.Fatal("no sshfs")
		}
		// The mount turns stale (ENOTCONN); Run must replace it.
		must(t, syscall.Kill(old, syscall.SIGKILL))
		must(t, os.WriteFile(filepath.Join(f.site, "after-kill.txt"), []byte("again\n"), 0o644))
		waitRead(t, filepath.Join(dir, "after-kill.txt"), "again\n")
		now := sshfsPID(dir)
		if now == 0 || now == old {
			t.Errorf("sshfs pid %d after killing %d; want a new one", now, old)
		}
		if ms := mountsOn(t, dir); len(ms) != 1 {
			t.Errorf("mounts on %s: %+v; want the new sshfs alone, not stacked on the stale one", dir, ms)
		}
		checkGone(t, old)
		pid = now
	})

	t.Run("stop", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok, err := Mounted(dir); ok || err != nil {
			t.Errorf("Mounted after stop: %v, %v", ok, err)
		}
		checkGone(t, pid)
	})

	t.Run("an orphan sshfs on the stage", func(t *testing.T) {
		// What a killed supervisor leaves, once the node's namespace is
		// gone too (a reboot, simulated): its sshfs lives on, on the
		// stage, without a server, and answers EIO. A new Run must
		// start all the same, and replace its mount. (The orphan itself
		// is no process Run knows of: cleanup kills it.)
		m := f.mount(dir, false)
		pin, err := pinDir(m.Stage)
		must(t, err)
		argv := m.Argv()
		orphan := exec.Command(argv[0], argv[1:]...)
		orphan.Dir = "/"
		orphan.ExtraFiles = []*os.File{pin}
		orphan.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		must(t, orphan.Start())
		pin.Close()
		waited := make(chan struct{})
		go func() { orphan.Wait(); close(waited) }()
		t.Cleanup(func() {
			syscall.Kill(-orphan.Process.Pid, syscall.SIGKILL)
			<-waited
			// Its mount, were Run not to have replaced it.
			if err := Unmount(m.Stage); err != nil {
				t.Error(err)
			}
		})
		hosttest.Eventually(t, mountWait, "the orphan's mount", func() error {
			return fsDo(func() error { _, err := os.Stat(filepath.Join(m.Stage, "hello.txt")); return err })
		})
		f.stopSSHD()
		hosttest.Eventually(t, mountWait, "the orphan's mount to fail", func() bool {
			return fsDo(func() error { _, err := os.Stat(m.Stage); return err }) != nil
		})
		stop := f.run(m)
		f.startSSHD()
		must(t, os.WriteFile(filepath.Join(f.site, "after-orphan.txt"), []byte("new\n"), 0o644))
		waitRead(t, filepath.Join(dir, "after-orphan.txt"), "new\n")
		for _, d := range []string{dir, m.Stage} {
			if ms := mountsOn(t, d); len(ms) != 1 {
				t.Errorf("mounts on %s: %+v; want Run's alone, not stacked on the orphan's", d, ms)
			}
		}
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// startView starts a process in a new mount namespace, a copy of the
// host's, that binds src at dst with slave propagation and sleeps. It
// returns its PID once the bind is in place; cleanup kills it.
func (f *fixture) startView(src, dst string) int {
	t := f.t
	t.Helper()
	// unshare and sh exec: the child's PID is the sleeper's.
	cmd := exec.Command("unshare", "--mount", "--propagation", "unchanged", "sh", "-c",
		`mount --bind "$1" "$2" && mount --make-rslave "$2" && exec sleep 3600`, "sh", src, dst)
	cmd.Dir = "/"
	var out hosttest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		cmd.Wait()
	})
	// The script execs sleep only once both mounts are done; the bind
	// alone shows before --make-rslave has run, and a caller that checks
	// the propagation then would race it.
	hosttest.Eventually(t, 5*time.Second, "container view binding "+dst, func() error {
		p, ok := readProc(pid)
		if ok && p.comm == "sleep" && viewTop(t, pid, dst) != nil {
			return nil
		}
		if !ok || p.state == 'Z' {
			t.Fatalf("container view did not bind %s: %s", dst, out.String())
		}
		return errors.New(out.String())
	})
	return pid
}

// viewTop returns the top mount on point in the mount namespace of pid.
func viewTop(t *testing.T, pid int, point string) *mount {
	t.Helper()
	fh, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	ms, err := parseMountinfo(fh)
	if err != nil {
		t.Fatal(err)
	}
	return top(ms, point)
}

// mustMountinfo is the host's mount table.
func mustMountinfo(t *testing.T) []mount {
	t.Helper()
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// mountsOn lists the host's mounts on point, bottom first.
func mountsOn(t *testing.T, point string) []mount {
	t.Helper()
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	var out []mount
	for _, m := range ms {
		if m.point == point {
			out = append(out, m)
		}
	}
	return out
}

// checkGone checks that an sshfs Run started is gone, reaped (no zombie),
// and that nothing of its process group (the ssh it forked) lives on. An
// exited ssh is init's child; init reaps it, so its zombie is only logged.
func checkGone(t *testing.T, pid int) {
	t.Helper()
	if p, ok := readProc(pid); ok {
		t.Errorf("sshfs %d still exists, state %c", pid, p.state)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var live, zombies []proc
		for _, p := range allProcs() {
			if p.pgrp != pid {
				continue
			}
			if p.state == 'Z' {
				zombies = append(zombies, p)
			} else {
				live = append(live, p)
			}
		}
		for _, z := range zombies {
			if z.ppid == os.Getpid() {
				t.Errorf("zombie child of the test: %+v", z)
			}
		}
		if len(live) == 0 {
			if len(zombies) > 0 {
				t.Logf("exited, awaiting init's reaping: %+v", zombies)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of sshfs %d's group live on: %+v", pid, live)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ssEstablished lists established TCP sockets in ns ("" for the host) with
// their processes.
func ssEstablished(t *testing.T, ns string) []string {
	t.Helper()
	args := []string{"ss", "-Htnp", "state", "established"}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// writeAs writes a file as uid (and gid uid), in a child process.
func writeAs(uid int, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), fsOpLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `printf x > "$1"`, "sh", path)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// fsDo runs a file operation that a broken mount could block, and gives up
// on it after fsOpLimit.
func fsDo(op func() error) error {
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return err
	case <-time.After(fsOpLimit):
		return fmt.Errorf("blocked for %v", fsOpLimit)
	}
}

func readFile(path string) ([]byte, error) {
	var b []byte
	err := fsDo(func() (err error) { b, err = os.ReadFile(path); return err })
	return b, err
}

// waitRead reads path until it holds want.
func waitRead(t *testing.T, path, want string) {
	t.Helper()
	hosttest.Eventually(t, recoverWait, fmt.Sprintf("%s holding %q", path, want), func() error {
		got, err := readFile(path)
		if err == nil && string(got) == want {
			return nil
		}
		return fmt.Errorf("read %q, %v", got, err)
	})
}

func owner(t *testing.T, path string) (uid, gid int) {
	t.Helper()
	var st syscall.Stat_t
	if err := fsDo(func() error { return syscall.Stat(path, &st) }); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return int(st.Uid), int(st.Gid)
}

// proc is what the tests read of /proc/PID/stat.
type proc struct {
	pid, ppid, pgrp int
	state           byte
	comm            string
}

func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return proc{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 3 {
		return proc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return proc{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0], comm: s[open+1 : end]}, true
}

func allProcs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// descendants returns the processes below pid, found through their parents.
func descendants(pid int) []int {
	children := map[int][]int{}
	for _, p := range allProcs() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

func slicesHasPrefix(ss []string, prefix string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readOrFatal(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testWriter sends Run's log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestAnsweringEach tells a mount that answers from one that is only
// listed: bulkhead up must not call a node healthy while its site mount is
// still connecting. At a cold up of 100 app nodes, 31 of 101 mounts timed
// out in the banner exchange and were made again, some after up had said
// the stack was up (2026-11-30). A stopped sshfs stands for one that has
// not connected: its mount is listed, and a stat waits for it.
func TestAnsweringEach(t *testing.T) {
	f := newFixture(t)
	dir := f.dir("site")
	f.run(f.mount(dir, false))
	pid := waitMounted(t, dir)
	const limit = 10 * time.Second
	if ok, err := AnsweringEach([]string{dir, f.dir("never")}, limit); err != nil || !slices.Equal(ok, []bool{true, false}) {
		t.Fatalf("AnsweringEach(mounted, not mounted) = %v, %v; want [true false]", ok, err)
	}
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	// Once the kernel's cached attributes of the mount's root expire (1 s),
	// a stat has to ask the stopped sshfs.
	hosttest.Eventually(t, mountWait, "a stopped sshfs's mount listed but not answering", func() bool {
		mounted, err := MountedEach([]string{dir})
		must(t, err)
		ok, err := AnsweringEach([]string{dir}, 200*time.Millisecond)
		must(t, err)
		return mounted[0] && !ok[0]
	})
	must(t, syscall.Kill(pid, syscall.SIGCONT))
	hosttest.Eventually(t, mountWait, "the mount answering again", func() bool {
		ok, err := AnsweringEach([]string{dir}, limit)
		must(t, err)
		return ok[0]
	})
}
