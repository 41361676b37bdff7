// Package sshfs keeps a node's SFTP mount of the site alive. The mount is
// made on the host, in the host's mount namespace, by an sshfs whose network
// is the node's network namespace: its SSH connection leaves through the
// node's veth and passes the node's firewall, while the node itself needs
// neither /dev/fuse nor CAP_SYS_ADMIN. The node's container bind-mounts the
// host directory with slave propagation (see PrepareTarget) and so sees each
// new mount, including one made after the container started.
package sshfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// Mount is one sshfs mount of a directory of the storage node.
type Mount struct {
	// Netns is the named network namespace (under /var/run/netns) whose
	// network sshfs and its ssh use: the consumer node's. Only the network
	// is entered; the mount lands in the host's mount namespace.
	Netns string
	// Target is the host directory the node sees the share on: an
	// absolute path. What is mounted there follows no link (nosymfollow):
	// the storage node's root controls the server, and so every link the
	// share shows, and a node's daemon must not be led by one to the
	// node's own files (see Stage).
	Target string
	// Stage is the host directory sshfs itself mounts on: an absolute
	// path that no node's mount namespace receives mounts from. Once
	// sshfs is mounted there, Run attaches a copy of that mount on Target
	// that follows no link, so that no node ever sees the share any other
	// way, not even for a moment.
	Stage string
	// User and Host are the SFTP account and the storage node's address,
	// e.g. "site-rw" and "10.77.0.6". Nodes are IPv4-only.
	User, Host string
	// Port is the storage node's SSH port; 0 means 22.
	Port int
	// Remote is the absolute path on the server, "/" (the chroot) if empty.
	Remote string
	// Identity is the node's private key file. ssh ignores a key that
	// others may read, so it must have no group or other permissions.
	Identity string
	// KnownHosts pins the storage node's host key. No other known_hosts
	// file is read, and an unknown or changed key fails the connection.
	KnownHosts string
	// ReadOnly mounts with ro: the kernel refuses every write (EROFS)
	// whatever the server would allow.
	ReadOnly bool
	// UID and GID own every file as the node sees it (sshfs uid=, gid=),
	// whatever the owner on the server: set them to the account the node's
	// daemons run as (www-data, 33 on Debian). With default_permissions the
	// kernel then checks the mode bits against them, so other accounts in
	// the node get only the "other" bits; the server still decides what the
	// SFTP account may do. Zero means root.
	UID, GID int
}

// fstype is how the kernel lists an sshfs mount.
const fstype = "fuse.sshfs"

// Timing of the restart loop. A run that lasted stableAfter was a working
// mount, so the next failure starts the backoff afresh.
const (
	minBackoff  = time.Second
	maxBackoff  = 30 * time.Second
	stableAfter = 30 * time.Second
	stopGrace   = 5 * time.Second
	pollMounted = 100 * time.Millisecond
	drainLimit  = 2 * time.Second
)

// Validate checks the fields without touching the host.
func (m Mount) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.Netns == "" || strings.ContainsAny(m.Netns, "/\x00") || m.Netns == "." || m.Netns == ".." {
		bad("netns %q: want the name of a namespace under %s", m.Netns, netns.Dir)
	}
	if !filepath.IsAbs(m.Target) {
		bad("target %q: want an absolute path", m.Target)
	}
	if !filepath.IsAbs(m.Stage) || filepath.Clean(m.Stage) == filepath.Clean(m.Target) {
		bad("stage %q: want an absolute path other than the target", m.Stage)
	}
	if m.User == "" || strings.ContainsAny(m.User, "@:,/ \t\n\x00") {
		bad("user %q: want an account name", m.User)
	}
	// sshfs parses the source as [user@]host:path; a colon in the host
	// (IPv6) would need brackets that the stack never uses.
	if m.Host == "" || strings.ContainsAny(m.Host, "@:,/[] \t\n\x00") {
		bad("host %q: want an IPv4 address or a host name", m.Host)
	}
	if m.Port < 0 || m.Port > 65535 {
		bad("port %d: want 1-65535, or 0 for 22", m.Port)
	}
	if m.Remote != "" && !strings.HasPrefix(m.Remote, "/") {
		bad("remote path %q: want an absolute path", m.Remote)
	}
	// -o splits its argument on commas.
	for _, f := range []struct{ name, path string }{{"identity", m.Identity}, {"known hosts", m.KnownHosts}} {
		if !filepath.IsAbs(f.path) || strings.ContainsAny(f.path, ",\n\x00") {
			bad("%s file %q: want an absolute path without commas", f.name, f.path)
		}
	}
	if m.UID < 0 || m.GID < 0 {
		bad("uid %d, gid %d: want ids of 0 or more", m.UID, m.GID)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sshfs mount on %s: %w", m.Target, err)
	}
	return nil
}

