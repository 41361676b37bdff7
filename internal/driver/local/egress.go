package local

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// A plan's egress flows (the mail relay to its smarthost) are the only
// traffic that leaves a stack. Each takes three things on the host, all
// scoped to that one source, address and port:
//   - the host table's rules (render.HostNftables): the flows chain lets
//     the new connection through, and postrouting masquerades it, so no
//     stack address is seen beyond this host;
//   - a route in the node's namespace to the target's address alone, via
//     its network's gateway: the node has no default route;
//   - net.ipv4.conf.IFACE.forwarding on the network's bridge (the node's
//     packets come in there) and on the interface the host reaches the
//     target through (the answers come in there). The journal keeps the
//     value found on the latter, and down puts it back once no other stack
//     needs it (see shareSysctl).

// egressRoute checks that the host can reach e's target other than
// through one of p's own bridges, and returns the interface it uses.
func (d *Driver) egressRoute(ctx context.Context, p *plan.Plan, e plan.Egress) (string, error) {
	dev, err := d.sys().routeDev(ctx, e.Target.Addr().String())
	switch {
	case errors.Is(err, netns.ErrNoRoute):
		return "", fmt.Errorf("egress %s: this host has no route to %s; route it, or change mail.smarthost in the stack file", e.Name, e.Target.Addr())
	case err != nil:
		return "", fmt.Errorf("egress %s: %w", e.Name, err)
	case dev == "lo":
		return "", fmt.Errorf("egress %s: %s is this host's own address; nodes never reach the host, so run the smarthost elsewhere", e.Name, e.Target.Addr())
	}
	for _, n := range p.Networks {
		if dev == n.Bridge {
			return "", fmt.Errorf("egress %s: the host routes %s onto the stack's own bridge %s; name a smarthost outside the stack", e.Name, e.Target.Addr(), dev)
		}
	}
	return dev, nil
}

// egressForwarding lets the host forward p's egress flows, once its
// bridges exist.
func (d *Driver) egressForwarding(ctx context.Context, p *plan.Plan, j *journal) error {
	sys := d.sys()
	for _, e := range p.Egress {
		link, err := d.egressRoute(ctx, p, e)
		if err != nil {
			return err
		}
		br := p.Network(e.Network).Bridge
		if err := sys.writeSysctl("conf/"+br+"/forwarding", 1); err != nil {
			return fmt.Errorf("let bridge %s forward egress %s: %w", br, e.Name, err)
		}
		if err := d.raiseForwarding(j, link, "the answers of egress "+e.Name); err != nil {
			return err
		}
	}
	return nil
}

// egressRoutes gives the mail node its routes to its egress targets: one
// address each, via the gateway. Routes of an earlier plan (a smarthost
// since changed or removed) go first, so the node routes only to what the
// plan allows now.
func (d *Driver) egressRoutes(ctx context.Context, p *plan.Plan, n *plan.Node) error {
	if n.Role != spec.RoleMail {
		return nil // no other role has egress; asking every node would cost an ip run each
	}
	if err := d.sys().flushRoutes(ctx, n.Netns); err != nil {
		return fmt.Errorf("node %s: remove its old egress routes: %w", n.Name, err)
	}
	for _, e := range p.Egress {
		if e.Node != n.Name {
			continue
		}
		dst := netip.PrefixFrom(e.Target.Addr(), 32)
		if err := d.sys().addRoute(ctx, n.Netns, dst, e.Via); err != nil {
			return fmt.Errorf("node %s: a route to egress %s (%s): %w", n.Name, e.Name, dst, err)
		}
	}
	return nil
}
