package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// supervisorAlive reports whether the stack's recorded supervisor runs.
func (d *Driver) supervisorAlive(j *journal) bool {
	for _, o := range j.list(KindProcess) {
		if alive(o) {
			return true
		}
	}
	return false
}

// startSupervisor (re)starts the stack's supervisor: a detached
// `bulkhead supervise` that keeps the stack converged after this command
// exits. restart replaces a running one, so that it reads the new plan.
func (d *Driver) startSupervisor(ctx context.Context, p *plan.Plan, j *journal, restart bool) error {
	for _, o := range j.list(KindProcess) {
		if alive(o) && !restart {
			return nil
		}
		if err := stopProcess(o); err != nil {
			return err
		}
		if err := j.forget(o); err != nil {
			return err
		}
	}
	ps := d.paths(p.Stack)
	logf, err := os.OpenFile(ps.supervisorLog(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Go passes on every descriptor it did not open itself: one this
	// process inherited (a caller's lock, say) would be held by the
	// supervisor, and by its sshfs mounts, for the stack's life.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	cmd := exec.Command(ps.binary(), "supervise", "--stack", p.Stack, "--root", d.root())
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: Ctrl-C in the user's terminal must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	start, err := procStart(cmd.Process.Pid)
	if err != nil {
		return err
	}
	o := Object{Kind: KindProcess, Name: strconv.Itoa(cmd.Process.Pid), Detail: start}
	if err := j.record(o); err != nil {
		return err
	}
	// Not waited for: it outlives this process and is re-parented to init.
	return cmd.Process.Release()
}
