package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/beneath"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/durable"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// stackFile is the stack file the last up applied, which a backup
// archives; the host's alone, like the plan beside it.
func (p paths) stackFile() string { return filepath.Join(p.stack, "stack.yaml") }

// keepStackFile records the stack file up applies, when it changed.
func (d *Driver) keepStackFile(p *plan.Plan, data []byte) error {
	if data == nil {
		return nil
	}
	path := d.paths(p.Stack).stackFile()
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return durable.Write(path, data, 0o600)
}

// Snapshot opens what a backup of the running stack reads besides its
// database's dump: the plan and stack file its last up applied, the live
// release, a handle on the storage node's data directory (the node writes
// it: the uploads are read beneath the handle) and the secrets.
func (d *Driver) Snapshot(ctx context.Context, stack string) (*driver.Snapshot, error) {
	ps := d.paths(stack)
	p, err := d.savedPlan(stack)
	if err != nil {
		return nil, err
	}
	j, err := loadJournal(ps.journal(), stack)
	if err != nil {
		return nil, err
	}
	if len(j.list(KindContainer)) == 0 {
		return nil, fmt.Errorf("stack %s is down: a backup reads a running stack (its database dumps itself in the db node); run 'bulkhead up' first", stack)
	}
	s := &driver.Snapshot{Plan: p}
	if s.StackFile, err = os.ReadFile(ps.stackFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	idx, err := d.releaseStore(p).Load()
	if err != nil {
		return nil, err
	}
	if idx.Live != "" {
		s.Release, s.ReleaseDir = idx.Live, d.releaseStore(p).Path(idx.Live)
		if _, err := os.Stat(s.ReleaseDir); err != nil {
			return nil, fmt.Errorf("the live release %s: %w", idx.Live, err)
		}
	}
	if s.Secrets, err = os.ReadFile(ps.secretsFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if st := p.Role(spec.RoleStorage); len(st) > 0 {
		// data's parent, the mounted image's root, is the host's; data
		// and all beneath it are the node's.
		root, err := beneath.Open(ps.node(st[0].Name).data())
		if err != nil {
			return nil, fmt.Errorf("node %s's data: %w", st[0].Name, err)
		}
		s.Uploads, s.UploadsDir = root, siteDir
	}
	return s, nil
}
