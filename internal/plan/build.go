package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// The edge's ports that the host publishes, and that visitors reach.
var (
	portHTTP  = Port{"tcp", 80}
	portHTTPS = Port{"tcp", 443}
)

// netLetters tag host-side veth names with the network they join.
var netLetters = map[string]string{NetPrivate: "p", NetPublic: "u", NetDMZ: "d"}

// Names of kernel objects. They are deterministic, and the host-side ones
// fit Linux's 15-byte interface-name limit for any stack name that
// spec.Validate accepts.
func BridgeName(stack, network string) string { return stack + "-" + network[:3] }

// HostVeth names the host end of node ordinal's veth on network. Ordinal 0 is
// verify's outside vantage.
func HostVeth(stack string, ordinal int, network string) string {
	return fmt.Sprintf("%s-%d%s", stack, ordinal, netLetters[network])
}

// NetnsName names a node's network namespace (and its container).
func NetnsName(stack, node string) string { return "bh-" + stack + "-" + node }

// HostTable names the stack's nftables tables on the host, one inet and
// one bridge. Stack names hold no underscore, so no two stacks share it.
func HostTable(stack string) string { return "bulkhead_" + strings.ReplaceAll(stack, "-", "_") }

// Build plans st, which must have passed spec.Validate and whose storage
// protocol must be resolved (not "auto"): only the host knows whether its
// kernel can mount NFS.
func Build(st *spec.Stack) (*Plan, error) {
	p := &Plan{
		Stack:  st.Name,
		Domain: st.Domain,
		Publish: Publish{HTTP: st.Publish.HTTP, HTTPS: st.Publish.HTTPS, Redirect: st.Publish.Redirect,
			Certificate: st.Path(st.Publish.Certificate), Key: st.Path(st.Publish.Key)},
		HostNFT: HostTable(st.Name),
	}
	// The published ports are on loopback unless the stack says otherwise,
	// so the edge answers to localhost too.
	p.ServerNames = []string{st.Domain}
	if st.Domain != "localhost" {
		p.ServerNames = append(p.ServerNames, "localhost")
	}
	if t := st.ByRole(spec.RoleStorage); t != nil {
		if t.Protocol != spec.ProtocolNFS && t.Protocol != spec.ProtocolSFTP {
			return nil, fmt.Errorf("plan %s: storage protocol %q is not resolved to nfs or sftp", st.Name, t.Protocol)
		}
		p.Storage = t.Protocol
	}
	dmz := st.Networks.DMZ.IsValid()
	p.Networks = append(p.Networks, network(st.Name, NetPrivate, st.Networks.Private), network(st.Name, NetPublic, st.Networks.Public))
	if dmz {
		p.Networks = append(p.Networks, network(st.Name, NetDMZ, st.Networks.DMZ))
	}
	next := map[string]netip.Addr{}
	for _, n := range p.Networks {
		next[n.Name] = n.Gateway.Next()
	}
	take := func(net string) netip.Addr {
		a := next[net]
		next[net] = a.Next()
		return a
	}

	ordinal := 0
	for _, t := range st.Ordered() {
		for i, name := range spec.InstanceNames(t) {
			ordinal++
			n := Node{
				Name: name, Tier: t.Name, Role: t.Role, Software: t.Software,
				Replica: i + 1, Ordinal: ordinal, Memory: int64(t.Memory), Pids: t.Pids,
				Disk: int64(t.Disk), CPUWeight: t.CPU,
				Netns: NetnsName(st.Name, name), Container: NetnsName(st.Name, name),
				Listens: servicePorts(t.Role, t.Software, p.Storage),
			}
			if t.Role == spec.RoleStorage {
				n.Software = p.Storage
			}
			for _, net := range networksOf(t.Role, dmz) {
				nw := p.Network(net)
				n.Ifaces = append(n.Ifaces, Interface{
					Network: net, Name: net, Host: HostVeth(st.Name, ordinal, net),
					Addr: take(net), Bits: nw.Subnet.Bits(),
				})
			}
			n.Metrics = metricsAddr(&n)
			if st.ByRole(spec.RoleMonitor) != nil {
				n.Exporter = exporterOf(&n)
				n.Stats = statsOf(&n)
			}
			p.Nodes = append(p.Nodes, n)
		}
	}
	for _, n := range p.Networks {
		if last := n.Subnet.Addr(); !n.Subnet.Contains(next[n.Name]) || next[n.Name] == broadcast(n.Subnet) {
			return nil, fmt.Errorf("plan %s: network %s (%s from %s) has too few addresses for its nodes", st.Name, n.Name, n.Subnet, last)
		}
	}
	p.Outside = Vantage{
		Name: spec.Outside, Netns: NetnsName(st.Name, spec.Outside),
		Iface: Interface{Network: NetPublic, Name: NetPublic, Host: HostVeth(st.Name, 0, NetPublic),
			Addr: take(NetPublic), Bits: st.Networks.Public.Bits()},
	}

	p.index()
	if err := p.flows(st); err != nil {
		return nil, err
	}
	for i := range p.Nodes {
		p.Nodes[i].Firewall = p.firewall(&p.Nodes[i])
		p.Nodes[i].Mount = p.mount(&p.Nodes[i])
	}
	p.Published = p.published()
	p.mail(st)
	p.Dashboard = p.dashboard()
	if p.Dashboard != nil {
		m := p.Node(p.Dashboard.Node)
		m.Firewall.Sets = append(m.Firewall.Sets, Set{Name: hostSet, Addrs: []netip.Addr{p.Dashboard.From}})
		m.Firewall.Input = append(m.Firewall.Input, Rule{Iface: NetPrivate, Set: hostSet, Port: p.Dashboard.Port,
			Comment: "host -> " + m.Tier + ": the dashboard, from the host's loopback"})
	}
	p.Site = Site{
		Dir: st.Site.Dir, Static: slices.Clone(st.Site.Static),
		DBName: st.Site.Database.Name, DBUser: st.Site.Database.User,
		Writable: slices.Clone(st.Site.Writable), Check: st.Site.Check,
	}
	p.Matrix = p.matrix()
	p.index()
	return p, nil
}