// source is sshfs's [user@]host:path argument.
func (m Mount) source() string {
	remote := m.Remote
	if remote == "" {
		remote = "/"
	}
	return m.User + "@" + m.Host + ":" + remote
}

func (m Mount) port() int {
	if m.Port == 0 {
		return 22
	}
	return m.Port
}

// Options returns the -o options sshfs is given, in order.
func (m Mount) Options() []string {
	opts := []string{
		// Reconnect on the next file access after the connection drops
		// (the storage node restarted): sshfs and the mount stay, open
		// files fail once and must be reopened.
		"reconnect",
		// Notice a silently dead server within 15 s, so a hung mount turns
		// into a reconnect instead of blocking readers forever; and don't
		// let a reconnect wait out TCP's SYN timeout on a dropped packet.
		// 15 s to connect, not 5: at a cold up of 100 app nodes on 2
		// cores, the storage node's sshd took longer than 5 s to send
		// its banner to 17 to 31 of the 101 mounts, which then failed
		// and began again (2026-11-30). A storage node that is down
		// refuses at once; the timeout only bounds one that is slow.
		"ServerAliveInterval=5",
		"ServerAliveCountMax=3",
		"ConnectTimeout=15",
		// This key and this host key only, no agent, no prompt: a node's
		// mount either authenticates as configured or fails.
		"IdentityFile=" + m.Identity,
		"IdentitiesOnly=yes",
		"UserKnownHostsFile=" + m.KnownHosts,
		"GlobalKnownHostsFile=/dev/null",
		"StrictHostKeyChecking=yes",
		"UpdateHostKeys=no",
		"BatchMode=yes",
		// X25519 alone, not OpenSSH 9's default sntrup761 hybrid, whose key
		// generation on the client was a third of a mount's CPU (0.27
		// against 0.18 CPU-s a login, measured 2026-11-30: 100 app nodes
		// mount the site at every cold up). The hybrid guards recorded
		// traffic against a future quantum computer; this traffic crosses
		// only the host's own bridge, where recording it takes root on the
		// host, which has the site already.
		"KexAlgorithms=curve25519-sha256",
		// root mounts it for the node's daemons, which run as other users.
		"allow_other",
		// The kernel checks the mode bits as shown (owner uid=/gid=). Without
		// it, allow_other would give every account in the node, nobody
		// included, all the rights of the SFTP account.
		"default_permissions",
		"uid=" + strconv.Itoa(m.UID),
		"gid=" + strconv.Itoa(m.GID),
		// The site's files are data, never programs or devices for the host.
		"nosuid",
		"nodev",
		"noexec",
		// Keep file contents cached in the kernel, but drop them when a file's
		// mtime or size changed at open. kernel_cache would never drop them
		// and serve stale code after a re-sync. sshfs's own attribute cache
		// holds 2 s instead of 20, so with the kernel's 1 s attribute cache a
		// re-synced file shows within about 3 s.
		"auto_cache",
		"dcache_timeout=2",
	}
	if m.ReadOnly {
		opts = append(opts, "ro")
	}
	return opts
}

// pinnedTarget is the mount point as sshfs is given it: the directory Run
// opened without following any link, as the child's descriptor 3. sshfs
// resolves it to that very directory, so a link swapped in on the path
// between the check and the mount is never followed.
const pinnedTarget = "/proc/self/fd/3"

// Argv returns the command Run starts: nsenter into the node's network
// namespace (and nothing else), then sshfs in the foreground, onto the
// pinned target.
func (m Mount) Argv() []string {
	return []string{
		"nsenter", "--net=" + netns.Path(m.Netns), "--",
		"sshfs", "-f",
		// No ssh_config: the options below are the whole configuration.
		"-F", "/dev/null",
		"-p", strconv.Itoa(m.port()),
		"-o", strings.Join(m.Options(), ","),
		m.source(), pinnedTarget,
	}
}

