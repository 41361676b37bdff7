// Package plan turns a validated Stack into a Plan: every node with its
// addresses and kernel object names, the flows the roles imply, each node's
// firewall policy and the reachability matrix that verify checks. It is pure:
// the same Stack always yields the same Plan, and it does no I/O.
package plan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Network names. They are also the interface names inside each node's
// namespace, so that a node's firewall reads "iifname private".
const (
	NetPrivate = "private"
	NetPublic  = "public"
	NetDMZ     = "dmz"
)

// Plan is everything a driver needs to realise a stack, and everything
// verify needs to check it.
type Plan struct {
	Stack    string    `json:"stack"`
	Domain   string    `json:"domain"`
	Publish  Publish   `json:"publish"`
	Networks []Network `json:"networks"`
	Nodes    []Node    `json:"nodes"`
	Outside  Vantage   `json:"outside"`
	Flows    []Flow    `json:"flows"`
	Site     Site      `json:"site"`
	Storage  string    `json:"storage_protocol"`
	Matrix   Matrix    `json:"matrix"`
	HostNFT  string    `json:"host_table"`

	// ServerNames are the names the edge answers to and its certificate
	// holds: the domain, and localhost, where the stack is published by
	// default.
	ServerNames []string `json:"server_names"`

	// Published lists the ports the host publishes and where each leads.
	// Empty when the stack has no edge: then nothing is published.
	Published []Forward `json:"published,omitempty"`

	// Dashboard is how the host reaches the monitor's HTTP API, for the
	// dashboard and status; nil when the stack has no monitor.
	Dashboard *Dashboard `json:"dashboard,omitempty"`

	// Mail is how the app nodes' mail leaves: through the mail node's
	// relay, to a smarthost or into its queue. Nil without a mail tier.
	Mail *Mail `json:"mail,omitempty"`

	// Egress lists the flows out of the stack, the only traffic that
	// leaves it: the host forwards and masquerades exactly these, and
	// verify proves each open from its node and closed from every other.
	// Empty unless the mail tier has a smarthost.
	Egress []Egress `json:"egress,omitempty"`

	// Indexes built by Build and Decode; without them lookups scan.
	byName map[string]int
	byTier map[string][]*Node
}

// Publish is where the edge's ports appear on the host.
type Publish struct {
	HTTP     netip.AddrPort `json:"http"`
	HTTPS    netip.AddrPort `json:"https"`
	Redirect bool           `json:"redirect_https"`
	// Certificate and Key are the user's TLS files, resolved against the
	// stack file; empty when bulkhead makes the certificate.
	Certificate string `json:"certificate,omitempty"`
	Key         string `json:"key,omitempty"`
}

// Forward is one published port: the host's kernel rewrites every
// connection to Listen (DNAT) to Target, the edge node's public address
// and port.
type Forward struct {
	Listen netip.AddrPort `json:"listen"`
	Node   string         `json:"node"`
	Target netip.AddrPort `json:"target"`
}

// Dashboard is the one way into the monitor node: from the host's address
// on the private bridge (From) to the monitor's service (Target). No flow
// of the plan reaches the monitor; only this.
type Dashboard struct {
	Node   string         `json:"node"`
	Port   Port           `json:"port"`
	Target netip.AddrPort `json:"target"`
	From   netip.Addr     `json:"from"`
}

// Mail is the mail tier as the app nodes and the relay see it.
type Mail struct {
	// Node is the relay's node, Relay where the app nodes hand it mail
	// (its address on the network it shares with them, port 25).
	Node  string         `json:"node"`
	Relay netip.AddrPort `json:"relay"`
	// Smarthost is where the relay sends everything; the zero AddrPort
	// means it sends nothing and holds every message in its queue.
	Smarthost netip.AddrPort `json:"smarthost,omitzero"`
	// TLS is spec.TLSNone, TLSMay, TLSEncrypt or TLSVerify; TLSName and
	// CAFile are what tls: verify checks the certificate against.
	TLS     string `json:"tls,omitempty"`
	TLSName string `json:"tls_name,omitempty"`
	CAFile  string `json:"ca_file,omitempty"`
	// Username logs in to the smarthost with the password in
	// PasswordFile (resolved against the stack file); up reads it.
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
}

