package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// A stack's supervisor runs as one of a pair of processes: the supervisor
// and its keeper, a `bulkhead keep` that does nothing but watch it. Each
// watches the other and starts a new one when the other dies, so that a
// supervisor that is killed (the OOM killer, a stray kill -9) is back
// within a second, not at the next up or reboot, with no init system to
// restart it: this host has no systemd as PID 1.
//
// Each watches the other through a pipe, not by pid: the watched process
// holds the only write end, so the watcher's read returns the moment it
// ends, however it ends, and no recycled pid is ever mistaken for it. A
// process that stops on purpose (SIGTERM, from down or from an up that
// replaces the pair) first writes one byte: its peer then lets it go. A
// keeper ends with its supervisor; a supervisor whose keeper was stopped
// runs on alone. Only a death without that byte is restarted.
//
// Both are in the journal, the supervisor as KindProcess and the keeper as
// KindKeeper, and the one that starts a new peer records it there, so
// that down stops exactly them, the keeper first. Both killed at once is
// the reboot's case: `bulkhead boot` brings the stack back.

// PairLink is a paired process's two pipes to its peer.
type PairLink struct {
	peer *os.File // read end; the peer holds the only write end
	self *os.File // write end; the peer reads the other end
	// ended receives once, when the peer has ended: true if it said it
	// stopped on purpose.
	ended chan bool
}

func newLink(peer, self *os.File) *PairLink {
	l := &PairLink{peer: peer, self: self, ended: make(chan bool, 1)}
	go func() {
		var b [1]byte
		n, _ := peer.Read(b[:])
		l.ended <- n == 1
	}()
	return l
}

// bye tells the peer that this process stops on purpose, and lets go of
// the link.
func (l *PairLink) bye() {
	l.self.Write([]byte{1}) // EPIPE when the peer is gone already
	l.close()
}

func (l *PairLink) close() {
	l.self.Close()
	l.peer.Close()
}

// pairFDs are the descriptors a paired process finds its link on: the
// read end of its peer's pipe, then the write end of its own.
const (
	peerFD = 3
	selfFD = 4
)

// InheritPair returns the link a paired process was started with, on
// descriptors 3 and 4, and makes sure that none of the processes it starts
// inherits them, or anything else it inherited: a copy of its write end
// in an sshfs or a container would outlive it and hide its death.
func InheritPair() (*PairLink, error) {
	for fd, want := range map[int]int{peerFD: unix.O_RDONLY, selfFD: unix.O_WRONLY} {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("descriptor %d: %w (a paired process is started with its pipes on descriptors 3 and 4)", fd, err)
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return nil, fmt.Errorf("descriptor %d: %w", fd, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFIFO || flags&unix.O_ACCMODE != want {
			return nil, fmt.Errorf("descriptor %d is not the pipe end a paired process is started with", fd)
		}
		// In the runtime's poller, so that a read can be given up.
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, err
		}
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return nil, err
	}
	return newLink(os.NewFile(peerFD, "peer"), os.NewFile(selfFD, "self")), nil
}

// pairArgs are the arguments of a paired process of kind (KindProcess for
// the supervisor, KindKeeper for the keeper) of stack under root.
// restarted says a supervisor replaces one that died, rather than being
// up's new one.
func pairArgs(kind, stack, root string, restarted bool) []string {
	args := []string{"supervise", "--stack", stack, "--root", root, "--paired"}
	if kind == KindKeeper {
		args = []string{"keep", "--stack", stack, "--root", root}
	} else if restarted {
		args = append(args, "--restarted")
	}
	return args
}

// spawn starts bin with args in a session of its own (Ctrl-C in the
// user's terminal must not reach it), writing to log, with extra as its
// descriptors 3 and on. It returns the process, not waited for, as an
// Object of kind.
func spawn(bin string, args []string, log *os.File, kind string, extra ...*os.File) (*exec.Cmd, Object, error) {
	// Go passes on every descriptor it did not open itself: one this
	// process inherited (a caller's lock, say) would be held by the pair,
	// and by its sshfs mounts, for the stack's life.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return nil, Object{}, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, Object{}, err
	}
	start, err := procStart(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, Object{}, err
	}
	return cmd, Object{Kind: kind, Name: strconv.Itoa(cmd.Process.Pid), Detail: start}, nil
}

// pipes makes n pipes, each as its read and write end.
func pipes(n int) ([][2]*os.File, error) {
	var out [][2]*os.File
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			for _, p := range out {
				p[0].Close()
				p[1].Close()
			}
			return nil, err
		}
		out = append(out, [2]*os.File{r, w})
	}
	return out, nil
}

