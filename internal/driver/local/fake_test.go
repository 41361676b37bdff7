package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/verify"

	"github.com/bulkhead/bulkhead/internal/agent"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/runc"
)

// fakeSystem is the host as the driver's tests see it, after tailscale's
// fake router: each change the driver asks for is one line of text in
// ops, and the fake keeps just enough state (namespaces, links, rulesets,
// containers, mounts, owners, the supervisor) to answer the driver's
// questions as the host would. Questions are not recorded.
//
// Two things stay real files under the driver's root, so that what up
// makes there can be checked: a disk image is a sparse file, and its
// filesystem a directory that mounting moves onto the mount point and
// unmounting moves back, so that data outlives down as on the host; and
// the site sync is the real one, with every owner the test's own user.
type fakeSystem struct {
	root string // paths in ops are relative to it

	mu  sync.Mutex
	ops []string
	// failOn makes the op whose line starts with it fail, once.
	failOn string
	// onOp, when set, sees each op that succeeds, as it happens. It may
	// not call the fake.
	onOp func(line string)

	netns      map[string]bool
	bridges    map[string]netip.Prefix // name -> its address
	veths      map[string]string       // host end -> the namespace of the other
	aliases    map[string]string       // a bridge's or veth's alias
	tables     map[string]map[string]*nft.Ruleset
	sysctl     map[string]int
	containers map[string]*fakeContainer
	volumes    map[string]string   // mount point -> image
	targets    map[string]bool     // site mount points prepared
	procs      map[string]string   // pid -> kind (KindProcess, KindKeeper) of the pair's processes running
	argv       map[string][]string // pid -> its command line
	owners     map[uint64]int      // inode -> uid, as chown left it
	nextPid    int
	args       [][]string // each supervisor's arguments
	bootUnit   bool       // the boot unit is installed
	// bridgeFilterErr is why bridged traffic would not meet the host's
	// forward hook; nil when it does.
	bridgeFilterErr error
	missing         []string // Debian packages not installed
	// versions is what a database's Version command prints, by its
	// program; a program not in it is not installed.
	versions map[string]string
	// siteStatus, when set, is the status an app node answers url with.
	siteStatus func(url string) int
	// healthy, when set, is what a running node's agent answers, by the
	// node's name; unset, every running node is healthy.
	healthy func(node string) bool
}

type fakeContainer struct {
	status string
	node   string // the node's directory, where its agent's socket is
}

func newFakeSystem(root string) *fakeSystem {
	return &fakeSystem{
		root:       root,
		netns:      map[string]bool{},
		bridges:    map[string]netip.Prefix{},
		veths:      map[string]string{},
		aliases:    map[string]string{},
		tables:     map[string]map[string]*nft.Ruleset{},
		sysctl:     map[string]int{"gc_thresh3": 1024, "gc_thresh2": 512},
		containers: map[string]*fakeContainer{},
		volumes:    map[string]string{},
		targets:    map[string]bool{},
		procs:      map[string]string{},
		argv:       map[string][]string{},
		owners:     map[uint64]int{},
		nextPid:    4000,
		versions: map[string]string{
			"mariadbd":                            "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n",
			"/usr/lib/postgresql/15/bin/postgres": "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
		},
	}
}

var _ system = (*fakeSystem)(nil)

// take returns the ops recorded since the last take.
func (f *fakeSystem) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// op records a change and returns the error failOn asks for. The caller
// holds f.mu.
func (f *fakeSystem) op(format string, args ...any) error {
	line := fmt.Sprintf(format, args...)
	if f.failOn != "" && strings.HasPrefix(line, f.failOn) {
		f.failOn = ""
		f.ops = append(f.ops, line+" (fails)")
		return fmt.Errorf("fake: %s failed", line)
	}
	f.ops = append(f.ops, line)
	if f.onOp != nil {
		f.onOp(line)
	}
	return nil
}

