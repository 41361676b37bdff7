// Package netns wraps the iproute2 commands that make network namespaces,
// bridges, veth pairs and addresses. It is mechanism only: what to create
// comes from the caller. Every function is idempotent where the kernel
// allows: creating what exists succeeds, deleting what is gone succeeds.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where iproute2 keeps named namespaces.
const Dir = "/var/run/netns"

// Path returns the bind-mount path of a named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// run runs ip with args, returning its combined output on failure.
func run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Add creates a named namespace with its loopback up and IPv6 off: nodes
// are IPv4-only, and an interface with IPv6 would chatter link-local.
func Add(ctx context.Context, name string) error {
	if !Exists(name) {
		if _, err := run(ctx, "netns", "add", name); err != nil {
			return err
		}
	}
	return setup(ctx, name)
}

// Delete removes a named namespace. Interfaces inside it go with it.
func Delete(ctx context.Context, name string) error {
	if !Exists(name) {
		return nil
	}
	_, err := run(ctx, "netns", "delete", name)
	return err
}

// Sysctl sets a sysctl inside a namespace (or on the host if ns is "").
func Sysctl(ctx context.Context, ns, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if ns == "" {
		return os.WriteFile(path, []byte(value), 0o644)
	}
	// sysctls under net/ are per namespace; write them from inside.
	if err := In(ns, func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, ns, err)
	}
	return nil
}

// LinkExists reports whether a host interface exists.
func LinkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// AddBridge creates a host bridge with addr (CIDR form, e.g.
// 10.77.0.1/24) and brings it up. Giving the bridge the subnet is what keeps
// the subnet on this host: the connected route wins over the default route.
//
// The bridge's MAC is its address's (see MAC): a bridge left to choose
// takes the lowest of its ports' MACs, so a node that joins or leaves could
// change it under what the other nodes have cached for their gateway.
func AddBridge(ctx context.Context, name, addr, alias string) error {
	if !LinkExists(name) {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return fmt.Errorf("bridge %s address %q: %w", name, addr, err)
		}
		args := []string{"link", "add", name}
		if mac := MAC(p.Addr()); mac != nil {
			args = append(args, "address", mac.String())
		}
		if _, err := run(ctx, append(args, "type", "bridge")...); err != nil {
			return err
		}
	}
	if err := Sysctl(ctx, "", "net.ipv6.conf."+name+".disable_ipv6", "1"); err != nil {
		return err
	}
	if alias != "" {
		if _, err := run(ctx, "link", "set", name, "alias", alias); err != nil {
			return err
		}
	}
	if out, _ := run(ctx, "-o", "-4", "addr", "show", "dev", name); !strings.Contains(out, " "+addr+" ") {
		if _, err := run(ctx, "addr", "add", addr, "dev", name); err != nil {
			return err
		}
	}
	_, err := run(ctx, "link", "set", name, "up")
	return err
}

// DeleteLink removes a host interface; a veth takes its peer with it.
func DeleteLink(ctx context.Context, name string) error {
	if !LinkExists(name) {
		return nil
	}
	_, err := run(ctx, "link", "delete", name)
	if err != nil && !LinkExists(name) {
		// Gone meanwhile: a veth goes with its peer's namespace, and the
		// kernel may take a moment to finish that.
		return nil
	}
	return err
}

// Veth describes a veth pair from a bridge into a namespace.
type Veth struct {
	Host   string // host end, enslaved to Bridge
	Bridge string
	Netns  string
	Name   string // the end inside Netns
	Addr   string // CIDR form, inside Netns
	Alias  string // human-readable description on the host end
}

