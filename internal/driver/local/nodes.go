package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/runc"
	"github.com/bulkhead/bulkhead/internal/seccomp"
)

// Where the bulkhead binary appears inside every container.
var agentPath = render.DefaultLayout().Agent

// cgroupPath is where a node sees its own cgroups.
const cgroupPath = "/bulkhead/cgroup"

// owner says which account owns a node's writable directories and can read
// its group-readable secrets (mode 0440): the daemon that needs them, as
// the catalog says. Empty means root.
func owner(n *plan.Node) (dirs, secrets string) {
	d, err := catalog.Lookup(n.Role, n.Software)
	if err != nil {
		return "", ""
	}
	return d.DirOwner, d.SecretGroup
}

// capabilities are a node's only privileges: the catalog's base set and
// what its software needs beyond it.
func capabilities(n *plan.Node) []string {
	if d, err := catalog.Lookup(n.Role, n.Software); err == nil {
		return d.AllCapabilities()
	}
	return slices.Clone(catalog.BaseCapabilities)
}

func (d *Driver) lookupIDs(name string) (int, int, error) {
	uid, gid, err := d.sys().lookupAccount(name)
	if err != nil {
		return 0, 0, fmt.Errorf("account %s: %w (is its package installed?)", name, err)
	}
	return uid, gid, nil
}

// writeNode writes a node's rendered files into its conf directory, which is
// replaced as a whole so that no stale file survives, and prepares its
// writable directories. It reports whether anything changed. ids is the
// node's block of host ids: its writable directories belong to its root
// (or its daemon's account) as the node sees it, and so do its read-only
// configs, so that daemons that insist on owning their keys find them
// theirs.
func (d *Driver) writeNode(np nodePaths, n *plan.Node, r render.Node, ids runc.IDMap) (nodeChange, error) {
	dirOwner, secretGroup := owner(n)
	uid, gid := 0, 0
	if dirOwner != "" {
		var err error
		if uid, gid, err = d.lookupIDs(dirOwner); err != nil {
			return nodeChange{}, err
		}
	}
	// The directories themselves are host paths the node cannot rename
	// (each is a mount point inside it); what is in them is the node's.
	for _, dir := range []string{np.data(), np.log(), np.run()} {
		if err := d.sys().chown(dir, hostID(ids, uid), hostID(ids, gid)); err != nil {
			return nodeChange{}, err
		}
	}
	sgid := 0
	if secretGroup != "" {
		_, g, err := d.lookupIDs(secretGroup)
		if err != nil {
			return nodeChange{}, err
		}
		sgid = g
	}
	files, err := nodeFiles(r)
	if err != nil {
		return nodeChange{}, err
	}
	if d.same(np.conf(), files, hostID(ids, 0)) {
		return nodeChange{}, nil
	}
	owner := func(f render.File) (int, int) {
		if f.Mode&0o040 != 0 {
			return hostID(ids, 0), hostID(ids, sgid)
		}
		return hostID(ids, 0), hostID(ids, 0)
	}
	c, err := classify(np.conf(), files)
	if err != nil {
		return nodeChange{}, err
	}
	if !c.restarts() {
		// The running node keeps its configuration directory: what
		// changed is replaced inside it, and reloaded or read afresh.
		changed := slices.Concat(c.Reload, c.Live)
		if c.none() {
			// Only owners differ: rewrite everything in place.
			for _, f := range files {
				changed = append(changed, f.Path)
			}
		}
		return c, d.writeInPlace(np.conf(), files, changed, owner)
	}
	tmp := np.conf() + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return nodeChange{}, err
	}
	for _, f := range files {
		path := filepath.Join(tmp, f.Path)
		if !strings.HasPrefix(path, tmp+string(filepath.Separator)) {
			return nodeChange{}, fmt.Errorf("node %s: rendered path %q leaves its directory", n.Name, f.Path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nodeChange{}, err
		}
		if err := os.WriteFile(path, f.Data, os.FileMode(f.Mode)); err != nil {
			return nodeChange{}, err
		}
		uid, gid := owner(f)
		if err := d.sys().chown(path, uid, gid); err != nil {
			return nodeChange{}, err
		}
	}
	old := np.conf() + ".old"
	os.RemoveAll(old)
	if err := os.Rename(np.conf(), old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nodeChange{}, err
	}
	if err := os.Rename(tmp, np.conf()); err != nil {
		return nodeChange{}, err
	}
	return c, os.RemoveAll(old)
}

