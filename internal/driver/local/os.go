package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/bulkhead/bulkhead/internal/agent"
	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/kernel"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
	"github.com/bulkhead/bulkhead/internal/pkgs"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/runc"
	"github.com/bulkhead/bulkhead/internal/sshfs"
	"github.com/bulkhead/bulkhead/internal/verify"
)

// system is what the driver asks of the host beyond plain files under its
// root: everything that needs root, reaches into the kernel, or talks to a
// process. realSystem is the host itself; the tests' fake records each
// change as a line of text and keeps just enough state to answer the
// questions, so that the driver's logic runs in milliseconds, without root.
//
// Files under the root (journal, plan, configs, secrets) stay real: tests
// give the driver a temporary root.
type system interface {
	// Debian packages.
	missingPackages(ctx context.Context, names []string) ([]string, error)
	installPackages(ctx context.Context, names []string, out io.Writer) error

	// What preflight asks before anything is made.
	routeDev(ctx context.Context, dst string) (string, error) // the host's route to dst; netns.ErrNoRoute if none
	canListen(addr netip.AddrPort) error
	checkUserNamespaces(ctx context.Context) error
	// bridgeFiltered makes sure that traffic bridged between nodes
	// passes the host's forward hook, loading br_netfilter if need be,
	// or says why it cannot (see kernel.BridgeFiltered).
	bridgeFiltered(ctx context.Context) error

	// Network namespaces. deleteNetns removes the user namespace that owns
	// one too, if it has one.
	netnsExists(name string) bool
	addNetns(ctx context.Context, name string) error
	addOwnedNetns(ctx context.Context, name string, ids netns.IDMap) error
	deleteNetns(ctx context.Context, name string) error
	// A setting of a network namespace's own (a key under net.).
	netnsSysctl(ctx context.Context, ns, key, value string) error

	// Links on the host.
	linkExists(name string) bool
	addBridge(ctx context.Context, name, addr, alias string) error
	addVeth(ctx context.Context, v netns.Veth) error
	deleteLink(ctx context.Context, name string) error

	// nftables, on the host (ns "") or in a named namespace.
	nftApply(ctx context.Context, ns string, ruleset []byte) error
	nftHasTable(ctx context.Context, ns, family, name string) bool
	nftRead(ctx context.Context, ns string) (*nft.Ruleset, error)
	nftDeleteTable(ctx context.Context, ns, family, name string) error

	// The host's IPv4 settings: the neighbour-table limits,
	// net.ipv4.neigh.default.KEY, or with a slash in key
	// net.ipv4.KEY, as conf/IFACE/forwarding.
	readSysctl(key string) (int, error)
	writeSysctl(key string, value int) error
	// addrLink returns the host interface holding address a.
	addrLink(a netip.Addr) (string, error)
	// setDefaultRoute gives namespace ns a default route via gw.
	setDefaultRoute(ctx context.Context, ns string, gw netip.Addr) error
	// addRoute routes dst via gw in namespace ns; flushRoutes removes
	// every route addRoute made there.
	addRoute(ctx context.Context, ns string, dst netip.Prefix, gw netip.Addr) error
	flushRoutes(ctx context.Context, ns string) error

	// runc.
	writeSpec(c runc.Container) error
	runContainer(ctx context.Context, c runc.Container, out *os.File) error
	containerState(ctx context.Context, id string) (runc.Status, error) // runc.ErrNotExist if none
	killContainer(ctx context.Context, id, signal string) error
	deleteContainer(ctx context.Context, id string, force bool) error
	execContainer(ctx context.Context, id string, args []string, stdin io.Reader, stdout, stderr io.Writer) error

	// Nodes' disk images (see volume.go).
	mounted(path string) (bool, error)
	makeImage(ctx context.Context, img string, size int64) error
	growImage(ctx context.Context, img, vol string, size int64, mounted bool) error
	mountImage(ctx context.Context, img, vol string) error
	unmountVolume(vol string) error
	removeImage(img string) error

	// Site mounts (see mounts.go): the shared bind a site mount lands
	// on, and the sshfs the supervisor puts there.
	prepareTargets(dirs []string) error
	releaseTarget(dir string) error
	sshfsAnswering(targets []string) ([]bool, error)
	sshfsUnmount(target string) error

	// Owners: the host's accounts, and what only root may change.
	lookupAccount(name string) (uid, gid int, err error)
	fileOwner(path string) (uid int, err error)
	chown(path string, uid, gid int) error
	lchown(path string, uid, gid int) error
	chownTree(dir string, uid, gid int) error // every path beneath dir, following no link
	syncSite(s siteSync) (*syncResult, error)
	restoreUploads(s uploadsRestore) (*uploadsResult, error)
	// The host's service units (see hostunits.go).
	setUnit(ctx context.Context, unit string, enable bool) error
	installBootUnit(ctx context.Context, bin, root string) error
	removeBootUnit(ctx context.Context) error
	// checkSite parses the site's new or changed code (see lint.go).
	checkSite(ctx context.Context, site string, last release.Manifest, c *catalog.SiteCheck) error
	// serverVersion runs a database's Version command (catalog.Backup)
	// on the host, whose /usr every node runs, and returns what it
	// printed; an error wrapping exec.ErrNotFound when the server is not
	// installed.
	serverVersion(ctx context.Context, argv []string) (string, error)

	// What down finds of a stack on the host when its journal cannot
	// say (see found.go).
	listNetns() ([]string, error)
	listLinks() ([]netns.Link, error)
	listContainers(ctx context.Context) ([]runc.Status, error)
	mountsUnder(dir string) ([]string, error) // mount points at or beneath dir
	pairProcesses(bin, stack, root string) ([]Object, error)

	// The stack's supervisor and its keeper, a pair of processes of their
	// own (see pair.go).
	startPair(bin, stack, root string, log *os.File) (sup, keeper Object, err error)
	processAlive(o Object) bool
	// runsBinary reports whether process o runs the file bin as it is
	// now, not one bin named before it was replaced.
	runsBinary(o Object, bin string) bool
	// swapAccounted reports whether the host's cgroups bound swap (see
	// runc.SwapAccounted).
	swapAccounted() bool
	stopProcess(o Object) error
	signalProcess(o Object, sig syscall.Signal) error

	// The nodes' agents, and the site as a visitor sees it.
	queryAgent(ctx context.Context, socket string) (*agent.Status, error)
	// queryAlerts asks the monitor's Prometheus at target, reached only
	// through bridge, for the alerts that fire.
	queryAlerts(ctx context.Context, bridge string, target netip.AddrPort) ([]Alert, error)
	// queryUsage asks it for the usage of nodes.
	queryUsage(ctx context.Context, bridge string, target netip.AddrPort, nodes []string) ([]NodeUsage, error)
	// queryRange asks it for query over [start, end] at step.
	queryRange(ctx context.Context, bridge string, target netip.AddrPort, query string, start, end time.Time, step time.Duration) ([]Series, error)
	reloadService(ctx context.Context, socket, service string) error
	// connections counts a container's established TCP connections whose
	// local port is one of ports: the requests it is still serving.
	connections(ctx context.Context, container string, ports []int) (int, error)
	httpStatus(ctx context.Context, url string) (int, error)
	// siteGet asks url from inside network namespace ns, with Host
	// host, and returns the status and the first KiB of the body. The
	// answer comes from a node: nothing in it is trusted.
	siteGet(ctx context.Context, ns, url, host string) (int, []byte, error)
	// verify runs verify on the running stack p.
	verify(ctx context.Context, p *plan.Plan, o verify.Options) (*verify.Report, error)
}