// AddVeth creates the pair, moves one end into the namespace with its
// address, and brings both up. It adds no route: a node's only routes are
// its connected subnets. It speaks netlink itself rather than run ip:
// as of 2026-11, the seven ip processes a pair took were most of the
// time an up spent on a node's network.
func AddVeth(ctx context.Context, v Veth) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ns, err := Open(v.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	host, err := hostLinks()
	if err != nil {
		return err
	}
	defer host.Close()
	exists := LinkExists(v.Host)
	if !exists {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = v.Host
		p, err := netip.ParsePrefix(v.Addr)
		if err != nil {
			return fmt.Errorf("address %q of %s: %w", v.Addr, v.Name, err)
		}
		pair := &netlink.Veth{LinkAttrs: attrs, PeerName: v.Name, PeerNamespace: netlink.NsFd(ns.Fd()),
			PeerHardwareAddr: MAC(p.Addr())}
		if err := host.LinkAdd(pair); err != nil {
			return fmt.Errorf("add veth %s (peer %s in %s): %w", v.Host, v.Name, v.Netns, err)
		}
	}
	if err := Sysctl(ctx, "", "net.ipv6.conf."+v.Host+".disable_ipv6", "1"); err != nil {
		return err
	}
	// An up of a running stack finds most pairs as they should be: read
	// them here rather than set them again.
	if exists && vethReady(v) {
		return nil
	}
	link, err := host.LinkByName(v.Host)
	if err != nil {
		return fmt.Errorf("find %s: %w", v.Host, err)
	}
	bridge, err := host.LinkByName(v.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", v.Bridge, err)
	}
	if err := host.LinkSetMasterByIndex(link, bridge.Attrs().Index); err != nil {
		return fmt.Errorf("put %s on %s: %w", v.Host, v.Bridge, err)
	}
	if err := host.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", v.Host, err)
	}
	if v.Alias != "" {
		if err := host.LinkSetAlias(link, v.Alias); err != nil {
			return fmt.Errorf("set %s alias: %w", v.Host, err)
		}
	}
	addr, err := netlink.ParseAddr(v.Addr)
	if err != nil {
		return fmt.Errorf("address %q of %s: %w", v.Addr, v.Name, err)
	}
	inner, err := links(ns)
	if err != nil {
		return err
	}
	defer inner.Close()
	peer, err := inner.LinkByName(v.Name)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", v.Name, v.Netns, err)
	}
	// Replace, not add: a second up finds the address there.
	if err := inner.AddrReplace(peer, addr); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", v.Addr, v.Name, v.Netns, err)
	}
	if err := inner.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set %s up in %s: %w", v.Name, v.Netns, err)
	}
	return nil
}

// MAC is the Ethernet address of the interface that holds addr, an IPv4
// address: 02:62 (locally administered, unicast) and then addr's four
// bytes, as Docker does with its 02:42. A node made again at its address
// (scaled in and out, a deploy's new node at a drained one's address) then
// has the MAC its peers cached for the address before; a new random one
// would go unanswered until their neighbour entries expired, up to about
// eight seconds of lost packets. Addresses are unique within a stack's
// subnets, and stacks' subnets do not overlap, so the MACs are unique on
// each bridge. It is nil for an IPv6 address: the kernel then picks.
func MAC(addr netip.Addr) net.HardwareAddr {
	if !addr.Is4() {
		return nil
	}
	b := addr.As4()
	return net.HardwareAddr{0x02, 0x62, b[0], b[1], b[2], b[3]}
}

// links returns a netlink handle whose sockets belong to namespace h:
// made from a thread inside h, they stay there whichever thread uses them.
func links(h *Handle) (*netlink.Handle, error) {
	nl, err := netlink.NewHandleAt(vnetns.NsHandle(h.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in network namespace %q: %w", h.Name, err)
	}
	return nl, nil
}

// hostLinks is links for the namespace this process started in.
func hostLinks() (*netlink.Handle, error) {
	h, err := Open("")
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return links(h)
}

// vethReady reports whether the pair is as AddVeth leaves it: the host end
// up, on its bridge, with its alias; the other end up in its namespace,
// with its address.
func vethReady(v Veth) bool {
	sys := filepath.Join("/sys/class/net", v.Host)
	master, err := os.Readlink(filepath.Join(sys, "master"))
	if err != nil || filepath.Base(master) != v.Bridge {
		return false
	}
	alias, err := os.ReadFile(filepath.Join(sys, "ifalias"))
	if err != nil || strings.TrimSpace(string(alias)) != v.Alias {
		return false
	}
	if !linkUp(sys) {
		return false
	}
	want, err := netip.ParsePrefix(v.Addr)
	if err != nil {
		return false
	}
	ready := false
	err = In(v.Netns, func() error {
		// The netlink socket net.Interfaces opens belongs to this
		// thread's namespace.
		i, err := net.InterfaceByName(v.Name)
		if err != nil || i.Flags&net.FlagUp == 0 {
			return err
		}
		addrs, err := i.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.String() == want.String() {
				ready = true
			}
		}
		return nil
	})
	return err == nil && ready
}