// rel shortens a path under the root for ops.
func (f *fakeSystem) rel(path string) string {
	if r, err := filepath.Rel(f.root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// leftovers lists the objects the fake host holds, as "KIND NAME", sorted.
func (f *fakeSystem) leftovers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name := range f.netns {
		out = append(out, "netns "+name)
	}
	for name := range f.bridges {
		out = append(out, "bridge "+name)
	}
	for name := range f.veths {
		out = append(out, "veth "+name)
	}
	// A namespace's own ruleset goes with it.
	for t := range f.tables[""] {
		out = append(out, "nft host "+t)
	}
	for id := range f.containers {
		out = append(out, "container "+id)
	}
	for vol := range f.volumes {
		out = append(out, "volume "+f.rel(vol))
	}
	for t := range f.targets {
		out = append(out, "site mount point "+f.rel(t))
	}
	for pid, kind := range f.procs {
		out = append(out, kind+" "+pid)
	}
	slices.Sort(out)
	return out
}

func (f *fakeSystem) missingPackages(ctx context.Context, names []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range names {
		if slices.Contains(f.missing, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeSystem) installPackages(ctx context.Context, names []string, out io.Writer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.missing = slices.DeleteFunc(f.missing, func(n string) bool { return slices.Contains(names, n) })
	return f.op("apt install %s", strings.Join(names, " "))
}

// routeDev routes a bridge's subnet to the bridge, and everything else to
// the default route's eth0.
func (f *fakeSystem) routeDev(ctx context.Context, dst string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, err := netip.ParseAddr(dst)
	if err != nil {
		return "", err
	}
	for name, p := range f.bridges {
		if p.Masked().Contains(a) {
			return name, nil
		}
	}
	return "eth0", nil
}

func (f *fakeSystem) canListen(addr netip.AddrPort) error           { return nil }
func (f *fakeSystem) checkUserNamespaces(ctx context.Context) error { return nil }

func (f *fakeSystem) bridgeFiltered(ctx context.Context) error { return f.bridgeFilterErr }

func (f *fakeSystem) netnsExists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.netns[name]
}

func (f *fakeSystem) addNetns(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("netns add %s", name); err != nil {
		return err
	}
	f.netns[name] = true
	return nil
}

func (f *fakeSystem) addOwnedNetns(ctx context.Context, name string, ids netns.IDMap) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("netns add %s owned by %d+%d", name, ids.Host, ids.Size); err != nil {
		return err
	}
	f.netns[name] = true
	return nil
}

// deleteNetns takes the namespace's veths and ruleset with it, as the
// kernel does.
func (f *fakeSystem) deleteNetns(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("netns delete %s", name); err != nil {
		return err
	}
	delete(f.netns, name)
	delete(f.tables, name)
	for host, ns := range f.veths {
		if ns == name {
			delete(f.veths, host)
			delete(f.aliases, host)
		}
	}
	return nil
}

func (f *fakeSystem) netnsSysctl(ctx context.Context, ns, key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.netns[ns] {
		return fmt.Errorf("fake: sysctl in %s: no such namespace", ns)
	}
	return f.op("sysctl in %s %s=%s", ns, key, value)
}

func (f *fakeSystem) linkExists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, bridge := f.bridges[name]
	_, veth := f.veths[name]
	return bridge || veth
}

func (f *fakeSystem) addBridge(ctx context.Context, name, addr, alias string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		return err
	}
	if err := f.op("bridge add %s %s", name, addr); err != nil {
		return err
	}
	f.bridges[name] = p
	f.aliases[name] = alias
	return nil
}

func (f *fakeSystem) addVeth(ctx context.Context, v netns.Veth) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.netns[v.Netns] {
		return fmt.Errorf("fake: veth %s into missing netns %s", v.Host, v.Netns)
	}
	if _, ok := f.bridges[v.Bridge]; !ok {
		return fmt.Errorf("fake: veth %s onto missing bridge %s", v.Host, v.Bridge)
	}
	if err := f.op("veth add %s on %s, %s %s in %s", v.Host, v.Bridge, v.Name, v.Addr, v.Netns); err != nil {
		return err
	}
	f.veths[v.Host] = v.Netns
	f.aliases[v.Host] = v.Alias
	return nil
}

func (f *fakeSystem) deleteLink(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("link delete %s", name); err != nil {
		return err
	}
	delete(f.bridges, name)
	delete(f.veths, name)
	delete(f.aliases, name)
	return nil
}

