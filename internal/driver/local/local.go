// Package local is the embedded driver: it realises a Plan on this Linux
// host. Every node becomes a network namespace joined to a bridge per
// network, with an nftables ruleset the host programs into it, and a runc
// container that joins that namespace and runs the node agent as PID 1.
//
// Everything it creates is first written to a journal (state.json), so that
// Down removes exactly that, even after an interrupted Up. Up is idempotent:
// a second Up with the same plan changes nothing.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
)

// DefaultRoot is where the driver keeps stacks' state, configs and data.
const DefaultRoot = "/var/lib/bulkhead"

var _ driver.Backend = (*Driver)(nil)

// Driver realises plans on this host.
type Driver struct {
	Root     string       // DefaultRoot unless testing
	Log      *slog.Logger // diagnostics
	Progress io.Writer    // one line per long step, for the user

	// system is the host as the driver changes it (os.go); nil is the
	// real one. Tests put a recording fake here.
	system system
	// onPhase, when set, is called as each phase of an up begins (see
	// enter); an error fails the up there. Tests interrupt ups with it.
	onPhase func(phase string) error
	// workers bounds how many nodes up works on at once; 0 is
	// defaultWorkers (see eachNode). Tests set 1 to record ops in order.
	workers int
	// progressMu keeps the lines of nodes made at once whole.
	progressMu sync.Mutex
	// phaseDone logs how long the current phase of an up took (see enter).
	phaseDone func()
}

func (d *Driver) root() string {
	if d.Root == "" {
		return DefaultRoot
	}
	return d.Root
}

func (d *Driver) logger() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return d.Log
}

func (d *Driver) progress(format string, args ...any) {
	if d.Progress != nil {
		d.progressMu.Lock()
		defer d.progressMu.Unlock()
		fmt.Fprintf(d.Progress, format+"\n", args...)
	}
}

// took starts timing a step of an up; the func it returns logs the step's
// wall time at debug level (BULKHEAD_DEBUG=1), to profile up with.
func (d *Driver) took(step string, args ...any) func() {
	t0 := time.Now()
	return func() {
		d.logger().Debug("took", append([]any{"step", step, "s", fmt.Sprintf("%.3f", time.Since(t0).Seconds())}, args...)...)
	}
}

// paths are the host-side locations of one stack.
type paths struct {
	stack string // <root>/<stack>
	root  string
}

func (d *Driver) paths(stack string) paths {
	return paths{stack: filepath.Join(d.root(), stack), root: d.root()}
}

func (p paths) journal() string { return filepath.Join(p.stack, "state.json") }
func (p paths) plan() string    { return filepath.Join(p.stack, "plan.json") }

// appliedPlan is the plan the last apply that finished applied (see
// Driver.runningPlans).
func (p paths) appliedPlan() string { return filepath.Join(p.stack, "applied-plan.json") }
func (p paths) lock() string        { return filepath.Join(p.stack, "lock") }
func (p paths) secrets() string     { return filepath.Join(p.stack, "secrets") }

// secretsFile holds the stack's secrets (see secrets.Stack).
func (p paths) secretsFile() string { return filepath.Join(p.secrets(), "secrets.json") }
func (p paths) etc() string         { return filepath.Join(p.stack, "etc") }

// releases holds the site's releases (see package release), which site
// nodes see; releaseMeta their index and manifests, which they don't.
func (p paths) releases() string    { return filepath.Join(p.stack, "releases") }
func (p paths) releaseMeta() string { return filepath.Join(p.stack, "release-meta") }
func (p paths) rootfs() string      { return filepath.Join(p.root, "rootfs") }
func (p paths) idsLock() string     { return filepath.Join(p.root, "ids.lock") }

// nodeRoot is a node's root directory. It is outside the stack's own
// directory, which only the host may enter: the node's root has to pass
// through to it.
func (p paths) nodeRoot(node string) string {
	return filepath.Join(p.rootfs(), filepath.Base(p.stack), node)
}

// binary is the stack's own copy of bulkhead, which its supervisor,
// keeper and agents run: an up installs its build for its stack alone, so
// another checkout's up, or an upgrade, changes no running stack until
// that stack's next up.
func (p paths) binary() string { return filepath.Join(p.stack, "bin", "bulkhead") }

// hostBinary is the copy the boot unit runs, shared by every stack; the
// supervisors of stacks brought up before stacks had their own ran it too.
func (p paths) hostBinary() string    { return filepath.Join(p.root, "bin", "bulkhead") }
func (p paths) supervisorLog() string { return filepath.Join(p.stack, "supervisor.log") }
func (p paths) supervisorState() string {
	return filepath.Join(p.stack, "supervisor.json")
}

