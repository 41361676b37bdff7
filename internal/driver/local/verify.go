package local

import (
	"context"
	"strconv"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/verify"
)

// Verify probes the running stack and returns verify's report. It holds
// the stack's lock, so that no up, down or repair changes the stack under
// the probes.
func (d *Driver) Verify(ctx context.Context, stack string, o verify.Options) (*verify.Report, error) {
	p, o, unlock, err := d.verifySetup(ctx, stack, o)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return verify.Run(ctx, p, o)
}

// SelfTest plants each of verify's mutations in the running stack in turn,
// checks that verify reports exactly that break, and restores the stack.
func (d *Driver) SelfTest(ctx context.Context, stack string, o verify.Options, progress func(string)) ([]verify.Outcome, *verify.Report, error) {
	p, o, unlock, err := d.verifySetup(ctx, stack, o)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	return verify.SelfTest(ctx, p, o, progress)
}

func (d *Driver) verifySetup(ctx context.Context, stack string, o verify.Options) (*plan.Plan, verify.Options, func(), error) {
	p, err := d.savedPlan(stack)
	if err != nil {
		return nil, o, nil, err
	}
	unlock, err := d.lockStack(ctx, stack, true)
	if err != nil {
		return nil, o, nil, err
	}
	j, err := loadJournal(d.paths(stack).journal(), stack)
	if err == nil {
		err = d.adoptPair(j) // the supervisor that runs now
	}
	if err != nil {
		unlock()
		return nil, o, nil, err
	}
	for _, obj := range j.list(KindProcess) {
		if d.sys().processAlive(obj) {
			o.Supervisor, _ = strconv.Atoi(obj.Name)
		}
	}
	return p, o, unlock, nil
}