// nftApply replaces each table the ruleset defines, as nft -f does with
// bulkhead's "table; delete table; table {...}" rulesets.
func (f *fakeSystem) nftApply(ctx context.Context, ns string, ruleset []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	tables, err := parseRuleset(ruleset)
	if err != nil {
		return err
	}
	where := ns
	if ns == "" {
		where = "host"
	} else if !f.netns[ns] {
		return fmt.Errorf("fake: nft in missing netns %s", ns)
	}
	names := slices.Sorted(maps.Keys(tables))
	if err := f.op("nft apply %s %s", where, strings.Join(names, ", ")); err != nil {
		return err
	}
	if f.tables[ns] == nil {
		f.tables[ns] = map[string]*nft.Ruleset{}
	}
	for name, t := range tables {
		f.tables[ns][name] = t
	}
	return nil
}

func (f *fakeSystem) nftHasTable(ctx context.Context, ns, family, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tables[ns][family+" "+name] != nil
}

// nftRead merges the namespace's tables into one summary, as nft.Read
// reads the whole ruleset.
func (f *fakeSystem) nftRead(ctx context.Context, ns string) (*nft.Ruleset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs := &nft.Ruleset{Chains: map[string]nft.Chain{}, Sets: map[string][]string{}}
	for _, name := range slices.Sorted(maps.Keys(f.tables[ns])) {
		t := f.tables[ns][name]
		rs.Tables = append(rs.Tables, t.Tables...)
		for k, c := range t.Chains {
			rs.Chains[k] = c
		}
		for k, s := range t.Sets {
			rs.Sets[k] = s
		}
	}
	return rs, nil
}

func (f *fakeSystem) nftDeleteTable(ctx context.Context, ns, family, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	where := ns
	if ns == "" {
		where = "host"
	}
	if err := f.op("nft delete %s %s %s", where, family, name); err != nil {
		return err
	}
	delete(f.tables[ns], family+" "+name)
	if len(f.tables[ns]) == 0 {
		delete(f.tables, ns)
	}
	return nil
}

func (f *fakeSystem) readSysctl(key string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.sysctl[key]
	if !ok {
		return 0, fs.ErrNotExist
	}
	return v, nil
}

func (f *fakeSystem) writeSysctl(key string, value int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := "net.ipv4.neigh.default." + key
	if strings.Contains(key, "/") {
		name = "net/ipv4/" + key
	}
	if err := f.op("sysctl %s = %d", name, value); err != nil {
		return err
	}
	f.sysctl[key] = value
	return nil
}

func (f *fakeSystem) addRoute(ctx context.Context, ns string, dst netip.Prefix, gw netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.netns[ns] {
		return fmt.Errorf("fake: route in %s: no such namespace", ns)
	}
	return f.op("route in %s %s via %s", ns, dst, gw)
}

func (f *fakeSystem) flushRoutes(ctx context.Context, ns string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.netns[ns] {
		return fmt.Errorf("fake: routes in %s: no such namespace", ns)
	}
	return f.op("route flush in %s", ns)
}

// addrLink: every address is eth0's, the fake host's one interface.
func (f *fakeSystem) addrLink(a netip.Addr) (string, error) { return "eth0", nil }

func (f *fakeSystem) setDefaultRoute(ctx context.Context, ns string, gw netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.netns[ns] {
		return fmt.Errorf("fake: route in %s: no such namespace", ns)
	}
	return f.op("route in %s default via %s", ns, gw)
}

func (f *fakeSystem) writeSpec(c runc.Container) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.op("runc spec %s in %s", c.ID, f.rel(c.Bundle))
}

func (f *fakeSystem) runContainer(ctx context.Context, c runc.Container, out *os.File) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur := f.containers[c.ID]; cur != nil {
		return fmt.Errorf("fake: runc run %s: it exists (%s)", c.ID, cur.status)
	}
	if n := strings.TrimPrefix(c.Netns, netns.Dir+"/"); !f.netns[n] {
		return fmt.Errorf("fake: runc run %s: no netns %s", c.ID, n)
	}
	if err := f.op("runc run %s", c.ID); err != nil {
		return err
	}
	f.containers[c.ID] = &fakeContainer{status: "running", node: filepath.Dir(c.Bundle)}
	return nil
}