func network(stack, name string, subnet netip.Prefix) Network {
	return Network{Name: name, Subnet: subnet, Gateway: subnet.Addr().Next(), Bridge: BridgeName(stack, name)}
}

// LastHost is the network's last address before its broadcast address:
// with the gateway's neighbour, the far end that proves the host routes
// the whole subnet to the bridge.
func (n Network) LastHost() netip.Addr { return broadcast(n.Subnet).Prev() }

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// metricsAddr is where n's agent serves its metrics: on its first network
// that is not public, so that visitors never meet the port.
func metricsAddr(n *Node) netip.AddrPort {
	for _, net := range []string{NetPrivate, NetDMZ} {
		if a := n.Addr(net); a.IsValid() {
			return netip.AddrPortFrom(a, uint16(catalog.MetricsPort.Number))
		}
	}
	return netip.AddrPort{}
}

// exporterOf is n's role exporter, beside its agent, or nil if the catalog
// knows none for n's software.
func exporterOf(n *Node) *Exporter {
	d, err := catalog.Lookup(n.Role, n.Software)
	if err != nil || d.Exporter == nil || !n.Metrics.IsValid() {
		return nil
	}
	e := &Exporter{Package: d.Exporter.Package, Addr: netip.AddrPortFrom(n.Metrics.Addr(), uint16(d.Exporter.Port.Number))}
	if s := d.Exporter.Status; s.Number != 0 {
		e.Status = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(s.Number))
	}
	return e
}

// statsOf is where n's agent reads the figures it translates into
// metrics, or nil if the catalog names none for n's software.
func statsOf(n *Node) *Stats {
	d, err := catalog.Lookup(n.Role, n.Software)
	if err != nil || d.Stats == "" || !n.Metrics.IsValid() {
		return nil
	}
	switch {
	case d.Stats == catalog.StatsPHPFPM && n.Exporter != nil && n.Exporter.Status.IsValid():
		return &Stats{Format: d.Stats, Addr: n.Exporter.Status}
	case d.Stats == catalog.StatsMemcached && len(n.Listens) > 0:
		// memcached listens on the node's address on the network its
		// clients reach it over, which is the metrics address's.
		return &Stats{Format: d.Stats, Addr: netip.AddrPortFrom(n.Metrics.Addr(), uint16(n.Listens[0].Number))}
	}
	return nil
}

// networksOf says which networks a role's nodes join. With a DMZ, the tiers
// that face the edge move onto it, and the edge leaves the private network.
func networksOf(role string, dmz bool) []string {
	switch {
	case role == spec.RoleEdge && dmz:
		return []string{NetPublic, NetDMZ}
	case role == spec.RoleEdge:
		return []string{NetPublic, NetPrivate}
	case dmz && (role == spec.RoleStatic || role == spec.RoleApp):
		return []string{NetDMZ, NetPrivate}
	case dmz && role == spec.RoleMonitor:
		// The edge's metrics are on the DMZ, where it no longer meets
		// the private network.
		return []string{NetPrivate, NetDMZ}
	}
	return []string{NetPrivate}
}