// Hold reports whether the relay keeps mail rather than sending it.
func (m *Mail) Hold() bool { return !m.Smarthost.IsValid() }

// Egress is one flow out of the stack: from one node, over one network's
// gateway (the host, which masquerades it as its own address), to one
// address and port beyond the host.
type Egress struct {
	Name    string         `json:"name"`
	From    string         `json:"from"` // the tier
	Node    string         `json:"node"`
	Network string         `json:"network"`
	Source  netip.Addr     `json:"source"` // the node's address on Network
	Via     netip.Addr     `json:"via"`    // Network's gateway, the node's route to Target
	Target  netip.AddrPort `json:"target"`
	Why     string         `json:"why"`
}

// Port is the egress's destination port, as a Port.
func (e Egress) Port() Port { return Port{Proto: "tcp", Number: int(e.Target.Port())} }

// Network is one of the stack's subnets and the bridge that carries it.
type Network struct {
	Name    string       `json:"name"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"` // the host's address on the bridge
	Bridge  string       `json:"bridge"`
}

// Node is one compartment: a namespace, a container and its daemons.
type Node struct {
	Name      string      `json:"name"` // instance name, e.g. "app-1"
	Tier      string      `json:"tier"`
	Role      string      `json:"role"`
	Software  string      `json:"software"`
	Replica   int         `json:"replica"` // 1-based within the tier
	Ordinal   int         `json:"ordinal"` // 1-based within the stack; used in kernel names
	Memory    int64       `json:"memory"`
	Pids      int         `json:"pids"`
	Disk      int64       `json:"disk"`       // bytes in the node's filesystem image for its data and logs
	CPUWeight int         `json:"cpu_weight"` // 1-10000 as cgroup v2 cpu.weight; systemd maps it to v1 cpu.shares as weight*1024/100
	Netns     string      `json:"netns"`
	Container string      `json:"container"`
	Ifaces    []Interface `json:"interfaces"`
	Listens   []Port      `json:"listens"` // the ports the role serves
	// Metrics is where the node's agent serves the node's own metrics:
	// its address on the network the monitor reaches it over (private,
	// or the DMZ for an edge that is not on private) and the catalog's
	// MetricsPort. Only a flow from the monitor opens it.
	Metrics netip.AddrPort `json:"metrics"`
	// Exporter is the role's Prometheus exporter in the node, when the
	// stack has a monitor and the catalog knows one; nil otherwise.
	Exporter *Exporter `json:"exporter,omitempty"`
	// Stats is what the node's agent reads from the daemon and serves as
	// metrics itself, when the stack has a monitor and the catalog names
	// figures Debian packages no exporter for; nil otherwise.
	Stats    *Stats   `json:"stats,omitempty"`
	Firewall Firewall `json:"firewall"`
	// Mount is the site mount a static or app node gets from the storage
	// node; nil for every other node, and when the stack has no storage.
	Mount *Mount `json:"mount,omitempty"`
	// Gateway is the node's default route, the host's address on the
	// public network. Only an edge published on an address beyond the
	// host's loopback has one: visitors come from any address, and it
	// must answer them. Every other node has only its subnets' routes.
	Gateway netip.Addr `json:"gateway,omitzero"`
}

// Exporter is where a node's role exporter serves its metrics and where
// it reads the daemon's figures.
type Exporter struct {
	// Package is the exporter's Debian package and its program's name;
	// empty when the daemon serves its metrics itself.
	Package string `json:"package,omitempty"`
	// Addr is the agent's metrics address with the exporter's port: only
	// a flow from the monitor opens it.
	Addr netip.AddrPort `json:"addr"`
	// Status is the daemon's status page on the node's loopback, which
	// only the exporter reads; invalid if the exporter needs none.
	Status netip.AddrPort `json:"status,omitzero"`
}