func (f *fakeSystem) containerState(ctx context.Context, id string) (runc.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[id]
	if c == nil {
		return runc.Status{}, runc.ErrNotExist
	}
	return runc.Status{ID: id, Status: c.status, Pid: 1}, nil
}

func (f *fakeSystem) killContainer(ctx context.Context, id, signal string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("runc kill %s %s", id, signal); err != nil {
		return err
	}
	if c := f.containers[id]; c != nil {
		c.status = "stopped"
	}
	return nil
}

func (f *fakeSystem) deleteContainer(ctx context.Context, id string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("runc delete %s", id); err != nil {
		return err
	}
	delete(f.containers, id)
	return nil
}

func (f *fakeSystem) execContainer(ctx context.Context, id string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.op("runc exec %s %s", id, strings.Join(args, " "))
}

func (f *fakeSystem) mounted(path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.volumes[path]
	return ok, nil
}

// fakeFS is where a fake image keeps its filesystem while it is not mounted.
func fakeFS(img string) string { return img + ".fs" }

func (f *fakeSystem) makeImage(ctx context.Context, img string, size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("mkfs.ext4 %s %s", f.rel(img), humanBytes(size)); err != nil {
		return err
	}
	file, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := errors.Join(file.Truncate(size), file.Close()); err != nil {
		return err
	}
	return os.Mkdir(fakeFS(img), 0o755)
}

func (f *fakeSystem) growImage(ctx context.Context, img, vol string, size int64, mounted bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("resize2fs %s %s", f.rel(img), humanBytes(size)); err != nil {
		return err
	}
	return os.Truncate(img, size)
}

func (f *fakeSystem) mountImage(ctx context.Context, img, vol string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("mount %s on %s", f.rel(img), f.rel(vol)); err != nil {
		return err
	}
	if err := os.Remove(vol); err != nil {
		return fmt.Errorf("fake: mount on %s: %w", vol, err)
	}
	if err := os.Rename(fakeFS(img), vol); err != nil {
		return err
	}
	f.volumes[vol] = img
	return nil
}

func (f *fakeSystem) unmountVolume(vol string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("umount %s", f.rel(vol)); err != nil {
		return err
	}
	img, ok := f.volumes[vol]
	if !ok {
		return nil
	}
	delete(f.volumes, vol)
	if err := os.Rename(vol, fakeFS(img)); err != nil {
		return err
	}
	return os.Mkdir(vol, 0o755)
}

func (f *fakeSystem) removeImage(img string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("rm %s", f.rel(img)); err != nil {
		return err
	}
	return errors.Join(os.Remove(img), os.RemoveAll(fakeFS(img)))
}

func (f *fakeSystem) prepareTargets(dirs []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, dir := range dirs {
		if err := f.op("mount --bind --make-shared %s", f.rel(dir)); err != nil {
			return err
		}
		f.targets[dir] = true
	}
	return nil
}

func (f *fakeSystem) releaseTarget(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("umount %s", f.rel(dir)); err != nil {
		return err
	}
	delete(f.targets, dir)
	return nil
}

// sshfsAnswering says a running supervisor has mounted every prepared
// site, and that each answers.
func (f *fakeSystem) sshfsAnswering(targets []string) ([]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]bool, len(targets))
	for i, t := range targets {
		out[i] = f.targets[filepath.Dir(t)] && f.supervising()
	}
	return out, nil
}

func (f *fakeSystem) sshfsUnmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.op("fusermount -u %s", f.rel(target))
}

// fakeAccounts are the host accounts the nodes' daemons run as.
var fakeAccounts = map[string]int{"root": 0, "www-data": 33, "mysql": 101, "postgres": 102, "memcache": 103, "redis": 104, "haproxy": 105, "sshd": 106}

func (f *fakeSystem) lookupAccount(name string) (int, int, error) {
	id, ok := fakeAccounts[name]
	if !ok {
		return 0, 0, fmt.Errorf("fake: no account %s", name)
	}
	return id, id, nil
}

func inode(path string, follow bool) (uint64, error) {
	stat := os.Lstat
	if follow {
		stat = os.Stat
	}
	info, err := stat(path)
	if err != nil {
		return 0, err
	}
	return info.Sys().(*syscall.Stat_t).Ino, nil
}

