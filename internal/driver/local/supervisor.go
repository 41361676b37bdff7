package local

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// supervisorAlive reports whether the stack's recorded supervisor runs.
func (d *Driver) supervisorAlive(j *journal) bool {
	for _, o := range j.list(KindProcess) {
		if d.sys().processAlive(o) {
			return true
		}
	}
	return false
}

// startSupervisor makes the stack's supervisor, a detached `bulkhead
// supervise` that keeps the stack converged after this command exits, run
// p. A running one is sent HUP to read a new plan, and waited for: it
// mounts new nodes' sites and lets go of removed ones', while the other
// mounts and the published ports go on. It is restarted only when it
// cannot reload: old (the plan before this up) is unknown or publishes
// other ports.
func (d *Driver) startSupervisor(ctx context.Context, p *plan.Plan, j *journal, old *plan.Plan) error {
	ps := d.paths(p.Stack)
	want, err := fileHash(ps.plan())
	if err != nil {
		return err
	}
	for _, o := range j.list(KindProcess) {
		if d.sys().processAlive(o) {
			got, err := os.ReadFile(ps.supervised())
			if err == nil && string(got) == hex.EncodeToString(want) {
				return nil
			}
			// One that never said which plan it runs predates reloads.
			if err == nil && old != nil && slices.Equal(old.Published, p.Published) {
				if err := d.sys().signalProcess(o, syscall.SIGHUP); err != nil {
					return err
				}
				return d.waitSupervised(ctx, p, hex.EncodeToString(want))
			}
		}
		if err := d.sys().stopProcess(o); err != nil {
			return err
		}
		if err := j.forget(o); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(ps.supervisorLog(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	o, err := d.sys().startSupervisor(ps.binary(), []string{"supervise", "--stack", p.Stack, "--root", d.root()}, logf)
	if err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	return j.record(o)
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
