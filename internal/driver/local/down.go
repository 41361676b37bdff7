package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/runc"
)

// Down removes exactly what Up made for stack, as its journal records it,
// or, when the journal cannot be read, what it finds of the stack by its
// names (see downFound). Data and secrets stay unless purge; with purge the
// stack's directory goes too.
func (d *Driver) Down(ctx context.Context, stack string, purge bool) error {
	ps := d.paths(stack)
	if _, err := os.Stat(ps.stack); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no stack %q on this host (nothing under %s)", stack, ps.stack)
	}
	unlock, err := d.lockStack(ctx, stack, true)
	if err != nil {
		return err
	}
	defer unlock()
	j, err := loadJournal(ps.journal(), stack)
	var damaged *damagedJournal
	if errors.As(err, &damaged) {
		return d.downFound(ctx, stack, purge, damaged)
	}
	if err != nil {
		return err
	}
	// A keeper or supervisor its peer started but has not recorded yet
	// goes too.
	if err := d.adoptPair(j); err != nil {
		return err
	}
	return d.destroy(ctx, stack, j, purge)
}

// destroyOrder is the order kinds are removed in: what uses a thing goes
// before it.
// The keeper goes before the supervisor, which it would start again.
var destroyOrder = []string{KindKeeper, KindProcess, KindContainer, KindMount, KindVolume, KindNetns, KindVeth, KindBridge, KindNftTable, KindSysctl}

func (d *Driver) destroy(ctx context.Context, stack string, j *journal, purge bool) error {
	var errs []error
	for _, kind := range destroyOrder {
		objs := j.list(kind)
		if len(objs) > 0 {
			d.progress("removing %d %s", len(objs), plural(kind, len(objs)))
		}
		// Mounts stack on each other: the last made goes first.
		for i := len(objs) - 1; i >= 0; i-- {
			o := objs[i]
			if err := d.remove(ctx, stack, o); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := j.forget(o); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	ps := d.paths(stack)
	if purge {
		d.progress("purging %s (data and secrets)", ps.stack)
		if err := os.RemoveAll(ps.stack); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Dir(ps.nodeRoot("-"))); err != nil {
			return err
		}
		return d.removeShared()
	}
	// Keep data, logs and secrets; drop what up rebuilds anyway.
	nodes, _ := os.ReadDir(filepath.Join(ps.stack, "nodes"))
	for _, n := range nodes {
		np := ps.node(n.Name())
		for _, dir := range []string{np.bundle(), np.srv()} {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			}
		}
		// Only the empty mount point: were the image still mounted, its
		// data would be in there.
		if err := os.Remove(np.vol()); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, f := range []string{"applied", "applied-plan.json", "source.json", "supervisor.sock", "supervisor.json", "supervised"} {
		os.Remove(filepath.Join(ps.stack, f))
	}
	return errors.Join(errs...)
}

// removeShared removes what stacks share (the directory of the nodes'
// roots, the installed binary, the lock of the id blocks) once no stack is
// left on the host.
func (d *Driver) removeShared() error {
	// An up of another stack holds the host lock shared from start to
	// end: while one runs, the shared files stay.
	unlock, ok, err := d.lockHost(syscall.LOCK_EX | syscall.LOCK_NB)
	if err != nil || !ok {
		return err
	}
	defer unlock()
	entries, err := os.ReadDir(d.root())
	if err != nil {
		return err
	}
	ps := d.paths("")
	shared := []string{ps.rootfs(), filepath.Dir(ps.hostBinary()), ps.idsLock(), ps.hostRecord()}
	for _, e := range entries {
		if !slices.Contains(shared, filepath.Join(d.root(), e.Name())) {
			return nil // another stack still uses them
		}
	}
	// What up changed on the host outside the root goes back first: its
	// record is among the shared files.
	if err := d.restoreHost(context.Background()); err != nil {
		return err
	}
	for _, p := range shared {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	// Only if empty: a stack made since the listing keeps it.
	if err := os.Remove(d.root()); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	return nil
}

func plural(kind string, n int) string {
	names := map[string]string{KindKeeper: "supervisor keeper", KindProcess: "supervisor process", KindContainer: "container", KindMount: "mount",
		KindNetns: "network namespace", KindVeth: "veth pair", KindBridge: "bridge", KindNftTable: "host nft table",
		KindSysctl: "raised neighbour-table limit", KindVolume: "disk image"}
	s := names[kind]
	if n != 1 {
		s += "s"
	}
	return s
}

// remove deletes one object; an object already gone is not an error.
func (d *Driver) remove(ctx context.Context, stack string, o Object) error {
	switch o.Kind {
	case KindProcess, KindKeeper:
		return d.sys().stopProcess(o)
	case KindContainer:
		return d.stopContainer(ctx, o.Name)
	case KindMount:
		return d.unmount(o.Name)
	case KindVolume:
		return d.sys().unmountVolume(o.Name)
	case KindNetns:
		return d.sys().deleteNetns(ctx, o.Name)
	case KindVeth, KindBridge:
		return d.sys().deleteLink(ctx, o.Name)
	case KindNftTable:
		family, name, _ := strings.Cut(o.Name, " ")
		return d.sys().nftDeleteTable(ctx, "", family, name)
	case KindSysctl:
		return d.restoreSysctl(stack, o)
	}
	return fmt.Errorf("unknown object kind %q", o.Kind)
}

// stopContainer asks the agent to stop (SIGTERM: it stops its daemons
// within its grace period), then deletes the container, killing what is
// left.
func (d *Driver) stopContainer(ctx context.Context, id string) error {
	sys := d.sys()
	st, err := sys.containerState(ctx, id)
	if errors.Is(err, runc.ErrNotExist) {
		return nil
	}
	if err == nil && st.Status == "running" {
		sys.killContainer(ctx, id, "TERM")
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if st, err := sys.containerState(ctx, id); err != nil || st.Status != "running" {
				break
			}
		}
	}
	return sys.deleteContainer(ctx, id, true)
}

// procStart returns a process's start time in clock ticks since boot
// (field 22 of /proc/PID/stat). With the pid it names one process for the
// life of the system, so a recycled pid is never mistaken for ours.
func procStart(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name may hold spaces; fields resume after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("odd /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("odd /proc/%d/stat", pid)
	}
	// A zombie has exited; only its parent's wait is missing (the up
	// that started a supervisor and then failed, say).
	if f[0] == "Z" {
		return "", fmt.Errorf("process %d has exited", pid)
	}
	return f[19], nil
}

func alive(o Object) bool {
	pid, err := strconv.Atoi(o.Name)
	if err != nil {
		return false
	}
	start, err := procStart(pid)
	return err == nil && start == o.Detail
}

// stopProcess ends a process bulkhead started, by pid, only if it is still
// that process: SIGTERM, then SIGKILL after ten seconds.
func stopProcess(o Object) error {
	pid, err := strconv.Atoi(o.Name)
	if err != nil {
		return fmt.Errorf("bad pid %q in journal", o.Name)
	}
	if !alive(o) {
		return nil
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !alive(o) {
			return nil
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !alive(o) {
			return nil
		}
	}
	return fmt.Errorf("process %d did not exit", pid)
}