// fileOwner is the owner the fake's chown gave the file, else its real one.
func (f *fakeSystem) fileOwner(path string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ino, err := inode(path, true)
	if err != nil {
		return 0, err
	}
	if uid, ok := f.owners[ino]; ok {
		return uid, nil
	}
	return realSystem{}.fileOwner(path)
}

func (f *fakeSystem) setOwner(path string, uid int, follow bool) error {
	ino, err := inode(path, follow)
	if err != nil {
		return err
	}
	f.owners[ino] = uid
	return nil
}

func (f *fakeSystem) chown(path string, uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("chown %d:%d %s", uid, gid, f.rel(path)); err != nil {
		return err
	}
	return f.setOwner(path, uid, true)
}

func (f *fakeSystem) lchown(path string, uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("chown -h %d:%d %s", uid, gid, f.rel(path)); err != nil {
		return err
	}
	return f.setOwner(path, uid, false)
}

func (f *fakeSystem) chownTree(dir string, uid, gid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("chown -hR %d:%d %s", uid, gid, f.rel(dir)); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return f.setOwner(path, uid, false)
	})
}

// syncSite runs the real sync with the test's own ids for every owner,
// and records what it changed, if anything.
func (f *fakeSystem) syncSite(s siteSync) (*syncResult, error) {
	me := ids{os.Getuid(), os.Getgid()}
	s.Root, s.Writer = me, me
	res, err := syncSite(s)
	if err != nil {
		return res, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(res.Put) + len(res.Removed); n > 0 {
		return res, f.op("site sync to %s: %d put, %d removed", s.Node, len(res.Put), len(res.Removed))
	}
	return res, nil
}

// restoreUploads runs the real restore with the test's own ids for every
// owner, and records what it wrote.
func (f *fakeSystem) restoreUploads(s uploadsRestore) (*uploadsResult, error) {
	me := ids{os.Getuid(), os.Getgid()}
	s.Root, s.Writer = me, me
	res, err := restoreUploads(s)
	if err != nil {
		return res, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return res, f.op("uploads restore to %s: %d files, %d bytes, %d left out", s.Node, res.Files, res.Bytes, len(res.Skipped))
}

func (f *fakeSystem) listNetns() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.netns)), nil
}

func (f *fakeSystem) listLinks() ([]netns.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netns.Link
	for name := range f.bridges {
		out = append(out, netns.Link{Name: name, Alias: f.aliases[name], Bridge: true})
	}
	for name := range f.veths {
		out = append(out, netns.Link{Name: name, Alias: f.aliases[name]})
	}
	return out, nil
}

func (f *fakeSystem) listContainers(ctx context.Context) ([]runc.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runc.Status
	for id, c := range f.containers {
		out = append(out, runc.Status{ID: id, Status: c.status, Pid: 1, Bundle: filepath.Join(c.node, "bundle")})
	}
	return out, nil
}

// mountsUnder lists the disk images and site mount points mounted at or
// beneath dir.
func (f *fakeSystem) mountsUnder(dir string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range slices.Concat(slices.Collect(maps.Keys(f.volumes)), slices.Collect(maps.Keys(f.targets))) {
		if under(m, dir) {
			out = append(out, m)
		}
	}
	return out, nil
}

