package local

import (
	"context"
	"fmt"
	"os"

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

// startSupervisor (re)starts the stack's supervisor: a detached
// `bulkhead supervise` that keeps the stack converged after this command
// exits. restart replaces a running one, so that it reads the new plan.
func (d *Driver) startSupervisor(ctx context.Context, p *plan.Plan, j *journal, restart bool) error {
	for _, o := range j.list(KindProcess) {
		if d.sys().processAlive(o) && !restart {
			return nil
		}
		if err := d.sys().stopProcess(o); err != nil {
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
	o, err := d.sys().startSupervisor(ps.binary(), []string{"supervise", "--stack", p.Stack, "--root", d.root()}, logf)
	if err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	return j.record(o)
}
