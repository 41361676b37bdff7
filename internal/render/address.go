package render

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// How a node's daemons name addresses: their own, their peers' and their
// clients'. The local driver gives every node its plan addresses, so
// configs hold those. A pod on a cluster learns its address only when it
// starts and shares its tier's Service with its replicas, so there
// daemons bind any address, reach a peer tier by its Service's DNS name,
// and admit clients from the pod network: NetworkPolicies decide who
// reaches whom.

// bind is the address n's daemons listen on for a flow over network.
func (in Input) bind(n *plan.Node, network string) netip.Addr {
	if in.Cluster != nil {
		// A pod has its own network namespace with one interface;
		// binding any address is binding that and the loopback.
		return netip.IPv4Unspecified()
	}
	return n.Addr(network)
}

// peer names the node n's daemons reach over network: its address, or on
// a cluster its tier's Service, which the node then resolves (Node.Names).
func (in Input) peer(n *plan.Node, network string) string {
	if in.Cluster == nil {
		if a := n.Addr(network); a.IsValid() {
			return a.String()
		}
		return ""
	}
	name := n.Tier + "." + in.Cluster.Namespace + ".svc"
	if in.names != nil && !slices.Contains(*in.names, name) {
		*in.names = append(*in.names, name)
	}
	return name
}

// client is the network a daemon admits node n from over network: n's
// address alone, or on a cluster the whole pod network, since n's pods
// get their addresses from it as they start.
func (in Input) client(n *plan.Node, network string) netip.Prefix {
	if in.Cluster != nil {
		return in.Cluster.PodCIDR
	}
	a := n.Addr(network)
	if !a.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// hostOrNet writes a client's network as daemons expect it: an address
// alone for one host, else address/bits.
func hostOrNet(c netip.Prefix) string {
	if c.IsSingleIP() {
		return c.Addr().String()
	}
	return c.String()
}

// hostPort joins a host, an IPv4 address or a Service's DNS name, and a
// port: the stack has no IPv6, so no brackets.
func hostPort(host string, port int) string {
	return host + ":" + strconv.Itoa(port)
}