// Stats is where a node's agent reads the daemon's figures that it
// translates into metrics.
type Stats struct {
	// Format is catalog.StatsMemcached or catalog.StatsPHPFPM.
	Format string `json:"format"`
	// Addr is the daemon's service address (memcached) or the web
	// server's status server on the node's loopback (php-fpm).
	Addr netip.AddrPort `json:"addr"`
}

// The storage node's accounts. The static tier reads the site as
// AccountReader; the app tier reads it and writes its writable paths as
// AccountWriter.
const (
	AccountReader = "site-ro"
	AccountWriter = "site-rw"
)

// Mount is how one node mounts the site from the storage node. Build
// derives it from the node's role, never from flows: an explicit flow to
// the storage node opens its firewall, not its files.
type Mount struct {
	Storage  string     `json:"storage"`     // the storage node's name
	Network  string     `json:"network"`     // the network the two share
	Addr     netip.Addr `json:"addr"`        // the storage node's address on Network
	Client   netip.Addr `json:"client_addr"` // the mounting node's address on Network
	Port     Port       `json:"port"`        // the storage node's service port
	Account  string     `json:"account"`     // AccountReader or AccountWriter
	ReadOnly bool       `json:"read_only"`
}

// Interface is a node's leg on one network: a veth pair whose host end sits
// on the network's bridge.
type Interface struct {
	Network string     `json:"network"`
	Name    string     `json:"name"`      // inside the namespace
	Host    string     `json:"host_name"` // host end of the veth
	Addr    netip.Addr `json:"addr"`
	Bits    int        `json:"bits"`
}

// Vantage is verify's stand-in for the internet: a namespace on the public
// network that is not part of the stack.
type Vantage struct {
	Name  string    `json:"name"`
	Netns string    `json:"netns"`
	Iface Interface `json:"interface"`
}

// Port is a transport port.
type Port struct {
	Proto  string `json:"proto"`
	Number int    `json:"port"`
}

// Flow is an allowed connection between tiers. From may be spec.Outside.
type Flow struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     Port   `json:"port"`
	Network  string `json:"network"`
	Why      string `json:"why"`
	Explicit bool   `json:"explicit,omitempty"`
}

// Site is what the nodes need to know of the application.
type Site struct {
	Dir      string   `json:"dir"`
	Static   []string `json:"static"`
	DBName   string   `json:"db_name"`
	DBUser   string   `json:"db_user"`
	Writable []string `json:"writable"`
	Check    string   `json:"check"`
}

// Firewall is one node's policy: drop by default in both directions, allow
// loopback and established traffic, and exactly the node's flows.
type Firewall struct {
	Sets   []Set  `json:"sets"`
	Input  []Rule `json:"input"`
	Output []Rule `json:"output"`
}

// Set is a named set of peer addresses, so that a pool of 100 app nodes is
// one rule, not one hundred.
type Set struct {
	Name  string       `json:"name"`
	Addrs []netip.Addr `json:"addrs"`
}

// Rule allows one flow in one direction. An empty Set means any peer.
type Rule struct {
	Iface   string `json:"iface"`
	Set     string `json:"set,omitempty"`
	Port    Port   `json:"port"`
	Comment string `json:"comment"`
}

// Node returns the node called name, or nil.
func (p *Plan) Node(name string) *Node {
	if p.byName != nil {
		if i, ok := p.byName[name]; ok {
			return &p.Nodes[i]
		}
		return nil
	}
	for i := range p.Nodes {
		if p.Nodes[i].Name == name {
			return &p.Nodes[i]
		}
	}
	return nil
}

