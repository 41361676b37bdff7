package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// prepareSiteMounts makes the parent of each site-mounting node's share
// directory (the node's /srv) a shared mount point. The container binds
// that parent with slave propagation, so the sshfs mount the supervisor
// puts on srv/shared, and every remount after a reconnect or a supervisor
// restart, reaches the container, whenever the container was started.
// Binding the share directory itself would capture whichever mount was on
// it at the time. srv/releases is where the container mounts the stack's
// releases.
//
// The mount points are recorded in one write of the journal and prepared
// together, from one reading of the host's mount table: at 110 nodes,
// prepared one at a time, each with its write and its reading, they took
// 6 s of an up.
func (d *Driver) prepareSiteMounts(ctx context.Context, p *plan.Plan, j *journal) error {
	var dirs []string
	var objs []Object
	for _, n := range p.Nodes {
		if n.Mount == nil {
			continue
		}
		np := d.paths(p.Stack).node(n.Name)
		dir := np.srv()
		// Only where nothing is: srv/shared may be an sshfs mount
		// waiting to reconnect, where stat fails with ENOTCONN.
		for _, dir := range []string{np.shared(), np.releases()} {
			if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
		}
		// The host's alone: no node sees it.
		if _, err := os.Lstat(np.stage()); errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(np.stage(), 0o700); err != nil {
				return err
			}
		}
		dirs = append(dirs, dir)
		objs = append(objs, Object{Kind: KindMount, Name: dir})
	}
	if len(dirs) == 0 {
		return nil
	}
	if err := j.record(objs...); err != nil {
		return err
	}
	// Each error names its mount point, nodes/NODE/srv.
	if err := d.sys().prepareTargets(dirs); err != nil {
		return fmt.Errorf("site mount points: %w", err)
	}
	return nil
}

// unmount undoes prepareSiteMounts for one node's srv directory: it removes
// an sshfs left on srv/shared, or on srv/site where stacks made before
// releases mounted it, and on the node's stage (normally the supervisor's
// sshfs.Run has), and then srv's bind on itself.
func (d *Driver) unmount(srv string) error {
	stage := nodePaths(filepath.Dir(srv)).stage()
	if _, err := os.Lstat(srv); err == nil {
		for _, target := range []string{filepath.Join(srv, "shared"), filepath.Join(srv, "site")} {
			if err := d.sys().sshfsUnmount(target); err != nil {
				return err
			}
		}
		if err := d.sys().releaseTarget(srv); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, err := os.Lstat(stage); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := d.sys().sshfsUnmount(stage); err != nil {
		return err
	}
	// Only if empty: were the share still mounted there, it would not be.
	if err := os.Remove(stage); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
