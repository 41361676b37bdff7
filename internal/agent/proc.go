package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// proc is one started process, the leader of its own process group.
type proc struct {
	pid    int // also its process group id
	exited <-chan syscall.WaitStatus
}

// launcher starts processes and collects their exit statuses.
//
// It never uses exec.Cmd.Wait or os.Process.Wait: as PID 1 the agent must
// reap every orphan the kernel hands it, and a wait4(-1) reaper running next
// to per-process waits would steal their statuses. So in reap-all mode one
// reaper goroutine takes every exit status on SIGCHLD and hands those of the
// processes it started to their waiters, dropping the rest. Outside it
// (tests, a shell), a goroutine per process waits for that pid only, so the
// agent never reaps children that other code in the process owns.
type launcher struct {
	reapAll bool
	log     *slog.Logger
	devNull *os.File

	mu      sync.Mutex // held across fork and registration; see start
	waiting map[int]chan syscall.WaitStatus

	sigs chan os.Signal
	quit chan struct{}
	done chan struct{}
}

func newLauncher(reapAll bool, log *slog.Logger) (*launcher, error) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	l := &launcher{reapAll: reapAll, log: log, devNull: devNull, waiting: map[int]chan syscall.WaitStatus{}}
	if reapAll {
		// Subscribe before the first child exists; the reaper also drains
		// once on start, for children that exited before now.
		l.sigs = make(chan os.Signal, 1)
		l.quit = make(chan struct{})
		l.done = make(chan struct{})
		signal.Notify(l.sigs, syscall.SIGCHLD)
		go l.reap()
	}
	return l, nil
}

// start starts argv in a new process group, with stdin from /dev/null and
// stdout and stderr to out.
func (l *launcher) start(argv []string, out *os.File) (*proc, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	attr := &syscall.ProcAttr{
		Env: os.Environ(),
		// Fd puts the pipe back into blocking mode, which the child expects.
		Files: []uintptr{l.devNull.Fd(), out.Fd(), out.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	exited := make(chan syscall.WaitStatus, 1)
	// The reaper may collect the child's status the moment the child
	// exists. It looks the pid up under mu, so holding mu until the pid is
	// registered means it cannot miss it.
	l.mu.Lock()
	pid, err := syscall.ForkExec(path, argv, attr)
	if err == nil && l.reapAll {
		l.waiting[pid] = exited
	}
	l.mu.Unlock()
	runtime.KeepAlive(out)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	preferKill(pid)
	if !l.reapAll {
		go l.waitPid(pid, exited)
	}
	return &proc{pid: pid, exited: exited}, nil
}

// daemonOOMScore makes the kernel's OOM killer pick a daemon before the
// agent when a node runs out of memory: the agent restarts a killed daemon,
// but the agent's own death ends the container and every session in it.
// Raising a process's oom_score_adj needs no privilege (lowering the
// agent's would need CAP_SYS_RESOURCE, which a host may not grant).
const daemonOOMScore = 500

func preferKill(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(strconv.Itoa(daemonOOMScore)), 0o644)
}

// waitPid waits for one process the agent started.
func (l *launcher) waitPid(pid int, exited chan<- syscall.WaitStatus) {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// Someone else in this process reaped it; the status is lost.
			l.log.Error("wait", "pid", pid, "err", err)
			ws = lostStatus
		}
		break
	}
	exited <- ws
}

// lostStatus stands for an exit status that someone else collected: exit
// code 255.
const lostStatus = syscall.WaitStatus(255 << 8)

// reap collects exit statuses until close.
func (l *launcher) reap() {
	defer close(l.done)
	for {
		l.drain()
		select {
		case <-l.sigs:
		case <-l.quit:
			l.drain()
			return
		}
	}
}

// drain collects every exit status available now. Signals coalesce, so one
// SIGCHLD can stand for many exits.
func (l *launcher) drain() {
	for {
		var ws syscall.WaitStatus
		// No __WALL: threads and clone children with another exit signal
		// (such as the one the Go runtime forks once to probe for
		// CLONE_PIDFD and then waits for itself) are not ours to reap.
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none has exited
			return
		}
		l.mu.Lock()
		ch := l.waiting[pid]
		delete(l.waiting, pid)
		l.mu.Unlock()
		if ch != nil {
			ch <- ws // buffered, and each pid exits once
		} else {
			l.log.Debug("reaped orphan", "pid", pid, "exit", exitOf(ws, time.Now()).String())
		}
	}
}

func (l *launcher) close() {
	if l.reapAll {
		signal.Stop(l.sigs)
		close(l.quit)
		<-l.done
	}
	l.devNull.Close()
}

// signalGroup sends sig to process group pgid. A group that no longer
// exists is not an error.
//
// Only the groups of processes the agent started are signalled. Their pgid
// cannot be reused while any member, the leader's zombie included, is left;
// once all are gone, a new group with that number would need the pid space
// to wrap in between.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		// kill(-1) would signal every process; never.
		return fmt.Errorf("signal %v: invalid process group %d", sig, pgid)
	}
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal %v to process group %d: %w", sig, pgid, err)
	}
	return nil
}

// groupAlive reports whether process group pgid has a member, a zombie
// included.
func groupAlive(pgid int) bool {
	if pgid <= 1 {
		return false
	}
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}
