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

// prepareSiteMounts makes each static and app node's site directory a
// shared mount point, so that the sshfs mount the supervisor puts on it
// later propagates into the container, which binds it with slave
// propagation.
func (d *Driver) prepareSiteMounts(ctx context.Context, p *plan.Plan, j *journal) error {
	if p.Storage == "" {
		return nil
	}
	for _, n := range p.Nodes {
		if n.Role != spec.RoleStatic && n.Role != spec.RoleApp {
			continue
		}
		dir := d.paths(p.Stack).node(n.Name).site()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
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

// unmount removes every mount stacked on dir (the sshfs mount and the
// self-bind under it), lazily when busy.
func unmount(dir string) error {
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