// sys is the driver's system: the host unless a test set another.
func (d *Driver) sys() system {
	if d.system == nil {
		return realSystem{}
	}
	return d.system
}

// realSystem is this host, through the kernel wrappers.
type realSystem struct{}

var _ system = realSystem{}

func (realSystem) missingPackages(ctx context.Context, names []string) ([]string, error) {
	return pkgs.Missing(ctx, names)
}

func (realSystem) installPackages(ctx context.Context, names []string, out io.Writer) error {
	return pkgs.Install(ctx, names, out)
}

func (realSystem) routeDev(ctx context.Context, dst string) (string, error) {
	return netns.RouteDev(ctx, "", dst)
}

func (realSystem) canListen(addr netip.AddrPort) error {
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		return err
	}
	return l.Close()
}

func (realSystem) checkUserNamespaces(ctx context.Context) error {
	return netns.CheckUserNamespaces(ctx)
}

func (realSystem) bridgeFiltered(ctx context.Context) error {
	err := kernel.BridgeFiltered()
	if !errors.Is(err, kernel.ErrNoBridgeNetfilter) {
		return err
	}
	if out, err := exec.CommandContext(ctx, "modprobe", "br_netfilter").CombinedOutput(); err != nil {
		return fmt.Errorf("%w; loading it failed (modprobe br_netfilter: %v: %s): load it, and name it in /etc/modules to keep it", kernel.ErrNoBridgeNetfilter, err, bytes.TrimSpace(out))
	}
	return kernel.BridgeFiltered()
}

func (realSystem) netnsExists(name string) bool { return netns.Exists(name) }

func (realSystem) addNetns(ctx context.Context, name string) error { return netns.Add(ctx, name) }

func (realSystem) addOwnedNetns(ctx context.Context, name string, ids netns.IDMap) error {
	return netns.AddOwned(ctx, name, ids)
}

func (realSystem) deleteNetns(ctx context.Context, name string) error {
	return netns.DeleteOwned(ctx, name)
}