func (f *fakeSystem) pairProcesses(bin, stack, root string) ([]Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Object
	for pid, argv := range f.argv {
		if kind := pairCommand(argv, bin, stack, root); kind != "" && f.procs[pid] != "" {
			out = append(out, Object{Kind: kind, Name: pid, Detail: "fake"})
		}
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// startPair starts a supervisor and its keeper, each an op.
func (f *fakeSystem) startPair(bin, stack, root string, log *os.File) (Object, Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var objs []Object
	for _, kind := range []string{KindProcess, KindKeeper} {
		args := pairArgs(kind, stack, root, false)
		line := strings.ReplaceAll(strings.Join(args, " "), f.root, "$ROOT")
		if err := f.op("start %s %s", f.rel(bin), line); err != nil {
			for _, o := range objs {
				delete(f.procs, o.Name)
			}
			return Object{}, Object{}, err
		}
		f.nextPid++
		pid := strconv.Itoa(f.nextPid)
		f.procs[pid] = kind
		f.argv[pid] = append([]string{bin}, args...)
		if kind == KindProcess {
			f.supervises(args)
		}
		objs = append(objs, Object{Kind: kind, Name: pid, Detail: "fake"})
	}
	return objs[0], objs[1], nil
}

// replace plays the pair's peer of kind's process: that one dies, and its
// peer starts another in its place, which it has not recorded yet. It
// returns the new one's pid.
func (f *fakeSystem) replace(kind string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for pid, k := range f.procs {
		if k != kind {
			continue
		}
		argv := f.argv[pid]
		delete(f.procs, pid)
		f.nextPid++
		next := strconv.Itoa(f.nextPid)
		f.procs[next] = kind
		f.argv[next] = slices.Clone(argv)
		return next
	}
	return ""
}

// supervising reports whether a supervisor runs. The caller holds f.mu.
func (f *fakeSystem) supervising() bool {
	for _, kind := range f.procs {
		if kind == KindProcess {
			return true
		}
	}
	return false
}

// supervises plays a supervisor that has read its stack's plan, which
// args (supervise --stack NAME --root ROOT) name: it says so as the real
// one does.
func (f *fakeSystem) supervises(args []string) {
	var stack, root string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--stack":
			stack = args[i+1]
		case "--root":
			root = args[i+1]
		}
	}
	f.args = append(f.args, args)
	dir := filepath.Join(root, stack)
	if data, err := os.ReadFile(filepath.Join(dir, "plan.json")); err == nil {
		os.WriteFile(filepath.Join(dir, "supervised"), []byte(digest(data)), 0o600)
	}
}

// signalProcess plays HUP to a supervisor: it reads the plan again.
func (f *fakeSystem) signalProcess(o Object, sig syscall.Signal) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("signal %s %v", o.Name, sig); err != nil {
		return err
	}
	if f.procs[o.Name] == "" {
		return fmt.Errorf("fake: no process %s", o.Name)
	}
	for _, a := range f.args {
		f.supervises(a)
	}
	return nil
}

// checkSite checks the site as the host would: the checkers are the
// host's own programs, which need no root.
func (f *fakeSystem) checkSite(ctx context.Context, site string, last release.Manifest, c *catalog.SiteCheck) error {
	return checkSite(ctx, site, last, c)
}

// serverVersion answers from versions, as a host with those servers
// installed would.
func (f *fakeSystem) serverVersion(ctx context.Context, argv []string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out, ok := f.versions[argv[0]]
	if !ok {
		return "", fmt.Errorf("%s: %w", argv[0], exec.ErrNotFound)
	}
	return out, nil
}

// setUnit records a host unit enabled or disabled.
func (f *fakeSystem) setUnit(ctx context.Context, unit string, enable bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	verb := "disable"
	if enable {
		verb = "enable"
	}
	return f.op("systemctl %s %s", verb, unit)
}

func (f *fakeSystem) installBootUnit(ctx context.Context, bin, root string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bootUnit = true
	return f.op("boot unit: %s boot", f.rel(bin))
}

func (f *fakeSystem) removeBootUnit(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bootUnit = false
	return f.op("boot unit removed")
}

// reloadService records a reload of a running node's service.
func (f *fakeSystem) reloadService(ctx context.Context, socket, service string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	node := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(socket)))) // nodes/NODE/vol/run/agent.sock
	return f.op("reload %s %s", node, service)
}

// connections says a leaving node serves nothing more.
func (f *fakeSystem) connections(ctx context.Context, container string, ports []int) (int, error) {
	return 0, nil
}

// runsBinary: the fake's processes run the binary as it is.
func (f *fakeSystem) runsBinary(o Object, bin string) bool { return true }

// swapAccounted: the fake host bounds swap, as this project's hosts do.
func (f *fakeSystem) swapAccounted() bool { return true }

func (f *fakeSystem) processAlive(o Object) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs[o.Name] != ""
}

func (f *fakeSystem) stopProcess(o Object) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("kill %s", o.Name); err != nil {
		return err
	}
	delete(f.procs, o.Name)
	return nil
}

// queryAlerts: the fake host runs no monitor, so nothing fires; the call
// is recorded as the bridge it would go through.
func (f *fakeSystem) queryAlerts(ctx context.Context, bridge string, target netip.AddrPort) ([]Alert, error) {
	return []Alert{}, nil
}

