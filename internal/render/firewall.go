package render

import (
	"fmt"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// TableName is the nftables table bulkhead owns inside every node.
const TableName = "bulkhead"

// Nftables renders a node's firewall as `nft -f` input. The file first
// creates and deletes the table, so loading it replaces the previous ruleset
// atomically instead of appending to it. The inet family covers IPv6: nodes
// have no IPv6 rules, so every IPv6 packet but loopback is dropped.
func Nftables(n *plan.Node) []byte {
	var b strings.Builder
	fw := n.Firewall
	fmt.Fprintf(&b, "# bulkhead firewall of node %s: default drop both ways.\n", n.Name)
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, s := range fw.Sets {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n", s.Name)
		if len(s.Addrs) > 0 {
			addrs := make([]string, len(s.Addrs))
			for i, a := range s.Addrs {
				addrs[i] = a.String()
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(addrs, ", "))
		}
		b.WriteString("\t}\n\n")
	}
	chain := func(name, hook, lo string, rules []plan.Rule, dir string) {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy drop;\n", name, hook)
		fmt.Fprintf(&b, "\t\t%s \"lo\" accept\n", lo)
		b.WriteString("\t\tct state invalid drop\n")
		b.WriteString("\t\tct state established,related accept\n")
		for _, r := range rules {
			iface := "iifname"
			addr := "saddr"
			if dir == "out" {
				iface, addr = "oifname", "daddr"
			}
			fmt.Fprintf(&b, "\t\t%s %q ", iface, r.Iface)
			if r.Set != "" {
				fmt.Fprintf(&b, "ip %s @%s ", addr, r.Set)
			}
			fmt.Fprintf(&b, "%s dport %d ct state new accept comment %q\n", r.Port.Proto, r.Port.Number, r.Comment)
		}
		b.WriteString("\t}\n\n")
	}
	chain("input", "input", "iifname", fw.Input, "in")
	chain("output", "output", "oifname", fw.Output, "out")
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n")
	return []byte(b.String())
}

// Hosts renders a node's /etc/hosts: its own name and the peers it may
// reach, so configs can say "db" or "cache" instead of addresses. Nodes it
// may not reach are left out; a name that resolves invites a probe.
func Hosts(p *plan.Plan, n *plan.Node) []byte {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&b, "%s\t%s\n", n.Ifaces[len(n.Ifaces)-1].Addr, n.Name)
	seen := map[string]bool{n.Name: true}
	for _, peer := range p.Peers(n) {
		if seen[peer.Node.Name] {
			continue
		}
		seen[peer.Node.Name] = true
		names := peer.Node.Name
		if len(p.Tier(peer.Node.Tier)) == 1 && peer.Node.Tier != peer.Node.Name {
			names += " " + peer.Node.Tier
		}
		fmt.Fprintf(&b, "%s\t%s\n", peer.Node.Addr(peer.Flow.Network), names)
	}
	return []byte(b.String())
}