// flows lists the flows the roles imply (DESIGN.md's table) and then the
// stack's explicit ones, each on the network both ends share.
func (p *Plan) flows(st *spec.Stack) error {
	tierOf := func(role string) *spec.Tier { return st.ByRole(role) }
	edge, static, app := tierOf(spec.RoleEdge), tierOf(spec.RoleStatic), tierOf(spec.RoleApp)
	cache, db, storage := tierOf(spec.RoleCache), tierOf(spec.RoleDB), tierOf(spec.RoleStorage)
	add := func(from, to *spec.Tier, port Port, why string) {
		if from != nil && to != nil {
			p.Flows = append(p.Flows, Flow{From: from.Name, To: to.Name, Port: port, Why: why})
		}
	}
	if edge != nil {
		p.Flows = append(p.Flows,
			Flow{From: spec.Outside, To: edge.Name, Port: portHTTP, Network: NetPublic, Why: "visitors (http)"},
			Flow{From: spec.Outside, To: edge.Name, Port: portHTTPS, Network: NetPublic, Why: "visitors (https)"})
	}
	svc := func(t *spec.Tier) Port {
		if t == nil {
			return Port{}
		}
		return ServicePort(t.Role, t.Software, p.Storage)
	}
	add(edge, static, svc(static), "static paths")
	add(edge, app, svc(app), "dynamic pages, load-balanced")
	add(static, storage, svc(storage), "read-only mount of the site's files")
	add(app, storage, svc(storage), "site code (read-only) and uploads (read-write)")
	add(app, cache, svc(cache), "cache-aside for queries and pages")
	add(app, db, svc(db), "the app's database")
	add(app, tierOf(spec.RoleMail), Port{Proto: "tcp", Number: catalog.SMTPPort}, "outbound mail, to the relay")
	if monitor := tierOf(spec.RoleMonitor); monitor != nil {
		for _, t := range st.Ordered() {
			if t != monitor {
				add(monitor, t, Port{Proto: catalog.MetricsPort.Proto, Number: catalog.MetricsPort.Number}, "metrics of the node's agent")
				if d, err := catalog.Lookup(t.Role, t.Software); err == nil && d.Exporter != nil {
					who := d.Exporter.Package
					if who == "" {
						who = t.Software + "'s own"
					}
					add(monitor, t, Port{Proto: d.Exporter.Port.Proto, Number: d.Exporter.Port.Number}, "metrics of the role's exporter ("+who+")")
				}
			}
		}
	}
	for _, f := range st.Flows {
		fl := Flow{From: f.From, To: f.To, Port: Port{f.Proto, f.Port}, Why: "explicit flow", Explicit: true}
		if !slices.ContainsFunc(p.Flows, func(g Flow) bool { return g.From == fl.From && g.To == fl.To && g.Port == fl.Port }) {
			p.Flows = append(p.Flows, fl)
		}
	}
	var errs []error
	for i := range p.Flows {
		f := &p.Flows[i]
		if f.Network != "" {
			continue
		}
		f.Network = p.commonNetwork(f.From, f.To)
		if f.Network == "" {
			errs = append(errs, fmt.Errorf("plan %s: flow %s -> %s port %d: the two tiers share no network; with a DMZ, the edge reaches only static and app", st.Name, f.From, f.To, f.Port.Number))
		}
	}
	return errors.Join(errs...)
}

// published is where the host's published ports lead: http to the edge's
// port 80, https to its 443, on its public address.
func (p *Plan) published() []Forward {
	edges := p.Role(spec.RoleEdge)
	if len(edges) == 0 {
		return nil
	}
	e := edges[0]
	pub := e.Addr(NetPublic)
	fs := []Forward{
		{Listen: p.Publish.HTTP, Node: e.Name, Target: netip.AddrPortFrom(pub, uint16(portHTTP.Number))},
		{Listen: p.Publish.HTTPS, Node: e.Name, Target: netip.AddrPortFrom(pub, uint16(portHTTPS.Number))},
	}
	if slices.ContainsFunc(fs, Forward.Remote) {
		e.Gateway = p.Network(NetPublic).Gateway
	}
	return fs
}

// Names of the smarthost's egress and of its set in the mail node's
// firewall.
const (
	EgressSmarthost = "smarthost"
	smarthostSet    = "to_smarthost"
)

