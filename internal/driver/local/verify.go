package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/durable"

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
	r, err := verify.Run(ctx, p, o)
	if err != nil {
		return nil, err
	}
	// The dashboard shows the last run; a report that cannot be kept is
	// still this run's answer, so its failure to be written only warns.
	if err := d.keepVerify(stack, r); err != nil {
		d.logger().Warn("keep the verify report", "stack", stack, "err", err)
	}
	return r, nil
}

func (p paths) lastVerify() string { return filepath.Join(p.stack, "last-verify.json") }

// keepVerify writes r, with the time it ended, as the stack's last verify:
// of its cells, only those that failed (see driver.VerifyRecord).
func (d *Driver) keepVerify(stack string, r *verify.Report) error {
	kept := *r
	kept.Cells = nil
	for _, c := range r.Cells {
		if !c.OK {
			kept.Cells = append(kept.Cells, c)
		}
	}
	data, err := json.Marshal(driver.VerifyRecord{At: time.Now().UTC(), Report: &kept})
	if err != nil {
		return err
	}
	return durable.Write(d.paths(stack).lastVerify(), data, 0o600)
}

// LastVerify reads the report the stack's last verify kept; nil when none
// ran since the stack was made.
func (d *Driver) LastVerify(stack string) (*driver.VerifyRecord, error) {
	data, err := os.ReadFile(d.paths(stack).lastVerify())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec driver.VerifyRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("read %s: %w", d.paths(stack).lastVerify(), err)
	}
	return &rec, nil
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