func (realSystem) netnsSysctl(ctx context.Context, ns, key, value string) error {
	return netns.Sysctl(ctx, ns, key, value)
}

func (realSystem) linkExists(name string) bool { return netns.LinkExists(name) }

func (realSystem) addBridge(ctx context.Context, name, addr, alias string) error {
	return netns.AddBridge(ctx, name, addr, alias)
}

func (realSystem) addVeth(ctx context.Context, v netns.Veth) error { return netns.AddVeth(ctx, v) }

func (realSystem) deleteLink(ctx context.Context, name string) error {
	return netns.DeleteLink(ctx, name)
}

func (realSystem) nftApply(ctx context.Context, ns string, ruleset []byte) error {
	return nft.Apply(ctx, ns, ruleset)
}

func (realSystem) nftHasTable(ctx context.Context, ns, family, name string) bool {
	return nft.HasTable(ctx, ns, family, name)
}

func (realSystem) nftRead(ctx context.Context, ns string) (*nft.Ruleset, error) {
	return nft.Read(ctx, ns)
}

func (realSystem) nftDeleteTable(ctx context.Context, ns, family, name string) error {
	return nft.DeleteTable(ctx, ns, family, name)
}

func (realSystem) readSysctl(key string) (int, error) { return readInt(sysctlPath(key)) }

func (realSystem) writeSysctl(key string, value int) error {
	return os.WriteFile(sysctlPath(key), []byte(strconv.Itoa(value)), 0o644)
}

// sysctlPath is where the setting key of readSysctl lives. A path, not
// the dotted name: an interface's name may have a dot.
func sysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return "/proc/sys/net/ipv4/" + key
	}
	return neighDir + key
}

func (realSystem) addrLink(a netip.Addr) (string, error) { return netns.AddrLink(a) }

func (realSystem) setDefaultRoute(ctx context.Context, ns string, gw netip.Addr) error {
	return netns.SetDefaultRoute(ctx, ns, gw.String())
}

func (realSystem) addRoute(ctx context.Context, ns string, dst netip.Prefix, gw netip.Addr) error {
	return netns.AddRoute(ctx, ns, dst.String(), gw.String())
}

func (realSystem) flushRoutes(ctx context.Context, ns string) error {
	return netns.FlushRoutes(ctx, ns)
}

func (realSystem) writeSpec(c runc.Container) error { return runc.WriteSpec(c) }

func (realSystem) runContainer(ctx context.Context, c runc.Container, out *os.File) error {
	return runc.Run(ctx, c, out)
}

func (realSystem) containerState(ctx context.Context, id string) (runc.Status, error) {
	return runc.State(ctx, id)
}

func (realSystem) killContainer(ctx context.Context, id, signal string) error {
	return runc.Kill(ctx, id, signal)
}

func (realSystem) deleteContainer(ctx context.Context, id string, force bool) error {
	return runc.Delete(ctx, id, force)
}

func (realSystem) execContainer(ctx context.Context, id string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runc.Exec(ctx, id, args, stdin, stdout, stderr)
}

func (realSystem) mounted(path string) (bool, error) { return mountinfo.Mounted(path) }

func (realSystem) makeImage(ctx context.Context, img string, size int64) error {
	return makeImage(ctx, img, size)
}

func (realSystem) growImage(ctx context.Context, img, vol string, size int64, mounted bool) error {
	return growImage(ctx, img, vol, size, mounted)
}

func (realSystem) mountImage(ctx context.Context, img, vol string) error {
	return mountImage(ctx, img, vol)
}

func (realSystem) unmountVolume(vol string) error { return unmountVolume(vol) }

func (realSystem) removeImage(img string) error { return os.Remove(img) }

func (realSystem) prepareTargets(dirs []string) error { return sshfs.PrepareTargets(dirs) }

func (realSystem) releaseTarget(dir string) error { return sshfs.ReleaseTarget(dir) }

// sshfsAnswering reports which of targets have an sshfs that is mounted
// and answers: sshfs mounts before it connects. At a cold up of 100 app
// nodes (2026-11-30), 31 of 101 mounts timed out in the SSH banner exchange
// and were made again, some after up, which checked only that they were
// listed, had called the stack up.
func (realSystem) sshfsAnswering(targets []string) ([]bool, error) {
	return sshfs.AnsweringEach(targets, siteAnswerLimit)
}

// siteAnswerLimit is how long a round of up's health checks waits for the
// site mounts to answer a stat; one that has not is asked again next round.
const siteAnswerLimit = 2 * time.Second

func (realSystem) sshfsUnmount(target string) error { return sshfs.Unmount(target) }

func (realSystem) lookupAccount(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

func (realSystem) fileOwner(path string) (int, error) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fs.ErrInvalid
	}
	return int(st.Uid), nil
}