// index builds the lookup maps. The Plan must not change afterwards.
func (p *Plan) index() {
	p.byName = make(map[string]int, len(p.Nodes))
	p.byTier = map[string][]*Node{}
	for i := range p.Nodes {
		n := &p.Nodes[i]
		p.byName[n.Name] = i
		p.byTier[n.Tier] = append(p.byTier[n.Tier], n)
	}
	p.Matrix.index()
}

// Decode reads a Plan written as JSON, such as a driver's saved copy.
func Decode(data []byte) (*Plan, error) {
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("decode plan: %w", err)
	}
	p.index()
	return &p, nil
}

// Tier returns the nodes of a tier, in replica order.
func (p *Plan) Tier(tier string) []*Node {
	if p.byTier != nil {
		return p.byTier[tier]
	}
	var out []*Node
	for i := range p.Nodes {
		if p.Nodes[i].Tier == tier {
			out = append(out, &p.Nodes[i])
		}
	}
	return out
}

// Role returns the nodes that play role.
func (p *Plan) Role(role string) []*Node {
	var out []*Node
	for i := range p.Nodes {
		if p.Nodes[i].Role == role {
			out = append(out, &p.Nodes[i])
		}
	}
	return out
}

// Network returns the named network, or nil.
func (p *Plan) Network(name string) *Network {
	for i := range p.Networks {
		if p.Networks[i].Name == name {
			return &p.Networks[i]
		}
	}
	return nil
}

// Iface returns the node's interface on network, or nil.
func (n *Node) Iface(network string) *Interface {
	for i := range n.Ifaces {
		if n.Ifaces[i].Network == network {
			return &n.Ifaces[i]
		}
	}
	return nil
}

// Addr returns the node's address on network, or the zero Addr.
func (n *Node) Addr(network string) netip.Addr {
	if i := n.Iface(network); i != nil {
		return i.Addr
	}
	return netip.Addr{}
}

// Peers returns the nodes this node has an outbound flow to, with the flow,
// in plan order.
func (p *Plan) Peers(n *Node) []Peer {
	var out []Peer
	for _, f := range p.Flows {
		if f.From != n.Tier {
			continue
		}
		for _, d := range p.Tier(f.To) {
			out = append(out, Peer{Node: d, Flow: f})
		}
	}
	return out
}

// Peer is a node reached by a flow.
type Peer struct {
	Node *Node
	Flow Flow
}

// ServicePort is the main port each role serves, for a given software
// choice; storage's choice is its protocol. A choice the catalog does not
// know serves the role's default's port.
func ServicePort(role, software, storage string) Port {
	if ports := servicePorts(role, software, storage); len(ports) > 0 {
		return ports[0]
	}
	return Port{}
}

// servicePorts are all the ports a node serves, its main one first, as
// ServicePort picks the catalog's descriptor.
func servicePorts(role, software, storage string) []Port {
	if role == spec.RoleStorage {
		software = storage
	}
	d, err := catalog.Lookup(role, software)
	if err != nil {
		if d, err = catalog.Lookup(role, catalog.Default(role)); err != nil {
			return nil
		}
	}
	out := make([]Port, len(d.Ports))
	for i, p := range d.Ports {
		out[i] = Port{Proto: p.Proto, Number: p.Number}
	}
	return out
}

// Packages lists the Debian packages node n runs on, sorted: its
// software's, and for an app node the PHP clients of the stack's database
// and cache.
func (p *Plan) Packages(n *Node) []string {
	d, err := catalog.Lookup(n.Role, n.Software)
	if err != nil {
		return nil
	}
	out := slices.Clone(d.Packages)
	if n.Exporter != nil && n.Exporter.Package != "" {
		out = append(out, n.Exporter.Package)
	}
	if n.Role == spec.RoleApp {
		for _, role := range []string{spec.RoleDB, spec.RoleCache} {
			for _, o := range p.Role(role) {
				if od, err := catalog.Lookup(o.Role, o.Software); err == nil && od.PHPClient != "" {
					out = append(out, od.PHPClient)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
