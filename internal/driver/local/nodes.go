package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/runc"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Where the bulkhead binary appears inside every container.
const agentPath = "/bulkhead/bulkhead"

// owner says which account owns a node's writable directories and can read
// its group-readable secrets (mode 0440): the daemon that needs them.
func owner(n *plan.Node) (dirs, secrets string) {
	switch {
	case n.Software == "mariadb":
		return "mysql", "mysql"
	case n.Software == "postgresql":
		return "postgres", "postgres"
	case n.Role == spec.RoleApp:
		return "", "www-data"
	}
	return "", ""
}

// capabilities are a node's only privileges. Daemons start as root to bind
// port 80 and then drop to their own users; none may touch the network
// stack (NET_ADMIN, NET_RAW), mount (SYS_ADMIN) or trace (SYS_PTRACE).
func capabilities(n *plan.Node) []string {
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	switch n.Software {
	case spec.ProtocolSFTP:
		caps = append(caps, "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
	case spec.ProtocolNFS:
		// ganesha's VFS backend opens files by handle. The export lives on
		// the node's own data directory.
		caps = append(caps, "CAP_DAC_READ_SEARCH")
	}
	return caps
}

func lookupIDs(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("account %s: %w (is its package installed?)", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// writeNode writes a node's rendered files into its conf directory, which is
// replaced as a whole so that no stale file survives, and prepares its
// writable directories. It reports whether anything changed.
func writeNode(np nodePaths, n *plan.Node, r render.Node) (bool, error) {
	for _, d := range []string{np.data(), np.log(), np.run()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return false, err
		}
	}
	dirOwner, secretGroup := owner(n)
	if dirOwner != "" {
		uid, gid, err := lookupIDs(dirOwner)
		if err != nil {
			return false, err
		}
		for _, d := range []string{np.data(), np.log(), np.run()} {
			if err := os.Chown(d, uid, gid); err != nil {
				return false, err
			}
		}
	}
	gid := 0
	if secretGroup != "" {
		_, g, err := lookupIDs(secretGroup)
		if err != nil {
			return false, err
		}
		gid = g
	}
	svcs, err := json.MarshalIndent(r.Services, "", "  ")
	if err != nil {
		return false, err
	}
	files := append(append([]render.File(nil), r.Files...), render.File{Path: "services.json", Mode: 0o644, Data: svcs})
	if same(np.conf(), files) {
		return false, nil
	}
	tmp := np.conf() + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return false, err
	}
	for _, f := range files {
		path := filepath.Join(tmp, f.Path)
		if !strings.HasPrefix(path, tmp+string(filepath.Separator)) {
			return false, fmt.Errorf("node %s: rendered path %q leaves its directory", n.Name, f.Path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(path, f.Data, os.FileMode(f.Mode)); err != nil {
			return false, err
		}
		if f.Mode&0o040 != 0 && gid != 0 {
			if err := os.Chown(path, 0, gid); err != nil {
				return false, err
			}
		}
	}
	old := np.conf() + ".old"
	os.RemoveAll(old)
	if err := os.Rename(np.conf(), old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.Rename(tmp, np.conf()); err != nil {
		return false, err
	}
	return true, os.RemoveAll(old)
}

// same reports whether dir holds exactly files, byte for byte and mode for
// mode.
func same(dir string, files []render.File) bool {
	count := 0
	filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			count++
		}
		return nil
	})
	if count != len(files) {
		return false
	}
	for _, f := range files {
		path := filepath.Join(dir, f.Path)
		data, err := os.ReadFile(path)
		if err != nil || string(data) != string(f.Data) {
			return false
		}
		if info, err := os.Stat(path); err != nil || info.Mode().Perm() != os.FileMode(f.Mode).Perm() {
			return false
		}
	}
	return true
}

// container describes a node's runc container.
func (d *Driver) container(p *plan.Plan, n *plan.Node) runc.Container {
	ps := d.paths(p.Stack)
	np := ps.node(n.Name)
	l := render.DefaultLayout()
	mounts := []runc.Mount{
		runc.Bind("/usr", "/usr", false),
		runc.Bind(ps.etc(), "/etc", false),
		runc.Bind(filepath.Join(np.conf(), "hosts"), "/etc/hosts", false),
		runc.Bind(np.conf(), l.Conf, false),
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=65536k"}},
		runc.Bind(np.run(), l.Run, true),
		runc.Bind(np.log(), l.Log, true),
		runc.Bind(np.data(), l.Data, true),
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=262144k"}},
		{Destination: "/var/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=65536k"}},
		runc.Bind(ps.binary(), agentPath, false),
	}
	if n.Role == spec.RoleStatic || n.Role == spec.RoleApp {
		// The site is mounted on the host side, on srv/site, later and
		// again after every reconnect; slave propagation of the parent
		// carries each mount into the container (see prepareSiteMounts).
		m := runc.Bind(np.srv(), path.Dir(l.Site), true)
		m.Options = append(m.Options, "rslave")
		mounts = append(mounts, m)
	}
	return runc.Container{
		ID:       n.Container,
		Bundle:   np.bundle(),
		Rootfs:   ps.rootfs(),
		Hostname: n.Name,
		Netns:    "/var/run/netns/" + n.Netns,
		Args: []string{agentPath, "agent", "--node", n.Name,
			"--services", filepath.Join(l.Conf, "services.json"),
			"--socket", filepath.Join(l.Run, "agent.sock"),
			"--logs", l.Log},
		Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"},
		Mounts: mounts,
		Caps:   capabilities(n),
		Memory: n.Memory,
		Pids:   int64(n.Pids),
	}
}

// startContainer runs a node's container unless it already runs. A stopped
// one is deleted and run afresh.
func (d *Driver) startContainer(ctx context.Context, p *plan.Plan, n *plan.Node, j *journal) error {
	c := d.container(p, n)
	st, err := runc.State(ctx, c.ID)
	switch {
	case err == nil && st.Status == "running":
		return nil
	case err == nil:
		if err := runc.Delete(ctx, c.ID, true); err != nil {
			return err
		}
	case !errors.Is(err, runc.ErrNotExist):
		return err
	}
	if err := runc.WriteSpec(c); err != nil {
		return fmt.Errorf("node %s bundle: %w", n.Name, err)
	}
	if err := j.record(Object{Kind: KindContainer, Name: c.ID}); err != nil {
		return err
	}
	np := d.paths(p.Stack).node(n.Name)
	// Sockets and pid files of a previous run would mislead the daemons.
	if err := clearDir(np.run()); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(np.log(), "container.log"), os.O_CREATE|os.O_APPEND|os.O_RDWR, 0o640)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := runc.Run(ctx, c, out); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
