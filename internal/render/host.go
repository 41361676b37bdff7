package render

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// HostNftables renders the host's own table for a stack, a second wall
// behind the nodes' firewalls:
//   - input: nothing on the stack's bridges may open a connection to the
//     host (a listener on a gateway address stays unreachable);
//   - forward: bridged traffic between stack addresses (br_netfilter hands it
//     to this hook) passes only along the plan's flows, and traffic out of
//     the stack only along its egress flows (the mail relay to its
//     smarthost), which the ip table's postrouting masquerades.
//
// It matches only the stack's own bridges and addresses, so the host's
// other traffic is untouched, and like a node's ruleset it replaces itself
// when loaded again.
func HostNftables(p *plan.Plan) []byte {
	var b strings.Builder
	t := p.HostNFT
	fmt.Fprintf(&b, "# bulkhead host table of stack %s.\n", p.Stack)
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n\n", t, t)
	fmt.Fprintf(&b, "table inet %s {\n", t)

	var bridges []string
	for _, n := range p.Networks {
		bridges = append(bridges, fmt.Sprintf("%q", n.Bridge))
	}
	var all []netip.Addr
	for _, n := range p.Nodes {
		for _, i := range n.Ifaces {
			all = append(all, i.Addr)
		}
	}
	all = append(all, p.Outside.Iface.Addr)
	writeSet(&b, "stack", all)

	type key struct{ tier, net string }
	sets := map[key]string{}
	var order []key
	setFor := func(tier, net string) string {
		k := key{tier, net}
		if name, ok := sets[k]; ok {
			return name
		}
		name := strings.ReplaceAll(tier, "-", "_") + "_" + net
		sets[k] = name
		order = append(order, k)
		return name
	}
	var rules []string
	for _, f := range p.Flows {
		to := setFor(f.To, f.Network)
		from := ""
		if f.From != spec.Outside {
			from = fmt.Sprintf("ip saddr @%s ", setFor(f.From, f.Network))
		}
		rules = append(rules, fmt.Sprintf("\t\t%sip daddr @%s %s dport %d ct state new accept comment %q\n",
			from, to, f.Port.Proto, f.Port.Number, f.From+" -> "+f.To))
	}
	for _, k := range order {
		var addrs []netip.Addr
		for _, n := range p.Tier(k.tier) {
			addrs = append(addrs, n.Addr(k.net))
		}
		writeSet(&b, sets[k], addrs)
	}

	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname { %s } ct state established,related accept\n", strings.Join(bridges, ", "))
	fmt.Fprintf(&b, "\t\tiifname { %s } drop comment \"nodes may not reach the host\"\n\t}\n\n", strings.Join(bridges, ", "))

	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	b.WriteString("\t\tip saddr @stack jump flows\n\t\tip daddr @stack jump flows\n\t}\n\n")
	b.WriteString("\tchain flows {\n\t\tct state invalid drop\n\t\tct state established,related accept\n")
	for _, r := range rules {
		b.WriteString(r)
	}
	for _, e := range p.Egress {
		fmt.Fprintf(&b, "\t\tiifname %q ip saddr %s ip daddr %s tcp dport %d ct state new accept comment %q\n",
			p.Network(e.Network).Bridge, e.Source, e.Target.Addr(), e.Target.Port(), "egress "+e.Name+": "+e.Node+" -> "+e.Target.String())
	}
	b.WriteString("\t\tdrop\n\t}\n}\n")
	writeAntiSpoof(&b, p)
	writePublish(&b, p, bridges)
	return []byte(b.String())
}

