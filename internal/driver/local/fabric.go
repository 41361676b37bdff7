package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/durable"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// preflight checks, before anything is created, that the host has room for
// the stack: its subnets are not routed anywhere but the default route or
// its own bridges, its interface names are free or its own, and its
// published ports can be bound, and, unless noSandbox, the kernel lets it
// make user namespaces. Each problem says what to change.
func (d *Driver) preflight(ctx context.Context, p *plan.Plan, j *journal, ownPorts, noSandbox bool) error {
	var errs []error
	sys := d.sys()
	def, _ := sys.routeDev(ctx, "203.0.113.1") // the default route's device, if any
	for _, n := range p.Networks {
		// Not the gateway: once the bridge has it, it routes via lo.
		for _, a := range []netip.Addr{n.Subnet.Addr().Next().Next(), n.LastHost()} {
			dev, err := sys.routeDev(ctx, a.String())
			if err != nil && !errors.Is(err, netns.ErrNoRoute) {
				errs = append(errs, err)
				continue
			}
			if dev != "" && dev != def && dev != n.Bridge {
				errs = append(errs, fmt.Errorf("networks.%s %s is already in use on this host (dev %s routes %s); pick another subnet in the stack file", n.Name, n.Subnet, dev, a))
				break
			}
		}
		if sys.linkExists(n.Bridge) && !j.has(Object{Kind: KindBridge, Name: n.Bridge}) {
			errs = append(errs, fmt.Errorf("interface %s exists but was not made by this stack; rename the stack or remove the interface", n.Bridge))
		}
	}
	for _, n := range p.Nodes {
		for _, i := range n.Ifaces {
			if sys.linkExists(i.Host) && !j.has(Object{Kind: KindVeth, Name: i.Host}) {
				errs = append(errs, fmt.Errorf("interface %s exists but was not made by this stack; rename the stack or remove the interface", i.Host))
			}
		}
	}
	errs = append(errs, d.publishConflicts(p)...)
	for _, e := range p.Egress {
		if _, err := d.egressRoute(ctx, p, e); err != nil {
			errs = append(errs, err)
		}
	}
	if !ownPorts {
		for _, f := range p.Published {
			ap := f.Listen
			if err := sys.canListen(ap); err != nil {
				errs = append(errs, fmt.Errorf("cannot publish on %s: %w; stop what uses that port or change publish in the stack file", ap, err))
				continue
			}
		}
	}
	if !noSandbox {
		if err := sys.checkUserNamespaces(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sys.bridgeFiltered(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fabric creates the host side of the stack: its host table, its bridges
// (which claim its subnets), and proves the subnets stay on this host
// before anything else is made.
func (d *Driver) fabric(ctx context.Context, p *plan.Plan, j *journal) error {
	if err := d.neighbourRoom(p, j); err != nil {
		return err
	}
	// One ruleset, three tables: inet for the flows, bridge for sources,
	// ip for the published ports.
	for _, family := range hostFamilies {
		if err := j.record(Object{Kind: KindNftTable, Name: family + " " + p.HostNFT}); err != nil {
			return err
		}
	}
	if err := d.sys().nftApply(ctx, "", render.HostNftables(p)); err != nil {
		return fmt.Errorf("host table: %w", err)
	}
	for _, n := range p.Networks {
		if err := j.record(Object{Kind: KindBridge, Name: n.Bridge}); err != nil {
			return err
		}
		addr := netip.PrefixFrom(n.Gateway, n.Subnet.Bits()).String()
		if err := d.sys().addBridge(ctx, n.Bridge, addr, "bulkhead "+p.Stack+" "+n.Name); err != nil {
			return fmt.Errorf("bridge %s: %w", n.Bridge, err)
		}
	}
	if err := d.checkContained(ctx, p); err != nil {
		return err
	}
	if err := d.egressForwarding(ctx, p, j); err != nil {
		return err
	}
	return d.publishRoutes(p, j)
}

// hostFamilies are the families of the stack's host tables, all named
// p.HostNFT.
var hostFamilies = []string{"inet", "bridge", "ip"}

// checkContained fails closed unless every stack subnet routes to its own
// bridge on this host, so that no stack address can ever leave the machine
// through the default route.
func (d *Driver) checkContained(ctx context.Context, p *plan.Plan) error {
	for _, n := range p.Networks {
		for _, a := range []netip.Addr{n.Subnet.Addr().Next().Next(), n.LastHost()} {
			dev, err := d.sys().routeDev(ctx, a.String())
			if err != nil || dev != n.Bridge {
				return fmt.Errorf("networks.%s %s is not contained: the host routes %s via %q (%v), not bridge %s; refusing to go on", n.Name, n.Subnet, a, dev, err, n.Bridge)
			}
		}
	}
	return nil
}

// nodeFabric makes a node's namespace, loads its firewall before any link
// exists, reads the firewall back, then joins the namespace to its
// networks.
func (d *Driver) nodeFabric(ctx context.Context, p *plan.Plan, n *plan.Node, ruleset []byte, j *journal) error {
	if err := j.record(Object{Kind: KindNetns, Name: n.Netns}); err != nil {
		return err
	}
	// The node's user namespace owns its network namespace, so that its
	// root may bind port 80 there and runc can join both; the node holds
	// no NET_ADMIN or NET_RAW to use that ownership for anything else.
	if j.sandboxed() {
		ids := j.nodeIDs(n.Name)
		if ids.Size == 0 {
			return fmt.Errorf("node %s has no block of host ids", n.Name)
		}
		if err := d.sys().addOwnedNetns(ctx, n.Netns, netns.IDMap{Host: ids.Host, Size: ids.Size}); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	} else if err := d.sys().addNetns(ctx, n.Netns); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	// What the node's software needs of its namespace, before anything
	// listens there (Caddy's reloads: see the catalog).
	if desc, err := catalog.Lookup(n.Role, n.Software); err == nil {
		for _, k := range slices.Sorted(maps.Keys(desc.Sysctls)) {
			if err := d.sys().netnsSysctl(ctx, n.Netns, k, desc.Sysctls[k]); err != nil {
				return fmt.Errorf("node %s: %s needs %s=%s in its namespace: %w (does this kernel have that setting?)", n.Name, n.Software, k, desc.Sysctls[k], err)
			}
		}
	}
	if err := d.nodeFirewall(ctx, p, n, ruleset); err != nil {
		return err
	}
	defer d.took("veths", "node", n.Name)()
	for _, i := range n.Ifaces {
		nw := p.Network(i.Network)
		if err := j.record(Object{Kind: KindVeth, Name: i.Host}); err != nil {
			return err
		}
		v := netns.Veth{Host: i.Host, Bridge: nw.Bridge, Netns: n.Netns, Name: i.Name,
			Addr: netip.PrefixFrom(i.Addr, i.Bits).String(), Alias: "bulkhead " + p.Stack + " " + n.Name + " " + i.Network}
		if err := d.sys().addVeth(ctx, v); err != nil {
			return fmt.Errorf("node %s on %s: %w", n.Name, i.Network, err)
		}
	}
	if n.Gateway.IsValid() {
		if err := d.sys().setDefaultRoute(ctx, n.Netns, n.Gateway); err != nil {
			return fmt.Errorf("node %s: a route to answer visitors: %w", n.Name, err)
		}
	}
	return d.egressRoutes(ctx, p, n)
}

// nodeFirewall loads a node's ruleset and reads it back. A ruleset this
// host loaded before (its digest is in the node's directory, where only
// the host writes) and that reads back as the plan wants is left as it is:
// on an up that adds app nodes to a running stack, most nodes' rulesets
// have not changed, and loading each again cost an nft run per node.
func (d *Driver) nodeFirewall(ctx context.Context, p *plan.Plan, n *plan.Node, ruleset []byte) error {
	sum := sha256.Sum256(ruleset)
	digest := hex.EncodeToString(sum[:])
	loaded := filepath.Join(string(d.paths(p.Stack).node(n.Name)), "firewall.sha256")
	if old, err := os.ReadFile(loaded); err == nil && string(old) == digest && d.checkFirewall(ctx, n) == nil {
		return nil
	}
	if err := os.Remove(loaded); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	done := d.took("nftApply", "node", n.Name)
	if err := d.sys().nftApply(ctx, n.Netns, ruleset); err != nil {
		return fmt.Errorf("node %s firewall: %w", n.Name, err)
	}
	done()
	defer d.took("checkFirewall", "node", n.Name)()
	if err := d.checkFirewall(ctx, n); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(loaded), 0o755); err != nil {
		return err
	}
	return durable.Write(loaded, []byte(digest), 0o600)
}

// checkFirewall reads a node's ruleset back from the kernel and compares it
// with the plan: one table, three chains that drop by default, the plan's
// sets with exactly their addresses, and the plan's number of rules. Any
// difference fails closed.
// antiSpoofWhole reports whether the host's bridge table still binds every
// node interface to its address, as render.HostNftables wrote it:
// verify --self-test takes one node out of its sets, and a self-test
// killed before it restores them leaves the table there, short.
func (d *Driver) antiSpoofWhole(ctx context.Context, p *plan.Plan) bool {
	rs, err := d.sys().nftRead(ctx, "")
	if err != nil {
		return false
	}
	n := 0
	for _, node := range p.Nodes {
		n += len(node.Ifaces)
	}
	t := "bridge " + p.HostNFT + " "
	return len(rs.Sets[t+"nodes"]) == n && len(rs.Sets[t+"own"]) == n
}

func (d *Driver) checkFirewall(ctx context.Context, n *plan.Node) error {
	rs, err := d.sys().nftRead(ctx, n.Netns)
	if err != nil {
		return fmt.Errorf("node %s firewall read-back: %w", n.Name, err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("node %s firewall differs from the plan: %s", n.Name, fmt.Sprintf(format, args...))
	}
	if len(rs.Tables) != 1 || rs.Tables[0] != "inet "+render.TableName {
		return fail("tables %v, want [inet %s]", rs.Tables, render.TableName)
	}
	// Fixed rules per chain: loopback, invalid, established.
	want := map[string]int{"input": 3 + len(n.Firewall.Input), "output": 3 + len(n.Firewall.Output), "forward": 0}
	for chain, rules := range want {
		c, ok := rs.Chains["inet "+render.TableName+" "+chain]
		if !ok || c.Policy != "drop" || c.Hook != chain || c.Rules != rules {
			return fail("chain %s is %+v, want hook %s, policy drop, %d rules", chain, c, chain, rules)
		}
	}
	if len(rs.Chains) != len(want) {
		return fail("%d chains, want %d", len(rs.Chains), len(want))
	}
	if len(rs.Sets) != len(n.Firewall.Sets) {
		return fail("%d sets, want %d", len(rs.Sets), len(n.Firewall.Sets))
	}
	for _, s := range n.Firewall.Sets {
		got := rs.Sets["inet "+render.TableName+" "+s.Name]
		if len(got) != len(s.Addrs) {
			return fail("set %s has %d addresses, want %d", s.Name, len(got), len(s.Addrs))
		}
		have := map[string]bool{}
		for _, g := range got {
			have[g] = true
		}
		for _, a := range s.Addrs {
			if !have[a.String()] {
				return fail("set %s lacks %s", s.Name, a)
			}
		}
	}
	return nil
}

// outside makes verify's stand-in for the internet: a namespace on the
// public network, outside every firewall.
func (d *Driver) outside(ctx context.Context, p *plan.Plan, j *journal) error {
	v := p.Outside
	if err := j.record(Object{Kind: KindNetns, Name: v.Netns}); err != nil {
		return err
	}
	if err := d.sys().addNetns(ctx, v.Netns); err != nil {
		return err
	}
	if err := j.record(Object{Kind: KindVeth, Name: v.Iface.Host}); err != nil {
		return err
	}
	return d.sys().addVeth(ctx, netns.Veth{
		Host: v.Iface.Host, Bridge: p.Network(plan.NetPublic).Bridge, Netns: v.Netns, Name: v.Iface.Name,
		Addr: netip.PrefixFrom(v.Iface.Addr, v.Iface.Bits).String(), Alias: "bulkhead " + p.Stack + " outside",
	})
}