// supervised holds the digest of the plan the supervisor runs.
func (p paths) supervised() string { return filepath.Join(p.stack, "supervised") }
func (p paths) node(name string) nodePaths {
	return nodePaths(filepath.Join(p.stack, "nodes", name))
}

// nodePaths is a node's directory on the host.
type nodePaths string

func (n nodePaths) conf() string { return filepath.Join(string(n), "conf") }
func (n nodePaths) srv() string  { return filepath.Join(string(n), "srv") }

// shared is where the supervisor mounts the storage node's share: the
// site's writable paths, which every release shares.
func (n nodePaths) shared() string { return filepath.Join(n.srv(), "shared") }

// stage is where the node's sshfs mounts the share, outside srv, whose
// mounts the container receives: srv/shared gets a copy that follows no
// link (see sshfs.Mount).
func (n nodePaths) stage() string { return filepath.Join(string(n), stageDir) }

// stageDir is the name of a node's stage directory.
const stageDir = "sshfs"

// releases is the mount point of the stack's releases in srv.
func (n nodePaths) releases() string { return filepath.Join(n.srv(), "releases") }

// legacySite is where the site was mounted before releases.
func (n nodePaths) legacySite() string { return filepath.Join(n.srv(), "site") }
func (n nodePaths) bundle() string     { return filepath.Join(string(n), "bundle") }

// The node's disk image, and where the host mounts it (see volume.go).
// data, log and run are the node's to write; out is the host's.
func (n nodePaths) image() string  { return filepath.Join(string(n), "disk.img") }
func (n nodePaths) vol() string    { return filepath.Join(string(n), "vol") }
func (n nodePaths) data() string   { return filepath.Join(n.vol(), "data") }
func (n nodePaths) log() string    { return filepath.Join(n.vol(), "log") }
func (n nodePaths) run() string    { return filepath.Join(n.vol(), "run") }
func (n nodePaths) out() string    { return filepath.Join(n.vol(), "out") }
func (n nodePaths) socket() string { return filepath.Join(n.run(), "agent.sock") }

// legacyData is where a node's data lived before disk images.
func (n nodePaths) legacyData() string { return filepath.Join(string(n), "data") }

// lockChange takes the stack's lock for a command that changes the
// stack (up, deploy, rollback), and writes in the lock file who holds it.
// Another change already running is an error that names it; a verify or
// the supervisor's repair holds the lock briefly, and is waited for.
func (d *Driver) lockChange(ctx context.Context, stack, what string) (func(), error) {
	lock := d.paths(stack).lock()
	unlock, err := d.lockStack(ctx, stack, false)
	if err != nil {
		data, _ := os.ReadFile(lock)
		var pid int
		var rest string
		if n, _ := fmt.Sscanf(string(data), "pid %d %s", &pid, &rest); n == 2 && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
			return nil, fmt.Errorf("stack %s is busy: %s; wait for it to finish, or stop it first", stack, strings.TrimSpace(string(data)))
		}
		if unlock, err = d.lockStack(ctx, stack, true); err != nil {
			return nil, err
		}
	}
	holder := fmt.Sprintf("pid %d (bulkhead %s) holds it since %s\n", os.Getpid(), what, time.Now().Format(time.DateTime))
	if err := os.WriteFile(lock, []byte(holder), 0o600); err != nil {
		unlock()
		return nil, err
	}
	return func() {
		os.Truncate(lock, 0)
		unlock()
	}, nil
}

// hostLock is the lock an up holds shared, and the last purge exclusive,
// so that the files stacks share are never removed under an up. It is on
// /run, outside the directory it guards.
const hostLock = "/run/lock/bulkhead.lock"

// lockHost takes the host lock with how (syscall.LOCK_SH or LOCK_EX, with
// LOCK_NB to not wait); ok is false when LOCK_NB found it held.
func (d *Driver) lockHost(how int) (unlock func(), ok bool, err error) {
	path := hostLock
	if d.Root != "" {
		path = filepath.Join(d.Root, "..", filepath.Base(d.Root)+".lock") // beside a test's root
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, true, nil
}

// lockStack takes the stack's lock, so that two ups, an up and a down, or
// an up and the supervisor's repairs never interleave. The lock is released
// when the returned function is called or the process exits.
func (d *Driver) lockStack(ctx context.Context, stack string, wait bool) (func(), error) {
	p := d.paths(stack)
	// Nodes' roots (uid 0 of their user namespaces) pass through the root
	// to reach their root directories and the installed binary; they may
	// not list it. Each stack's own directory stays the host's alone.
	if err := os.MkdirAll(d.root(), 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(d.root(), 0o711); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.stack, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p.lock(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), how) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stack %s is busy (another bulkhead command holds %s): %w", stack, p.lock(), err)
		}
	case <-ctx.Done():
		f.Close()
		return nil, ctx.Err()
	}
	return func() { f.Close() }, nil
}
