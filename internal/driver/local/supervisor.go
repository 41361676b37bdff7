package local

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// supervisorAlive reports whether the stack's recorded supervisor runs.
func (d *Driver) supervisorAlive(j *journal) bool {
	_, ok := d.liveSupervisor(j)
	return ok
}

// liveSupervisor returns the stack's recorded supervisor that runs.
func (d *Driver) liveSupervisor(j *journal) (Object, bool) {
	for _, o := range j.list(KindProcess) {
		if d.sys().processAlive(o) {
			return o, true
		}
	}
	return Object{}, false
}

// keeperAlive reports whether the recorded keeper of the stack's
// supervisor runs.
func (d *Driver) keeperAlive(j *journal) bool {
	for _, o := range j.list(KindKeeper) {
		if d.sys().processAlive(o) {
			return true
		}
	}
	return false
}

// adoptPair records in j the processes of the stack's pair that run but j
// does not name, in place of those of their kind that are gone. One of the
// pair starts a new peer at once, but records it only once no other
// command holds the stack's lock: the command that holds it (up, say)
// counts it from here on. The caller holds the lock.
func (d *Driver) adoptPair(j *journal) error {
	if len(j.list(KindProcess))+len(j.list(KindKeeper)) == 0 {
		return nil // no pair: none started, or down stopped it
	}
	running, err := d.sys().pairProcesses(d.paths(j.Stack).binary(), j.Stack, d.root())
	if err != nil {
		return err
	}
	for _, o := range running {
		if j.has(o) {
			continue
		}
		for _, old := range j.list(o.Kind) {
			if !d.sys().processAlive(old) {
				if err := j.forget(old); err != nil {
					return err
				}
			}
		}
		if err := j.record(o); err != nil {
			return err
		}
	}
	return nil
}

// pairRunning reports whether the stack's supervisor and its keeper run:
// as j records them or, for one that died, as the one its peer started in
// its place and has not recorded yet (see adoptPair). It changes nothing.
func (d *Driver) pairRunning(j *journal) (sup, keeper bool) {
	sup, keeper = d.supervisorAlive(j), d.keeperAlive(j)
	if sup && keeper || len(j.list(KindProcess))+len(j.list(KindKeeper)) == 0 {
		return sup, keeper
	}
	running, _ := d.sys().pairProcesses(d.paths(j.Stack).binary(), j.Stack, d.root())
	for _, o := range running {
		sup = sup || o.Kind == KindProcess
		keeper = keeper || o.Kind == KindKeeper
	}
	return sup, keeper
}

// startSupervisor makes the stack's supervisor, a detached `bulkhead
// supervise` that keeps the stack converged after this command exits, run
// p, with its keeper (see pair.go). A running pair's supervisor is sent HUP
// to read a new plan, and waited for: it mounts new nodes' sites and lets
// go of removed ones', while the other mounts go on. The pair is replaced
// only when the supervisor cannot reload: olds (the plans it may run, see
// runningPlans) are unknown; when it runs a binary that up has replaced
// since; or when one of the two is not running, as after an upgrade from a
// bulkhead whose supervisor had no keeper.
func (d *Driver) startSupervisor(ctx context.Context, p *plan.Plan, j *journal, olds []*plan.Plan) error {
	ps := d.paths(p.Stack)
	want, err := fileHash(ps.plan())
	if err != nil {
		return err
	}
	if sup, ok := d.liveSupervisor(j); ok && d.keeperAlive(j) {
		// One that holds a published port predates the kernel's
		// publishing (see publish.go), and its listener is in the way.
		// One that runs a binary up has replaced since (an upgrade) runs
		// the old code, its site mounts included: a plan it reloads
		// would not change that.
		stale := d.holdsPorts(p) || !d.sys().runsBinary(sup, ps.binary())
		got, err := os.ReadFile(ps.supervised())
		if !stale && err == nil && string(got) == hex.EncodeToString(want) {
			return nil
		}
		// One that never said which plan it runs predates reloads.
		if !stale && err == nil && len(olds) > 0 {
			if err := d.sys().signalProcess(sup, syscall.SIGHUP); err != nil {
				return err
			}
			return d.waitSupervised(ctx, p, hex.EncodeToString(want))
		}
	}
	// The keeper goes first: it would start again the supervisor being
	// stopped. Stopped on purpose, neither starts the other.
	for _, kind := range []string{KindKeeper, KindProcess} {
		for _, o := range j.list(kind) {
			if err := d.sys().stopProcess(o); err != nil {
				return err
			}
			if err := j.forget(o); err != nil {
				return err
			}
		}
	}
	logf, err := os.OpenFile(ps.supervisorLog(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	sup, keeper, err := d.sys().startPair(ps.binary(), p.Stack, d.root(), logf)
	if err != nil {
		return err
	}
	return errors.Join(j.record(sup), j.record(keeper))
}

// waitSupervised waits until the supervisor says it runs the plan whose
// digest is want.
func (d *Driver) waitSupervised(ctx context.Context, p *plan.Plan, want string) error {
	path := d.paths(p.Stack).supervised()
	deadline := time.Now().Add(time.Minute)
	for {
		if got, _ := os.ReadFile(path); string(got) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the supervisor did not take the new plan within a minute; see %s", d.paths(p.Stack).supervisorLog())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// holdsPorts reports whether something listens on a port p publishes: a
// supervisor of a bulkhead that forwarded them itself.
func (d *Driver) holdsPorts(p *plan.Plan) bool {
	for _, f := range p.Published {
		if d.sys().canListen(f.Listen) != nil {
			return true
		}
	}
	return false
}