// mail plans the mail tier: where app nodes hand their mail, and, with a
// smarthost, the stack's one way out, from the relay to it. The relay's
// firewall lets out only that, and the node has a route to that one
// address, via the host.
func (p *Plan) mail(st *spec.Stack) {
	ms := p.Role(spec.RoleMail)
	apps := p.Role(spec.RoleApp)
	if len(ms) == 0 || len(apps) == 0 {
		return
	}
	m := ms[0]
	net := p.commonNetwork(apps[0].Tier, m.Tier)
	p.Mail = &Mail{Node: m.Name, Relay: netip.AddrPortFrom(m.Addr(net), catalog.SMTPPort)}
	sh := st.SmarthostAddr()
	if !sh.IsValid() {
		return
	}
	c := st.Mail
	p.Mail.Smarthost = sh
	p.Mail.TLS, p.Mail.TLSName, p.Mail.CAFile = c.TLS, c.TLSName, st.Path(c.CAFile)
	p.Mail.Username, p.Mail.PasswordFile = c.Username, st.Path(c.PasswordFile)
	e := Egress{
		Name: EgressSmarthost, From: m.Tier, Node: m.Name, Network: NetPrivate,
		Source: m.Addr(NetPrivate), Via: p.Network(NetPrivate).Gateway, Target: sh,
		Why: "the relay delivers to the smarthost",
	}
	p.Egress = append(p.Egress, e)
	m.Firewall.Sets = append(m.Firewall.Sets, Set{Name: smarthostSet, Addrs: []netip.Addr{sh.Addr()}})
	m.Firewall.Output = append(m.Firewall.Output, Rule{Iface: e.Network, Set: smarthostSet, Port: e.Port(),
		Comment: fmt.Sprintf("%s -> %s (%s): %s", m.Tier, e.Name, sh, e.Why)})
}

// hostSet names the set of the host's own address in the monitor's
// firewall.
const hostSet = "from_host"

// dashboard is how the host reaches the monitor node: from its address on
// the private bridge to the monitor's service port there. Nil without a
// monitor.
func (p *Plan) dashboard() *Dashboard {
	ms := p.Role(spec.RoleMonitor)
	if len(ms) == 0 || len(ms[0].Listens) == 0 {
		return nil
	}
	m := ms[0]
	port := m.Listens[0]
	return &Dashboard{
		Node: m.Name, Port: port,
		Target: netip.AddrPortFrom(m.Addr(NetPrivate), uint16(port.Number)),
		From:   p.Network(NetPrivate).Gateway,
	}
}

// Remote reports whether f takes connections from other machines: it is
// published on an address beyond the host's loopback.
func (f Forward) Remote() bool { return !f.Listen.Addr().IsLoopback() }

// mount is the site mount n's role gives it: static nodes read the site,
// app nodes also write its writable paths. It is nil for the other roles
// and when the stack has no storage.
func (p *Plan) mount(n *Node) *Mount {
	account, ro := AccountWriter, false
	switch n.Role {
	case spec.RoleStatic:
		account, ro = AccountReader, true
	case spec.RoleApp:
	default:
		return nil
	}
	storage := p.Role(spec.RoleStorage)
	if len(storage) == 0 || len(storage[0].Listens) == 0 {
		return nil
	}
	s := storage[0]
	net := p.commonNetwork(n.Tier, s.Tier)
	if net == "" {
		return nil
	}
	return &Mount{
		Storage: s.Name, Network: net, Addr: s.Addr(net), Client: n.Addr(net),
		Port: s.Listens[0], Account: account, ReadOnly: ro,
	}
}

func (p *Plan) commonNetwork(from, to string) string {
	a, b := p.Tier(from), p.Tier(to)
	if len(a) == 0 || len(b) == 0 {
		return ""
	}
	for _, net := range []string{NetPrivate, NetDMZ, NetPublic} {
		if a[0].Iface(net) != nil && b[0].Iface(net) != nil {
			return net
		}
	}
	return ""
}

// setName names the set of a peer tier's addresses on one network.
func setName(dir, tier, network string) string {
	n := dir + "_" + strings.ReplaceAll(tier, "-", "_")
	if network != NetPrivate {
		n += "_" + network
	}
	return n
}

func (p *Plan) firewall(n *Node) Firewall {
	var fw Firewall
	sets := map[string]bool{}
	addSet := func(name, tier, network string) {
		if sets[name] {
			return
		}
		sets[name] = true
		s := Set{Name: name}
		for _, peer := range p.Tier(tier) {
			s.Addrs = append(s.Addrs, peer.Addr(network))
		}
		fw.Sets = append(fw.Sets, s)
	}
	for _, f := range p.Flows {
		if f.To == n.Tier {
			r := Rule{Iface: f.Network, Port: f.Port, Comment: fmt.Sprintf("%s -> %s: %s", f.From, f.To, f.Why)}
			if f.From != spec.Outside {
				r.Set = setName("from", f.From, f.Network)
				addSet(r.Set, f.From, f.Network)
			}
			fw.Input = append(fw.Input, r)
		}
		if f.From == n.Tier {
			r := Rule{Iface: f.Network, Port: f.Port, Set: setName("to", f.To, f.Network), Comment: fmt.Sprintf("%s -> %s: %s", f.From, f.To, f.Why)}
			addSet(r.Set, f.To, f.Network)
			fw.Output = append(fw.Output, r)
		}
	}
	return fw
}