// startPair starts stack's supervisor and its keeper, linked to each
// other, from bin; both write to log. It is up's: the two outlive it.
func startPair(bin, stack, root string, log *os.File) (sup, keeper Object, err error) {
	ps, err := pipes(2)
	if err != nil {
		return Object{}, Object{}, err
	}
	toSup, toKeeper := ps[0], ps[1] // each read by the one it is named for
	defer func() {
		for _, p := range ps {
			p[0].Close()
			p[1].Close()
		}
	}()
	supCmd, sup, err := spawn(bin, pairArgs(KindProcess, stack, root, false), log, KindProcess, toSup[0], toKeeper[1])
	if err != nil {
		return Object{}, Object{}, fmt.Errorf("start supervisor: %w", err)
	}
	keepCmd, keeper, err := spawn(bin, pairArgs(KindKeeper, stack, root, false), log, KindKeeper, toKeeper[0], toSup[1])
	if err != nil {
		// Its keeper's pipe closes with this function, which it would
		// take for the keeper's death.
		supCmd.Process.Kill()
		supCmd.Wait()
		return Object{}, Object{}, fmt.Errorf("start the supervisor's keeper: %w", err)
	}
	// Not waited for: they outlive this process and are re-parented to
	// init.
	return sup, keeper, errors.Join(supCmd.Process.Release(), keepCmd.Process.Release())
}

// startPeer starts a new peer of kind for this paired process and returns
// the link to it.
func (d *Driver) startPeer(stack, kind string) (*PairLink, *exec.Cmd, Object, error) {
	ps, err := pipes(2)
	if err != nil {
		return nil, nil, Object{}, err
	}
	toPeer, fromPeer := ps[0], ps[1]
	// The pair's log is this process's stderr (see startPair).
	cmd, o, err := spawn(d.paths(stack).binary(), pairArgs(kind, stack, d.root(), true), os.Stderr, kind, toPeer[0], fromPeer[1])
	toPeer[0].Close()
	fromPeer[1].Close()
	if err != nil {
		toPeer[1].Close()
		fromPeer[0].Close()
		return nil, nil, Object{}, err
	}
	return newLink(fromPeer[0], toPeer[1]), cmd, o, nil
}

// self is this process as the journal records it, as a paired process of
// kind.
func self(kind string) (Object, error) {
	start, err := procStart(os.Getpid())
	if err != nil {
		return Object{}, err
	}
	return Object{Kind: kind, Name: strconv.Itoa(os.Getpid()), Detail: start}, nil
}

// peerKind is the kind of a paired process's peer.
func peerKind(kind string) string {
	if kind == KindKeeper {
		return KindProcess
	}
	return KindKeeper
}

// peerName names a kind of paired process in the log.
func peerName(kind string) string {
	if kind == KindKeeper {
		return "keeper"
	}
	return "supervisor"
}

// keepPeer watches the peer at the other end of l and starts a new one
// each time it dies, with the backoff of a node's container (see
// restarts), until ctx is done or the peer stops on purpose. When ctx is
// done, it tells the peer this process stops on purpose. me is this
// process.
func (d *Driver) keepPeer(ctx context.Context, stack string, me Object, l *PairLink, log *slog.Logger) {
	kind := peerKind(me.Kind)
	name := peerName(kind)
	r := &restarts{}
	for {
		select {
		case <-ctx.Done():
			l.bye()
			return
		case onPurpose := <-l.ended:
			l.close()
			if onPurpose {
				log.Info("the " + name + " stopped on purpose; letting it go")
				return
			}
		}
		r.died(time.Now())
		for !r.due(time.Now()) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(r.Next)):
			}
		}
		r.started(time.Now())
		log.Warn("the "+name+" died; starting another", "restarts", r.Count, "next_not_before", r.Next.Format(time.RFC3339))
		nl, cmd, o, err := d.startPeer(stack, kind)
		if err != nil {
			log.Error("start the "+name, "err", err)
			l = endedLink()
			continue
		}
		log.Info("started the "+name, "pid", o.Name)
		exited := make(chan struct{})
		go func() {
			err := cmd.Wait()
			log.Info("the "+name+" exited", "pid", o.Name, "status", fmt.Sprint(err))
			close(exited)
		}()
		l = nl
		if err := d.recordPair(ctx, stack, me, o); err != nil {
			if ctx.Err() == nil && !errors.Is(err, errAbandoned) {
				log.Error("record the new "+name+" in the journal", "err", err)
				continue
			}
			// Down would not know of it: it ends with this process.
			log.Info("stopping the new "+name+", which the journal does not record", "pid", o.Name, "why", err)
			stopChild(cmd, exited)
			l.close()
			return
		}
	}
}

// endedLink is a link whose peer has died.
func endedLink() *PairLink {
	l := &PairLink{ended: make(chan bool, 1)} // nil files: Close and Write fail harmlessly
	l.ended <- false
	return l
}

