package local

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// The published ports are the kernel's: the host table's DNAT (see
// render.HostNftables) rewrites a connection to a published address into
// one to the edge, and the host routes it there. Two settings of the
// host's let it, each on the fewest interfaces that need it:
//   - net.ipv4.conf.BRIDGE.route_localnet on the public bridge, for a
//     published loopback address: without it the kernel refuses to route
//     a packet from 127.0.0.1 out of anything but lo;
//   - net.ipv4.conf.IFACE.forwarding, for a published address beyond
//     loopback, on the interface that holds that address (visitors'
//     packets come in there) and on the public bridge (the edge's answers
//     come in there). The host forwards nothing else of theirs: the host
//     table's flows chain drops every new connection to or from the stack
//     but the plan's.
//
// The bridge's settings go with the bridge. The journal keeps the value
// found on any other interface, and down puts it back once no other stack
// needs it (see shareSysctl).

// publishRoutes sets the host's routing for p's published ports. It runs
// once the stack's bridges exist.
func (d *Driver) publishRoutes(p *plan.Plan, j *journal) error {
	if len(p.Published) == 0 {
		return nil
	}
	sys := d.sys()
	pub := p.Network(plan.NetPublic).Bridge
	if slices.ContainsFunc(p.Published, func(f plan.Forward) bool { return !f.Remote() }) {
		if err := sys.writeSysctl("conf/"+pub+"/route_localnet", 1); err != nil {
			return fmt.Errorf("let bridge %s carry loopback clients (route_localnet): %w", pub, err)
		}
	}
	var links []string
	for _, f := range p.Published {
		if !f.Remote() {
			continue
		}
		link, err := sys.addrLink(f.Listen.Addr())
		if err != nil {
			return fmt.Errorf("publish on %s: %w", f.Listen, err)
		}
		links = append(links, link)
	}
	if len(links) == 0 {
		return nil
	}
	if err := sys.writeSysctl("conf/"+pub+"/forwarding", 1); err != nil {
		return fmt.Errorf("let bridge %s forward the edge's answers: %w", pub, err)
	}
	slices.Sort(links)
	for _, link := range slices.Compact(links) {
		if err := d.raiseForwarding(j, link, "visitors to the edge"); err != nil {
			return err
		}
	}
	return nil
}

// raiseForwarding turns on forwarding on the host's interface link, for
// what. The journal keeps the value found, for down to put back; a value
// another stack raised already is shared with it (see shareSysctl).
func (d *Driver) raiseForwarding(j *journal, link, what string) error {
	sys := d.sys()
	key := "conf/" + link + "/forwarding"
	cur, err := sys.readSysctl(key)
	if err != nil {
		return err
	}
	if cur == 1 {
		return d.shareSysctl(j, key, cur)
	}
	if err := j.record(Object{Kind: KindSysctl, Name: key, Detail: fmt.Sprintf("%d 1", cur)}); err != nil {
		return err
	}
	d.progress("forwarding on %s for %s", link, what)
	if err := sys.writeSysctl(key, 1); err != nil {
		return fmt.Errorf("let %s forward %s: %w", link, what, err)
	}
	return nil
}

// publishConflicts checks, before anything is made, that every address p
// publishes on beyond loopback is one of this host's, and that no other
// stack on this host publishes on an address p does now (its table is in
// the kernel): nothing listens on a published port for a bind to find
// taken.
func (d *Driver) publishConflicts(p *plan.Plan) []error {
	var errs []error
	for _, f := range p.Published {
		if f.Remote() {
			if _, err := d.sys().addrLink(f.Listen.Addr()); err != nil {
				errs = append(errs, fmt.Errorf("cannot publish on %s: %w; publish on 127.0.0.1 or on an address of this host", f.Listen, err))
			}
		}
	}
	ents, _ := os.ReadDir(d.root())
	for _, e := range ents {
		if !e.IsDir() || e.Name() == p.Stack {
			continue
		}
		other, err := d.savedPlan(e.Name())
		if err != nil || !d.sys().nftHasTable(context.Background(), "", "ip", other.HostNFT) {
			continue // not a stack, or one that does not publish now
		}
		for _, f := range p.Published {
			if slices.ContainsFunc(other.Published, func(o plan.Forward) bool { return o.Listen == f.Listen }) {
				errs = append(errs, fmt.Errorf("cannot publish on %s: stack %s publishes there; change publish in the stack file, or take %s down", f.Listen, other.Stack, other.Stack))
			}
		}
	}
	return errs
}

// keepPublished puts the host's tables back, with the routing they need,
// when the kernel has no table for p's published ports: after an upgrade
// from a bulkhead whose supervisor forwarded them itself, the supervisor
// that takes over publishes them in the kernel without an up. It waits
// for no lock: an up or down that holds the stack sets the tables itself.
func (d *Driver) keepPublished(ctx context.Context, p *plan.Plan) error {
	if len(p.Published) == 0 || d.sys().nftHasTable(ctx, "", "ip", p.HostNFT) {
		return nil
	}
	unlock, err := d.lockStack(ctx, p.Stack, false)
	if err != nil {
		return nil
	}
	defer unlock()
	j, err := loadJournal(d.paths(p.Stack).journal(), p.Stack)
	if err != nil {
		return err
	}
	if pub := p.Network(plan.NetPublic); pub == nil || !j.has(Object{Kind: KindBridge, Name: pub.Bridge}) {
		return nil // not up, or going down
	}
	for _, family := range hostFamilies {
		if err := j.record(Object{Kind: KindNftTable, Name: family + " " + p.HostNFT}); err != nil {
			return err
		}
	}
	if err := d.sys().nftApply(ctx, "", render.HostNftables(p)); err != nil {
		return fmt.Errorf("host table: %w", err)
	}
	return d.publishRoutes(p, j)
}
