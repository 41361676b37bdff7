package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// prepareSiteMounts makes the parent of each site-mounting node's site
// directory (the node's /srv) a shared mount point. The container binds
// that parent with slave propagation, so the sshfs mount the supervisor
// puts on srv/site, and every remount after a reconnect or a supervisor
// restart, reaches the container, whenever the container was started.
// Binding the site directory itself would capture whichever mount was on
// it at the time.
func (d *Driver) prepareSiteMounts(ctx context.Context, p *plan.Plan, j *journal) error {
	for _, n := range p.Nodes {
		if n.Mount == nil {
			continue
		}
		np := d.paths(p.Stack).node(n.Name)
		dir := np.srv()
		// Only where nothing is: srv/site may be an sshfs mount waiting
		// to reconnect, where stat fails with ENOTCONN.
		if _, err := os.Lstat(np.site()); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(np.site(), 0o755); err != nil {
				return err
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
// an sshfs left on srv/site (normally the supervisor's sshfs.Run has) and
// then srv's bind on itself.
func (d *Driver) unmount(srv string) error {
	if _, err := os.Lstat(srv); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := d.sys().sshfsUnmount(filepath.Join(srv, "site")); err != nil {
		return err
	}
	return d.sys().releaseTarget(srv)
}