// linkUp reads IFF_UP from a host interface's flags in sysfs.
func linkUp(sys string) bool {
	flags, err := os.ReadFile(filepath.Join(sys, "flags"))
	if err != nil {
		return false
	}
	f, err := strconv.ParseUint(strings.TrimSpace(string(flags)), 0, 32)
	return err == nil && f&unix.IFF_UP != 0
}

// SetDefaultRoute makes via the default route of namespace ns, replacing
// any it had. via must be on a subnet of one of ns's links.
func SetDefaultRoute(ctx context.Context, ns, via string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	gw, err := netip.ParseAddr(via)
	if err != nil {
		return fmt.Errorf("default route in %s: gateway %q: %w", ns, via, err)
	}
	h, err := Open(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	nl, err := links(h)
	if err != nil {
		return err
	}
	defer nl.Close()
	if err := nl.RouteReplace(&netlink.Route{Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s in %s: %w", via, ns, err)
	}
	return nil
}

// AddRoute routes dst (a prefix) via via inside ns, replacing any route
// to dst. Its routes are marked "proto static", for FlushRoutes.
func AddRoute(ctx context.Context, ns, dst, via string) error {
	_, err := run(ctx, "-n", ns, "route", "replace", dst, "via", via, "proto", "static")
	return err
}

// FlushRoutes removes every route AddRoute made inside ns.
func FlushRoutes(ctx context.Context, ns string) error {
	_, err := run(ctx, "-n", ns, "route", "flush", "proto", "static")
	return err
}

// AddrLink returns the host interface that holds address a.
func AddrLink(a netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, ia := range addrs {
			if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr() == a {
				return i.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface of this host has the address %s", a)
}

// RouteDev returns the device the kernel would use to reach dst from inside
// ns (or the host if ns is ""), without sending a packet. ErrNoRoute means
// the destination is unreachable.
func RouteDev(ctx context.Context, ns, dst string) (string, error) {
	args := []string{"-o", "route", "get", dst}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := run(ctx, args...)
	if err != nil {
		if strings.Contains(err.Error(), "unreachable") {
			return "", ErrNoRoute
		}
		return "", err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1], nil
		}
	}
	if len(f) > 0 && (f[0] == "unreachable" || f[0] == "blackhole" || f[0] == "prohibit") {
		return "", ErrNoRoute
	}
	return "", fmt.Errorf("route get %s: no device in %q", dst, strings.TrimSpace(out))
}

// ErrNoRoute says a destination has no route.
var ErrNoRoute = errors.New("no route")

// List returns the named namespaces.
func List() ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, err
}

// Link is a host interface, as Links finds it.
type Link struct {
	Name   string
	Alias  string // as AddBridge and AddVeth set it
	Bridge bool
}

// Links returns the host's interfaces.
func Links() ([]Link, error) {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, err
	}
	var out []Link
	for _, e := range entries {
		dir := filepath.Join("/sys/class/net", e.Name())
		alias, _ := os.ReadFile(filepath.Join(dir, "ifalias"))
		_, err := os.Stat(filepath.Join(dir, "bridge"))
		out = append(out, Link{Name: e.Name(), Alias: strings.TrimSpace(string(alias)), Bridge: err == nil})
	}
	return out, nil
}