// stopChild ends a child that is not yet waited for: SIGTERM, then
// SIGKILL after five seconds, within the ten that stopProcess gives this
// process before it kills it. exited closes once it has been waited for.
func stopChild(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return
	case <-time.After(5 * time.Second):
	}
	cmd.Process.Kill()
	<-exited
}

// errAbandoned says the journal no longer records a supervisor pair:
// down took the stack down.
var errAbandoned = errors.New("the journal records no supervisor or keeper: the stack was taken down")

// peerExit is how long recordPair waits for a peer whose pipe has ended
// to be gone from /proc too. The kernel closes a killed process's
// descriptors a moment before it marks the process exited; on a loaded
// host that moment was seen to outlast the few milliseconds this process
// takes to start a new peer, and the dead one stayed in the journal beside
// it until the next up.
const peerExit = 5 * time.Second

// recordPair records peer, the process that me (one of the pair) started
// in place of one that died, and forgets the dead. It waits for the
// stack's lock: an up, say, may hold it for minutes, while the new peer
// already runs.
func (d *Driver) recordPair(ctx context.Context, stack string, me, peer Object) error {
	ps := d.paths(stack)
	if _, err := os.Stat(ps.journal()); errors.Is(err, fs.ErrNotExist) {
		return errAbandoned
	}
	// The dead peer is the recorded one of its kind; it is waited for
	// without the lock.
	if j, err := loadJournal(ps.journal(), stack); err == nil {
		for _, o := range j.list(peer.Kind) {
			for deadline := time.Now().Add(peerExit); o != peer && alive(o) && time.Now().Before(deadline); {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	unlock, err := d.lockStack(ctx, stack, true)
	if err != nil {
		return err
	}
	defer unlock()
	j, err := loadJournal(ps.journal(), stack)
	if err != nil {
		return err
	}
	recorded := append(j.list(KindProcess), j.list(KindKeeper)...)
	if len(recorded) == 0 {
		return errAbandoned
	}
	var dead []Object
	for _, o := range recorded {
		if o != me && !alive(o) {
			dead = append(dead, o)
		}
	}
	// In one write: status, say, reads the journal without the lock, and
	// must find the pair whole, neither without the new peer nor with
	// the dead one beside it.
	return j.replace(dead, me, peer)
}

// Keep is the keeper of stack's supervisor, linked to it by l: it starts
// a new supervisor whenever the one it watches dies, and ends when ctx is
// done or the supervisor stops on purpose.
func (d *Driver) Keep(ctx context.Context, stack string, l *PairLink) error {
	me, err := self(KindKeeper)
	if err != nil {
		return err
	}
	log := d.logger().With("stack", stack, "keeper", me.Name)
	log.Info("keeper started")
	d.keepPeer(ctx, stack, me, l, log)
	log.Info("keeper stopped")
	return nil
}

// pairProcesses finds the running processes of stack's supervisor pair by
// their command lines, as pairArgs makes them: bin, then supervise or
// keep, --stack stack and --root root, in that order. Only the host's
// root, in this process's pid namespace, runs the pair: a node's processes
// show in the host's /proc too, and root in a node can give one any
// command line.
func pairProcesses(bin, stack, root string) ([]Object, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	hostNS, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue // gone meanwhile
		}
		kind := pairCommand(strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00"), bin, stack, root)
		if kind == "" || !hostRoot(pid, hostNS) {
			continue
		}
		start, err := procStart(pid)
		if err != nil {
			continue
		}
		out = append(out, Object{Kind: kind, Name: strconv.Itoa(pid), Detail: start})
	}
	return out, nil
}

// hostRoot reports whether process pid runs as the host's root, its real
// and effective uid 0 as the host sees them, in the pid namespace hostNS.
// A node's root is an id of the node's block on the host, in a pid
// namespace of the node's own.
func hostRoot(pid int, hostNS string) bool {
	if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || ns != hostNS {
		return false
	}
	proc, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := proc.NewStatus()
	return err == nil && st.UIDs[0] == 0 && st.UIDs[1] == 0
}

// pairCommand returns the kind of paired process of stack that the
// command line args runs, or "" if none. The pair runs the stack's own
// binary, bin, or, if an older bulkhead started it, the host's.
func pairCommand(args []string, bin, stack, root string) string {
	if len(args) < 6 || args[0] != bin && args[0] != filepath.Join(root, "bin", "bulkhead") || args[2] != "--stack" || args[3] != stack || args[4] != "--root" || args[5] != root {
		return ""
	}
	return map[string]string{"supervise": KindProcess, "keep": KindKeeper}[args[1]]
}