// Run mounts m and keeps it mounted until ctx is done. It runs sshfs in the
// foreground as its child, restarts it with backoff whenever it exits, and
// logs each change of state. When ctx is done it stops sshfs, unmounts
// target and returns nil, or the unmount's error. It returns early only for
// a Mount it cannot ever start (invalid fields, missing files or programs).
//
// Run owns m.Target. A working mount of the same source, read-only or not
// as m says, that is already there (an earlier supervisor's, whose sshfs
// outlived it) is adopted: watched until it stops working, so that a new
// supervisor takes over a live site without a gap. Any other mount there
// (a stale one from an sshfs that died, another source) is unmounted
// first.
func Run(ctx context.Context, m Mount, log *slog.Logger) error {
	if err := m.Validate(); err != nil {
		return err
	}
	target, err := canon(m.Target)
	if err != nil {
		return err
	}
	stage, err := canon(m.Stage)
	if err != nil {
		return err
	}
	m.Target, m.Stage = target, stage
	if err := m.check(); err != nil {
		return fmt.Errorf("sshfs mount on %s: %w", target, err)
	}
	log = log.With("target", target, "source", m.source(), "netns", m.Netns)
	argv := m.Argv()
	backoff := minBackoff
	if adopt(ctx, m, log) {
		log.Info("the adopted mount stopped working; mounting afresh")
	}
	// The copy on the target first: it is what the node uses.
	unmount := func() error { return errors.Join(Unmount(target), Unmount(stage)) }
	for ctx.Err() == nil {
		if err := unmount(); err != nil {
			log.Warn("remove the previous mount", "err", err)
		}
		began := time.Now()
		err := runOnce(ctx, argv, stage, target, log)
		if ctx.Err() != nil {
			break
		}
		if time.Since(began) >= stableAfter {
			backoff = minBackoff
		}
		log.Warn("sshfs exited; restarting", "err", err, "ran", time.Since(began).Round(time.Millisecond), "backoff", backoff)
		wait := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			wait.Stop()
		case <-wait.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
	// sshfs unmounts its own mount on SIGTERM, but not the copy on the
	// target; and not its own either when it had to be killed.
	if err := unmount(); err != nil {
		return err
	}
	log.Info("unmounted")
	return nil
}

// check looks on the host for what every start needs, so that a Mount that
// can never work fails at once instead of retrying forever.
func (m Mount) check() error {
	var errs []error
	for _, prog := range []string{"nsenter", "sshfs"} {
		if _, err := exec.LookPath(prog); err != nil {
			errs = append(errs, fmt.Errorf("%w (install the util-linux, sshfs and openssh-client packages)", err))
		}
	}
	if !netns.Exists(m.Netns) {
		errs = append(errs, fmt.Errorf("network namespace %s does not exist: create the node first", m.Netns))
	}
	for _, dir := range []string{m.Target, m.Stage} {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			errs = append(errs, fmt.Errorf("%s is not a directory", dir))
		case err != nil:
			// A stale sshfs there answers ENOTCONN once it died, and
			// EIO while it lives on without its connection (its
			// supervisor was killed, and the node's namespace went):
			// Run replaces it.
			if ok, merr := Mounted(dir); merr != nil || !ok {
				errs = append(errs, err)
			}
		}
	}
	if fi, err := os.Stat(m.Identity); err != nil {
		errs = append(errs, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		errs = append(errs, fmt.Errorf("identity %s has mode %v: ssh ignores it unless only its owner can read it (chmod 600)", m.Identity, fi.Mode().Perm()))
	}
	if _, err := os.Stat(m.KnownHosts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pinDir opens target, a directory, as a path descriptor, following no
// link anywhere on the way: a link where a directory should be is refused.
func pinDir(target string) (*os.File, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, target, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("mount target %s: %w (a link or no directory there; refusing to mount)", target, err)
	}
	return os.NewFile(uintptr(fd), target), nil
}

// answers reports whether the sshfs mounted on target answers: the
// mount's root, reached without following any link, is stat'ed, which
// waits for sshfs once the kernel's cached attributes have expired.
func answers(target string) bool {
	pin, err := pinDir(target)
	if err != nil {
		return false
	}
	defer pin.Close()
	_, err = pin.Stat()
	return err == nil
}

// attach puts on target, pinned, a copy of the sshfs mounted on stage
// that follows no link: the kernel refuses to follow any link the share
// shows (ELOOP), whatever the server says it is, while readlink still
// works. The copy is made detached, given nosymfollow, and only then
// attached, so that what propagates to the node has it from the start.
func attach(stage string, target *os.File) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, stage, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("copy the mount on %s: %w", stage, err)
	}
	defer unix.Close(fd)
	// The stage's own directory, were sshfs gone from it meanwhile, is
	// no share.
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return err
	}
	if st.Type != unix.FUSE_SUPER_MAGIC {
		return fmt.Errorf("nothing is mounted on %s any more", stage)
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSYMFOLLOW}); err != nil {
		return fmt.Errorf("make the copy of %s follow no link: %w", stage, err)
	}
	if err := unix.MoveMount(fd, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the copy of %s on %s: %w", stage, target.Name(), err)
	}
	return nil
}

