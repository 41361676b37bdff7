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

	"golang.org/x/sync/errgroup"

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
		// Interrupted, down stops where it is: what uses a thing not yet
		// gone, the thing stays, recorded for the next down.
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		objs := j.list(kind)
		if len(objs) > 0 {
			d.progress("removing %d %s", len(objs), plural(kind, len(objs)))
		}
		// Mounts stack on each other: the last made goes first.
		slices.Reverse(objs)
		errs = append(errs, d.removeAll(ctx, stack, j, kind, objs))
	}
	if err := errors.Join(errs...); err != nil {
		return err
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
		_, err := d.stopContainers(ctx, []Object{o})
		return err
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

// removeAll removes objs, all of one kind, in their order where that
// matters, and forgets each that is gone. It keeps going over the others
// when one fails.
func (d *Driver) removeAll(ctx context.Context, stack string, j *journal, kind string, objs []Object) error {
	var errs []error
	switch {
	case kind == KindContainer:
		gone, err := d.stopContainers(ctx, objs)
		for i, o := range objs {
			if gone[i] {
				errs = append(errs, j.forget(o))
			}
		}
		return errors.Join(append(errs, err)...)
	case perNode[kind]:
		return d.removeEach(ctx, stack, j, objs)
	}
	for _, o := range objs {
		if err := d.remove(ctx, stack, o); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, j.forget(o))
	}
	return errors.Join(errs...)
}

// perNode are the kinds of which each node has its own, none stacked on
// or using another of the same kind, so that removing them in any order,
// several at once, is removing them one by one: the site mount points
// (each node's srv), the disk images (each node's vol), the namespaces
// and the veths.
var perNode = map[string]bool{KindMount: true, KindVolume: true, KindNetns: true, KindVeth: true}

// removeEach removes objs, up to workerCount at once, forgetting each as
// it goes, and keeps going over the others when one fails. When ctx ends,
// those not yet begun stay recorded, for the next down.
func (d *Driver) removeEach(ctx context.Context, stack string, j *journal, objs []Object) error {
	errs := make([]error, len(objs))
	err := d.eachObject(ctx, objs, func(ctx context.Context, i int, o Object) {
		if errs[i] = d.remove(ctx, stack, o); errs[i] == nil {
			errs[i] = j.forget(o)
		}
	})
	return errors.Join(append(errs, err)...)
}

// eachObject calls fn for each of objs, up to workerCount at once. When
// ctx ends, objects not yet begun are not begun, and it returns ctx's
// error.
func (d *Driver) eachObject(ctx context.Context, objs []Object, fn func(ctx context.Context, i int, o Object)) error {
	var g errgroup.Group
	g.SetLimit(d.workerCount())
	for i, o := range objs {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if ctx.Err() == nil {
				fn(ctx, i, o)
			}
			return nil
		})
	}
	g.Wait()
	return ctx.Err()
}

// stopContainers stops and deletes the containers objs name. Each agent
// is asked to stop (SIGTERM: it stops its daemons within its grace
// period), all of them before waiting on any, so that they stop together;
// then each container is deleted, which kills what is left in it. The
// wait reads every container's state with one runc list a round: at 100
// app nodes, a runc state a container every 100 ms was most of a down's
// CPU, and stopping them one after another most of its time.
//
// gone says which of objs are gone from the host: deleted now, or never
// there. When ctx ends, what is not yet gone stays for the next down.
func (d *Driver) stopContainers(ctx context.Context, objs []Object) (gone []bool, err error) {
	sys := d.sys()
	state := d.containerStates(ctx)
	gone = make([]bool, len(objs))
	stopping := make([]bool, len(objs))
	err = d.eachObject(ctx, objs, func(ctx context.Context, i int, o Object) {
		st, err := state(ctx, o.Name)
		gone[i] = errors.Is(err, runc.ErrNotExist)
		if err == nil && st.Status == "running" {
			// A failed kill shows in the wait: the container still runs,
			// and the delete kills it.
			sys.killContainer(ctx, o.Name, "TERM")
			stopping[i] = true
		}
	})
	if err != nil {
		return gone, err
	}
	for deadline := time.Now().Add(15 * time.Second); slices.Contains(stopping, true) && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return gone, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		state := d.containerStates(ctx)
		for i, o := range objs {
			if !stopping[i] {
				continue
			}
			if st, err := state(ctx, o.Name); err != nil || st.Status != "running" {
				stopping[i] = false
			}
		}
	}
	errs := make([]error, len(objs))
	err = d.eachObject(ctx, objs, func(ctx context.Context, i int, o Object) {
		if gone[i] {
			return
		}
		if errs[i] = sys.deleteContainer(ctx, o.Name, true); errs[i] != nil {
			errs[i] = fmt.Errorf("delete container %s: %w", o.Name, errs[i])
			return
		}
		gone[i] = true
	})
	return gone, errors.Join(append(errs, err)...)
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