// nodeFiles is what a node's configuration directory holds: its rendered
// files and services.json, which the agent reads only when it starts.
func nodeFiles(r render.Node) ([]render.File, error) {
	svcs, err := json.MarshalIndent(r.Services, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(slices.Clone(r.Files), render.File{Path: "services.json", Mode: 0o644, Data: svcs}), nil
}

// same reports whether dir holds exactly files, byte for byte and mode for
// mode, owned by uid.
func (d *Driver) same(dir string, files []render.File, uid int) bool {
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
		info, err := os.Stat(path)
		if err != nil || info.Mode().Perm() != os.FileMode(f.Mode).Perm() {
			return false
		}
		if owner, err := d.sys().fileOwner(path); err != nil || owner != uid {
			return false
		}
	}
	return true
}

// container describes a node's runc container: ids is its block of host
// ids, and seccomp its syscall filter.
func (d *Driver) container(p *plan.Plan, n *plan.Node, ids runc.IDMap, filter *specs.LinuxSeccomp) runc.Container {
	ps := d.paths(p.Stack)
	np := ps.node(n.Name)
	l := render.DefaultLayout()
	mounts := []runc.Mount{
		runc.Bind("/usr", "/usr", false),
		runc.Bind(ps.etc(), "/etc", false),
		runc.Bind(np.conf(), l.Conf, false),
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=65536k"}},
		volumeBind(np.run(), l.Run),
		volumeBind(np.log(), l.Log),
		volumeBind(np.data(), l.Data),
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=262144k"}},
		{Destination: "/var/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=65536k"}},
		runc.Bind(ps.binary(), agentPath, false),
		// The node's own cgroups, read-only, one directory per
		// controller, for the agent's metrics: runc binds the
		// container's cgroup of each controller, and no other.
		{Destination: cgroupPath, Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	if n.Mount != nil {
		// The share is mounted on the host side, on srv/shared, later
		// and again after every reconnect; slave propagation of the
		// parent carries each mount into the container (see
		// prepareSiteMounts). Read-only: the node must not swap
		// srv/shared for a link that the host's next mount would follow.
		// The share mount itself keeps its own flags (read-write for app
		// nodes' uploads).
		m := runc.Bind(np.srv(), path.Dir(l.Shared), false)
		m.Options = append(m.Options, "rslave")
		// Every release, read-only: the node's configuration names the
		// one it serves (see nodeLayout).
		mounts = append(mounts, m, runc.Bind(ps.releases(), releasesDir, false))
	}
	return runc.Container{
		ID:       n.Container,
		Bundle:   np.bundle(),
		Rootfs:   ps.nodeRoot(n.Name),
		Hostname: n.Name,
		Netns:    "/var/run/netns/" + n.Netns,
		Args:     agentArgs(n, l),
		Env:      []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"},
		Mounts:   mounts,
		Caps:     capabilities(n),
		Memory:   n.Memory,
		// Where the kernel can, the memory limit bounds swap too: a
		// node's excess must fail its own work, not page the host.
		NoSwap:    d.sys().swapAccounted(),
		Pids:      int64(n.Pids),
		CPUShares: cpuShares(n.CPUWeight),
		IDs:       ids,
		UserNS:    userNS(ids, n),
		Seccomp:   filter,
	}
}

// agentArgs is the node's first process: its agent, which serves status
// on a socket in the node's run directory and, when the plan gives the
// node a metrics address, its metrics there.
func agentArgs(n *plan.Node, l render.Layout) []string {
	args := []string{agentPath, "agent", "--node", n.Name,
		"--services", filepath.Join(l.Conf, "services.json"),
		"--socket", filepath.Join(l.Run, "agent.sock"),
		"--logs", l.Log}
	if n.Metrics.IsValid() {
		args = append(args, "--metrics", n.Metrics.String(), "--cgroup", cgroupPath, "--disk", l.Data)
	}
	return args
}

// userNS is where the node's user namespace is pinned, if it has one.
func userNS(ids runc.IDMap, n *plan.Node) string {
	if ids.Size == 0 {
		return ""
	}
	return netns.UserPath(n.Netns)
}

// volumeBind binds a directory of the node's disk image, with the image
// mount's own flags: a user namespace may not drop a flag the host set.
func volumeBind(src, dst string) runc.Mount {
	m := runc.Bind(src, dst, true)
	m.Options = append(m.Options, "noexec")
	return m
}

// cpuShares maps a cgroup v2 style weight (1..10000, 100 by default) to
// cgroup v1 cpu.shares (2..262144, 1024 by default).
func cpuShares(weight int) uint64 {
	if weight <= 0 {
		return 0
	}
	return max(2, uint64(weight)*1024/100)
}

// maxContainerLog is where the container's output is rotated, at each
// start: it holds the agent's own lines and runc's errors, and whatever a
// hostile node writes to its PID 1's output, which its disk bounds.
const maxContainerLog = 8 << 20

// startContainer runs a node's container unless it already runs. A stopped
// one is deleted and run afresh.
func (d *Driver) startContainer(ctx context.Context, p *plan.Plan, n *plan.Node, j *journal) error {
	st, err := d.sys().containerState(ctx, n.Container)
	return d.startContainerFrom(ctx, p, n, j, st, err)
}

// startContainerFrom is startContainer with the container's state, and
// the error reading it, already known.
func (d *Driver) startContainerFrom(ctx context.Context, p *plan.Plan, n *plan.Node, j *journal, st runc.Status, err error) error {
	ids := j.nodeIDs(n.Name)
	var filter *specs.LinuxSeccomp
	if j.sandboxed() {
		if ids.Size == 0 {
			return fmt.Errorf("node %s has no block of host ids; run 'bulkhead up'", n.Name)
		}
		var err error
		if filter, err = seccomp.Profile(n.Role, capabilities(n)); err != nil {
			return fmt.Errorf("node %s seccomp profile: %w", n.Name, err)
		}
	}
	c := d.container(p, n, ids, filter)
	sys := d.sys()
	switch {
	case err == nil && st.Status == "running":
		return nil
	case err == nil:
		if err := sys.deleteContainer(ctx, c.ID, true); err != nil {
			return err
		}
	case !errors.Is(err, runc.ErrNotExist):
		return err
	}
	if err := sys.writeSpec(c); err != nil {
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
	out, err := openContainerLog(np.out())
	if err != nil {
		return fmt.Errorf("node %s output: %w", n.Name, err)
	}
	defer out.Close()
	if err := sys.runContainer(ctx, c, out); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// openContainerLog opens container.log in dir, a directory no node sees,
// rotating it first when it has grown past maxContainerLog. Nothing on
// the way is followed: a link there is not bulkhead's.
func openContainerLog(dir string) (*os.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if info, err := root.Lstat("container.log"); err == nil && info.Size() > maxContainerLog {
		if err := root.Rename("container.log", "container.log.1"); err != nil {
			return nil, err
		}
	}
	return root.OpenFile("container.log", os.O_CREATE|os.O_APPEND|os.O_RDWR|syscall.O_NOFOLLOW, 0o640)
}

// clearDir empties dir, a directory a node writes, without following
// anything the node left in it.
func clearDir(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := root.RemoveAll(e.Name()); err != nil {
			return err
		}
	}
	return nil
}