// runOnce runs one sshfs, mounting on stage, until it exits or ctx is
// done, and returns how it ended; target gets the copy the node sees.
func runOnce(ctx context.Context, argv []string, stage, target string, log *slog.Logger) error {
	pin, err := pinDir(stage)
	if err != nil {
		return err
	}
	defer pin.Close()
	pinTarget, err := pinDir(target)
	if err != nil {
		return err
	}
	defer pinTarget.Close()
	// sshfs gets its own pipe for stderr rather than the caller's: a child
	// holding the caller's stdout or stderr keeps a reader of them waiting
	// for as long as the mount lives.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start sshfs: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/" // hold no directory of the caller's busy
	cmd.Stderr = w
	cmd.ExtraFiles = []*os.File{pin} // descriptor 3: pinnedTarget
	// sshfs double-forks ssh, which is then init's child but stays in this
	// process group: one signal to the group reaches both.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("start sshfs: %w", err)
	}
	pid := cmd.Process.Pid
	log = log.With("pid", pid)
	log.Info("sshfs started")

	drained := make(chan struct{})
	go func() {
		defer close(drained)
		logLines(r, log)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	gone := make(chan struct{})
	watched := make(chan struct{})
	unseen := make(chan error, 1)
	go func() {
		defer close(watched)
		if err := watchReady(stage, target, pinTarget, gone, log); err != nil {
			unseen <- err
		}
	}()

	var result error
	select {
	case result = <-exited:
	case <-ctx.Done():
		result = stop(pid, exited, log)
	case result = <-unseen:
		// A share the node cannot see is no mount: this run ends, and
		// Run's backoff paces the next.
		stop(pid, exited, log)
	}
	close(gone)
	// With sshfs gone, a request the watcher made fails at once.
	<-watched
	// ssh normally exits with sshfs, on the end of its input. The pipe
	// closes when both are gone; don't wait long for a straggler.
	select {
	case <-drained:
	case <-time.After(drainLimit):
		log.Warn("sshfs is gone but its ssh still holds its stderr; no longer logging it")
	}
	r.Close()
	<-drained
	return result
}

// watchReady attaches the copy on target, pinned as pin, once sshfs has
// mounted on stage, and logs "mounted" once that copy answers, or returns
// when gone closes. sshfs mounts first and connects after, so a mount can
// be listed and still fail; its first request is answered only once sshfs
// is connected, and fails if sshfs gives up. It returns the error of an
// attach that failed: the node would not see the share.
func watchReady(stage, target string, pin *os.File, gone <-chan struct{}, log *slog.Logger) error {
	tick := time.NewTicker(pollMounted)
	defer tick.Stop()
	attached := false
	for {
		select {
		case <-gone:
			return nil
		case <-tick.C:
		}
		if !attached {
			if ok, _ := Mounted(stage); !ok {
				continue
			}
			if err := attach(stage, pin); err != nil {
				return fmt.Errorf("the node cannot see the share: %w", err)
			}
			attached = true
		}
		if answers(target) {
			log.Info("mounted")
			return nil
		}
	}
}

// stop asks sshfs to unmount and exit, and kills its process group if it
// doesn't. A request stuck on a dead connection blocks only until sshfs
// dies; a lazy unmount alone would leave it blocked.
func stop(pid int, exited <-chan error, log *slog.Logger) error {
	log.Info("stopping sshfs")
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("signal sshfs", "err", err)
	}
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case err := <-exited:
		return err
	case <-grace.C:
	}
	log.Warn("sshfs ignored SIGTERM; killing its process group", "grace", stopGrace)
	// sshfs is not reaped yet, so the group id is still ours.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("kill sshfs", "err", err)
	}
	return <-exited
}

// logLines logs each line sshfs and ssh write to stderr, until the pipe
// closes. It keeps reading past an overlong line so that sshfs never blocks
// on a full pipe.
func logLines(r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			log.Warn("sshfs: " + line)
		}
	}
	if sc.Err() != nil {
		io.Copy(io.Discard, r)
	}
}

// adoptCheck is how often an adopted mount is checked, and how long a
// check may take before the mount counts as dead.
const adoptCheck = time.Second

// adopt watches a working sshfs mount of m's source already on m.Target
// until it stops working or ctx ends. It reports whether there was one.
func adopt(ctx context.Context, m Mount, log *slog.Logger) bool {
	if !adoptable(m) {
		return false
	}
	log.Info("adopted the live mount an earlier supervisor made")
	tick := time.NewTicker(adoptCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		if !adoptable(m) {
			return true
		}
	}
}

// adoptable reports whether the top mount on m.Target is sshfs, of m's
// source, read-only exactly when m is, following no link, and answers a
// stat within adoptCheck. One an older bulkhead made on the target
// itself, which follows links, is not.
func adoptable(m Mount) bool {
	ms, err := readMountinfo()
	if err != nil {
		return false
	}
	top := top(ms, m.Target)
	if top == nil || top.fstype != fstype || top.source != m.source() || slices.Contains(top.opts, "ro") != m.ReadOnly || !slices.Contains(top.opts, "nosymfollow") {
		return false
	}
	done := make(chan error, 1)
	go func() {
		_, err := os.Stat(m.Target)
		done <- err
	}()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(adoptCheck):
		return false // a stat stuck on a dead connection
	}
}