// writePublish renders the table that publishes the edge on the host, in
// the kernel: each published address and port is rewritten (DNAT) to the
// edge's public address, so that a visitor's packets reach the edge with
// the visitor's own source address.
//   - output: the host's own clients, on loopback or on a published
//     address of the host's;
//   - prerouting: clients of other machines, for a published address
//     beyond loopback, arriving anywhere but on the stack's bridges;
//   - postrouting: a loopback client's connection leaves on the public
//     bridge (net.ipv4.conf.BRIDGE.route_localnet lets it) with source
//     127.0.0.1, which the edge could not answer: it gets the host's
//     address on that bridge instead, so the edge sees the gateway as
//     before;
//   - input: route_localnet would also let the bridge open connections
//     to the host's loopback; nothing on it may.
//
// An empty table when the stack has no edge.
func writePublish(b *strings.Builder, p *plan.Plan, bridges []string) {
	t := p.HostNFT
	fmt.Fprintf(b, "\ntable ip %s\ndelete table ip %s\n\n", t, t)
	fmt.Fprintf(b, "table ip %s {\n", t)
	var out, pre []string
	for _, f := range p.Published {
		why := fmt.Sprintf("published %s -> %s", f.Listen, f.Node)
		rule := fmt.Sprintf("ip daddr %s tcp dport %d dnat to %s comment %q", f.Listen.Addr(), f.Listen.Port(), f.Target, why)
		out = append(out, rule)
		if f.Remote() {
			pre = append(pre, fmt.Sprintf("iifname != { %s } %s", strings.Join(bridges, ", "), rule))
		}
	}
	chain := func(name, kind, hook, prio string, rules []string) {
		fmt.Fprintf(b, "\tchain %s {\n\t\ttype %s hook %s priority %s; policy accept;\n", name, kind, hook, prio)
		for _, r := range rules {
			fmt.Fprintf(b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	chain("output", "nat", "output", "-100", out)
	b.WriteString("\n")
	chain("prerouting", "nat", "prerouting", "-100", pre)
	var post, in []string
	// An egress leaves as the host's own address: no stack address is
	// ever seen off this host.
	for _, e := range p.Egress {
		post = append(post, fmt.Sprintf("iifname %q ip saddr %s ip daddr %s tcp dport %d masquerade comment %q",
			p.Network(e.Network).Bridge, e.Source, e.Target.Addr(), e.Target.Port(), "egress "+e.Name+" leaves as the host"))
	}
	if len(p.Published) > 0 {
		pub := p.Network(plan.NetPublic)
		post = append(post, fmt.Sprintf("oifname %q ip saddr 127.0.0.0/8 ct status dnat snat to %s comment \"a loopback client, which the edge cannot answer\"", pub.Bridge, pub.Gateway))
		in = append(in, fmt.Sprintf("iifname %q ip daddr 127.0.0.0/8 ct direction original drop comment \"nothing on the bridge may open a connection to the host's loopback\"", pub.Bridge))
	}
	b.WriteString("\n")
	chain("postrouting", "nat", "postrouting", "100", post)
	b.WriteString("\n")
	chain("input", "filter", "input", "filter", in)
	b.WriteString("}\n")
}

// writeAntiSpoof renders the bridge table that drops, at the bridge port
// a node's veth is plugged into, every IPv4 or ARP packet whose source
// address is not that interface's own: a node that sends as another (with
// IP_FREEBIND, which needs no capability) is stopped on the fabric, not
// only by the capabilities it lacks. The outside namespace, which stands
// for the internet, is not bound to one address.
func writeAntiSpoof(b *strings.Builder, p *plan.Plan) {
	t := p.HostNFT
	var ports, pairs []string
	for _, n := range p.Nodes {
		for _, i := range n.Ifaces {
			ports = append(ports, fmt.Sprintf("%q", i.Host))
			pairs = append(pairs, fmt.Sprintf("%q . %s", i.Host, i.Addr))
		}
	}
	slices.Sort(ports)
	slices.Sort(pairs)
	fmt.Fprintf(b, "\ntable bridge %s\ndelete table bridge %s\n\n", t, t)
	fmt.Fprintf(b, "table bridge %s {\n", t)
	fmt.Fprintf(b, "\tset nodes {\n\t\ttype ifname\n\t\telements = { %s }\n\t}\n\n", strings.Join(ports, ", "))
	fmt.Fprintf(b, "\tset own {\n\t\ttype ifname . ipv4_addr\n\t\telements = { %s }\n\t}\n\n", strings.Join(pairs, ", "))
	b.WriteString("\tchain prerouting {\n\t\ttype filter hook prerouting priority -300; policy accept;\n")
	b.WriteString("\t\tiifname @nodes ether type ip iifname . ip saddr != @own drop comment \"a node sends as another\"\n")
	b.WriteString("\t\tiifname @nodes ether type arp iifname . arp saddr ip != @own drop comment \"a node claims another's address\"\n")
	b.WriteString("\t\tiifname @nodes ether type != { ip, arp } drop comment \"nodes speak IPv4 only\"\n")
	b.WriteString("\t}\n}\n")
}

func writeSet(b *strings.Builder, name string, addrs []netip.Addr) {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	fmt.Fprintf(b, "\tset %s {\n\t\ttype ipv4_addr\n", name)
	if len(addrs) > 0 {
		s := make([]string, len(addrs))
		for i, a := range addrs {
			s[i] = a.String()
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(s, ", "))
	}
	b.WriteString("\t}\n\n")
}
