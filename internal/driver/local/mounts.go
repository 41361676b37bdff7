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
func (d *Driver) prepareSiteMounts(ctx context.Context, p *plan.Plan, j *journal) error {
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
		if err := j.record(Object{Kind: KindMount, Name: dir}); err != nil {
			return err
		}
		if err := d.sys().prepareTarget(dir); err != nil {
			return fmt.Errorf("node %s site mount point: %w", n.Name, err)
		}
	}
	return nil
}

// unmount undoes prepareSiteMounts for one node's srv directory: it removes
// an sshfs left on srv/shared, or on srv/site where stacks made before
// releases mounted it (normally the supervisor's sshfs.Run has), and then
// srv's bind on itself.
func (d *Driver) unmount(srv string) error {
	if _, err := os.Lstat(srv); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, target := range []string{"shared", "site"} {
		if err := d.sys().sshfsUnmount(filepath.Join(srv, target)); err != nil {
			return err
		}
	}
	return d.sys().releaseTarget(srv)
}
