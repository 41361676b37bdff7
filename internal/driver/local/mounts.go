package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
	"github.com/bulkhead/bulkhead/internal/sshfs"
)

// prepareSiteMounts makes the parent of each static and app node's site
// directory (the node's /srv) a shared mount point. The container binds
// that parent with slave propagation, so the sshfs mount the supervisor
// puts on srv/site, and every remount after a reconnect or a supervisor
// restart, reaches the container, whenever the container was started.
// Binding the site directory itself would capture whichever mount was on
// it at the time.
func (d *Driver) prepareSiteMounts(ctx context.Context, p *plan.Plan, j *journal) error {
	if p.Storage == "" {
		return nil
	}
	for _, n := range p.Nodes {
		if n.Role != spec.RoleStatic && n.Role != spec.RoleApp {
			continue
		}
		np := d.paths(p.Stack).node(n.Name)
		dir := np.srv()
		if ok, err := isMountPoint(dir); err != nil {
			return err
		} else if !ok {
			// Only before the first mount: later, srv/site may be an sshfs
			// mount waiting to reconnect, where stat fails.
			if err := os.MkdirAll(np.site(), 0o755); err != nil {
				return err
			}
		}
		if err := j.record(Object{Kind: KindMount, Name: dir}); err != nil {
			return err
		}
		if err := sshfs.PrepareTarget(dir); err != nil {
			return fmt.Errorf("node %s site mount point: %w", n.Name, err)
		}
	}
	return nil
}

// unmount removes every mount below and on dir (a leftover sshfs mount and
// the self-bind under it), deepest first, lazily when busy.
func unmount(dir string) error {
	subs, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	for i := len(subs) - 1; i >= 0; i-- {
		if err := syscall.Unmount(subs[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", subs[i], err)
		}
	}
	for range 8 {
		ok, err := isMountPoint(dir)
		if err != nil || !ok {
			return err
		}
		if err := syscall.Unmount(dir, 0); err != nil {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
		}
	}
	return fmt.Errorf("unmount %s: still mounted", dir)
}

// mountsBelow lists mount points strictly below dir, in mount order.
func mountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			if mp := unescapeMount(fields[4]); strings.HasPrefix(mp, dir+"/") {
				out = append(out, mp)
			}
		}
	}
	return out, sc.Err()
}

// isMountPoint reports whether dir is a mount point in this mount namespace.
func isMountPoint(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