func (f *fakeSystem) queryUsage(ctx context.Context, bridge string, target netip.AddrPort, nodes []string) ([]NodeUsage, error) {
	return nil, nil
}

func (f *fakeSystem) queryRange(ctx context.Context, bridge string, target netip.AddrPort, query string, start, end time.Time, step time.Duration) ([]Series, error) {
	return []Series{}, nil
}

// queryAgent answers for the agent of a node whose container runs.
func (f *fakeSystem) queryAgent(ctx context.Context, socket string) (*agent.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	node := filepath.Dir(filepath.Dir(filepath.Dir(socket))) // nodes/NODE/vol/run/agent.sock
	for _, c := range f.containers {
		if c.node == node && c.status == "running" {
			name := filepath.Base(node)
			return &agent.Status{Node: name, Healthy: f.healthy == nil || f.healthy(name)}, nil
		}
	}
	return nil, fmt.Errorf("fake: no agent on %s", socket)
}

// siteGet is an app node's answer: 200, or what siteStatus says.
func (f *fakeSystem) siteGet(ctx context.Context, ns, url, host string) (int, []byte, error) {
	if err := f.op("get %s from %s (Host %s)", url, ns, host); err != nil {
		return 0, nil, err
	}
	if f.siteStatus != nil {
		if code := f.siteStatus(url); code != 200 {
			return code, []byte("<h1>fake failure</h1>"), nil
		}
	}
	return 200, []byte("ok"), nil
}

// verify passes, and records which nodes it was asked about.
func (f *fakeSystem) verify(ctx context.Context, p *plan.Plan, o verify.Options) (*verify.Report, error) {
	if err := f.op("verify %s", strings.Join(o.Nodes, " ")); err != nil {
		return nil, err
	}
	return &verify.Report{Stack: p.Stack, Plan: p}, nil
}

// httpStatus is the site's answer once a supervisor publishes it.
func (f *fakeSystem) httpStatus(ctx context.Context, url string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.supervising() {
		return 0, fmt.Errorf("fake: nothing listens on %s", url)
	}
	return 200, nil
}

// parseRuleset reads the tables of an nft -f script as nft.Read would
// summarise them once loaded: per table, its chains with hook, policy and
// rule count, and its sets with their elements. It knows the shapes
// bulkhead renders, no more.
func parseRuleset(data []byte) (map[string]*nft.Ruleset, error) {
	out := map[string]*nft.Ruleset{}
	var table, chain, set string
	var rs *nft.Ruleset
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case table == "" && len(f) == 4 && f[0] == "table" && f[3] == "{":
			table = f[1] + " " + f[2]
			rs = &nft.Ruleset{Tables: []string{table}, Chains: map[string]nft.Chain{}, Sets: map[string][]string{}}
			out[table] = rs
		case table == "":
			// "table X" and "delete table X" before the definition.
		case line == "}":
			switch {
			case set != "":
				set = ""
			case chain != "":
				chain = ""
			default:
				table = ""
			}
		case chain == "" && set == "" && len(f) == 3 && f[0] == "chain" && f[2] == "{":
			chain = table + " " + f[1]
			rs.Chains[chain] = nft.Chain{}
		case chain == "" && set == "" && len(f) == 3 && f[0] == "set" && f[2] == "{":
			set = table + " " + f[1]
			rs.Sets[set] = nil
		case set != "":
			if rest, ok := strings.CutPrefix(line, "elements = {"); ok {
				for _, e := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
					if e = strings.TrimSpace(e); e != "" {
						rs.Sets[set] = append(rs.Sets[set], e)
					}
				}
			}
		case chain != "":
			c := rs.Chains[chain]
			if f[0] == "type" {
				for i := range f {
					switch strings.TrimSuffix(f[i], ";") {
					case "hook":
						c.Hook = f[i+1]
					case "policy":
						c.Policy = strings.TrimSuffix(f[i+1], ";")
					}
				}
			} else {
				c.Rules++
			}
			rs.Chains[chain] = c
		default:
			return nil, fmt.Errorf("fake nft: cannot read %q", line)
		}
	}
	if table != "" {
		return nil, fmt.Errorf("fake nft: table %s not closed", table)
	}
	return out, sc.Err()
}