func (realSystem) chown(path string, uid, gid int) error { return os.Chown(path, uid, gid) }

func (realSystem) lchown(path string, uid, gid int) error { return os.Lchown(path, uid, gid) }

func (realSystem) chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func (realSystem) syncSite(s siteSync) (*syncResult, error) { return syncSite(s) }

func (realSystem) restoreUploads(s uploadsRestore) (*uploadsResult, error) {
	return restoreUploads(s)
}

func (realSystem) listNetns() ([]string, error) { return netns.List() }

func (realSystem) listLinks() ([]netns.Link, error) { return netns.Links() }

func (realSystem) listContainers(ctx context.Context) ([]runc.Status, error) {
	return runc.List(ctx)
}

func (realSystem) mountsUnder(dir string) ([]string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

func (realSystem) pairProcesses(bin, stack, root string) ([]Object, error) {
	return pairProcesses(bin, stack, root)
}

func (realSystem) startPair(bin, stack, root string, log *os.File) (Object, Object, error) {
	return startPair(bin, stack, root, log)
}

func (realSystem) processAlive(o Object) bool { return alive(o) }

func (realSystem) runsBinary(o Object, bin string) bool {
	// /proc/PID/exe leads to the file the process runs, even one that
	// was replaced since, and so removed.
	exe, err := os.Stat(filepath.Join("/proc", o.Name, "exe"))
	if err != nil {
		return false
	}
	now, err := os.Stat(bin)
	return err == nil && os.SameFile(exe, now)
}

func (realSystem) swapAccounted() bool { return runc.SwapAccounted() }

func (realSystem) stopProcess(o Object) error { return stopProcess(o) }

func (realSystem) checkSite(ctx context.Context, site string, last release.Manifest, c *catalog.SiteCheck) error {
	return checkSite(ctx, site, last, c)
}

func (realSystem) serverVersion(ctx context.Context, argv []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// signalProcess signals a process bulkhead started, by pid, only if it is
// still that process.
func (realSystem) signalProcess(o Object, sig syscall.Signal) error {
	pid, err := strconv.Atoi(o.Name)
	if err != nil {
		return fmt.Errorf("bad pid %q in journal", o.Name)
	}
	if !alive(o) {
		return fmt.Errorf("process %d is gone", pid)
	}
	return syscall.Kill(pid, sig)
}

func (realSystem) reloadService(ctx context.Context, socket, service string) error {
	return agent.Reload(ctx, socket, service)
}

func (realSystem) connections(ctx context.Context, container string, ports []int) (int, error) {
	st, err := runc.State(ctx, container)
	if err != nil || st.Status != "running" || st.Pid <= 0 {
		return 0, err
	}
	n := 0
	for _, f := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", st.Pid, f))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return 0, err
		}
		n += established(string(data), ports)
	}
	return n, nil
}

// established counts the ESTABLISHED sockets of a /proc/net/tcp table
// whose local port is one of ports.
func established(table string, ports []int) int {
	n := 0
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		_, port, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(port, 16, 16)
		if err == nil && slices.Contains(ports, int(p)) {
			n++
		}
	}
	return n
}
func (realSystem) queryAgent(ctx context.Context, socket string) (*agent.Status, error) {
	return agent.Query(ctx, socket)
}

func (realSystem) queryAlerts(ctx context.Context, bridge string, target netip.AddrPort) ([]Alert, error) {
	return monitorAlerts(ctx, bridge, target)
}

func (realSystem) queryUsage(ctx context.Context, bridge string, target netip.AddrPort, nodes []string) ([]NodeUsage, error) {
	return monitorUsage(ctx, bridge, target, nodes)
}

func (realSystem) queryRange(ctx context.Context, bridge string, target netip.AddrPort, query string, start, end time.Time, step time.Duration) ([]Series, error) {
	return monitorRange(ctx, bridge, target, query, start, end, step)
}

func (realSystem) siteGet(ctx context.Context, ns, url, host string) (int, []byte, error) {
	h, err := netns.Open(ns)
	if err != nil {
		return 0, nil, err
	}
	defer h.Close()
	var dialer net.Dialer
	tr := &http.Transport{
		// The socket is made inside ns, on a thread of its own.
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = netns.Do(h, func() (err error) {
				c, err = dialer.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second, CheckRedirect: noRedirect}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode, body, nil
}

func (realSystem) verify(ctx context.Context, p *plan.Plan, o verify.Options) (*verify.Report, error) {
	return verify.Run(ctx, p, o)
}

// noRedirect makes an http.Client take a redirect for the answer: every
// server the host asks is a node's, as hostile as any, and must not send
// the host on to another address.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// servingClient is waitServing's.
var servingClient = &http.Client{Timeout: 5 * time.Second, CheckRedirect: noRedirect}

func (realSystem) httpStatus(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := servingClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
