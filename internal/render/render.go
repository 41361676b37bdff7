// Package render turns a Plan into the bytes every node runs on: nftables
// rulesets, daemon configs, hosts files, and the list of daemons each node's
// agent supervises. It is pure: secrets and paths are inputs, never
// constants, and it does no I/O.
package render

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"sort"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Layout says where things are inside a node's container. Configs refer to
// these paths; the driver mounts the directories there. Tests render with a
// layout under a temporary directory so that daemons can check the configs
// offline.
type Layout struct {
	Conf string // rendered configs, read-only
	Run  string // pid files, sockets, temp files (tmpfs)
	Log  string // daemon logs
	Data string // persistent data: databases, the storage export
	Site string // the site's files, mounted from storage (static, app)
	// Shared holds the site's writable paths (site.writable), mounted from
	// storage and shared by every release: Shared/uploads is the site's
	// uploads whichever release Site is. Web servers serve /uploads/ from
	// here; a link to it in Site is for PHP, and no web server follows it.
	Shared string
	// Release says that Site is a release: its files never change while a
	// node serves it, and new code is a new directory (see package
	// release). PHP's opcache then never checks a file for changes.
	Release bool
	// Agent is the bulkhead binary inside the node, which PHP's mail()
	// runs as its sendmail (see package sendmail). Empty leaves mail()
	// disabled.
	Agent string
}

// SecretsDir is the subdirectory of Layout.Conf that holds a node's secrets
// (files of mode 0400 or 0440). Rendered files under it have paths starting
// "secrets/".
const SecretsDir = "secrets"

// DefaultLayout is the layout of a node container made by the local driver.
func DefaultLayout() Layout {
	return Layout{
		Conf:   "/etc/bulkhead",
		Run:    "/run/bulkhead",
		Log:    "/var/log/bulkhead",
		Data:   "/var/lib/bulkhead",
		Site:   "/srv/site",
		Shared: "/srv/shared",
		Agent:  "/bulkhead/bulkhead",
	}
}

// Secrets are generated per stack by the host and handed to rendering.
type Secrets struct {
	// DBPassword is the site's database user's password.
	DBPassword string
	// StorageKeys maps a storage client node (static, app-N) to the SSH
	// public key it mounts the storage with, one line of authorized_keys.
	StorageKeys map[string]string
	// StorageHostKey is the storage node's SSH host private key (OpenSSH
	// PEM), so clients can pin it.
	StorageHostKey []byte
	// TLSCert and TLSKey are the edge's certificate chain and key, PEM.
	TLSCert, TLSKey []byte
	// MailPassword logs the mail relay in to the smarthost, and MailCA
	// (PEM) signs the smarthost's certificate; up reads both from the
	// files the stack file names.
	MailPassword string
	MailCA       []byte
}

// Input is everything besides the Plan that rendering needs.
type Input struct {
	Layout  Layout
	Secrets Secrets
	// Out names app nodes left out of the edge's pool, being drained or
	// switched to a new release: the edge keeps each as a server of its app
	// pool but sends it no new requests. Names of other nodes change
	// nothing.
	Out map[string]bool
	// Cluster, if set, renders for pods of a Kubernetes cluster instead of
	// the local driver's containers (see address.go).
	Cluster *Cluster
	// names collects the Service names a node's configs resolve, into
	// Node.Names; RenderNode points it at the node it renders.
	names *[]string
}

// Cluster is what rendering for a Kubernetes cluster needs to know about
// it. A pod's address is known only once it runs, so daemons bind any
// address, name their peers by Service, and admit clients by the pod
// network; NetworkPolicies, not addresses, decide who reaches whom.
type Cluster struct {
	// Namespace holds the stack's Services: a tier's is
	// TIER.Namespace.svc.
	Namespace string
	// PodCIDR is the cluster's pod network, where every client comes from.
	PodCIDR netip.Prefix
}

// File is one rendered file of one node. Path is relative to the node's
// Layout.Conf directory.
type File struct {
	Path string
	Mode uint32
	Data []byte
	// OnChange says what a running node needs when the file changes.
	OnChange Change
}

// Change is what a running node needs to apply a changed file.
type Change int

const (
	// Restart: the node's container restarts (the safe default).
	Restart Change = iota
	// Reload: the node's services reload (service.Reload), which must be
	// able to apply every such file.
	Reload
	// Live: the file is read afresh on every use, or the host applies it;
	// writing it is enough.
	Live
)

func (c Change) String() string {
	switch c {
	case Reload:
		return "reload"
	case Live:
		return "live"
	}
	return "restart"
}

// Node is the rendered output of one node.
type Node struct {
	Name     string
	Files    []File
	Services []service.Service
	// Names lists the DNS names the node's daemons resolve to reach their
	// peers, in the order first named: always empty but on a cluster, whose
	// pods need DNS egress for them and only then.
	Names []string
}

// Render renders every node of p.
func Render(p *plan.Plan, in Input) ([]Node, error) {
	out := make([]Node, 0, len(p.Nodes))
	for i := range p.Nodes {
		n, err := RenderNode(p, &p.Nodes[i], in)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// RenderNode renders one node: its firewall, hosts file and its role's
// daemons.
func RenderNode(p *plan.Plan, n *plan.Node, in Input) (Node, error) {
	out := Node{Name: n.Name}
	if in.Cluster == nil {
		// The host loads the firewall into the node's namespace, and
		// resolvers read the hosts file on every lookup. On a cluster,
		// NetworkPolicies and the cluster's DNS take their place.
		out.Files = append(out.Files,
			File{Path: "nftables.nft", Mode: 0o644, Data: Nftables(n), OnChange: Live},
			File{Path: "hosts", Mode: 0o644, Data: Hosts(p, n), OnChange: Live},
		)
	}
	in.names = &out.Names
	r, ok := renderers[n.Role+"/"+n.Software]
	if !ok {
		return Node{}, fmt.Errorf("render %s: no renderer for %s software %q", n.Name, n.Role, n.Software)
	}
	files, svcs, err := r(p, n, in)
	if err != nil {
		return Node{}, fmt.Errorf("render %s (%s): %w", n.Name, n.Software, err)
	}
	out.Files = append(out.Files, files...)
	out.Services = svcs
	if err := checkReloads(out); err != nil {
		return Node{}, fmt.Errorf("render %s (%s): %w", n.Name, n.Software, err)
	}
	if len(svcs) > 0 {
		// Renderers list the daemon that faces the network last (php-fpm,
		// then apache2): it answers on the node's service ports.
		svcs[len(svcs)-1].Ready = readyAddrs(p, n, in)
	}
	sort.Slice(out.Files, func(i, j int) bool { return out.Files[i].Path < out.Files[j].Path })
	return out, nil
}

// checkReloads refuses a node with a file that reloads but no service
// that can: the change would never be applied.
func checkReloads(n Node) error {
	if slices.ContainsFunc(n.Services, func(s service.Service) bool { return s.Reload != nil }) {
		return nil
	}
	for _, f := range n.Files {
		if f.OnChange == Reload {
			return fmt.Errorf("%s is applied by a reload, but no service of the node reloads", f.Path)
		}
	}
	return nil
}

// readyAddrs lists the addresses peers reach n on: n's address on each
// flow's network, with the flow's port, and the monitor's address that the
// host reaches it on. The monitor's flows to the agent's metrics port and
// to the role exporter's are theirs, not the daemon's. On a cluster, where
// daemons bind any address, the agent checks each port on the loopback.
func readyAddrs(p *plan.Plan, n *plan.Node, in Input) []string {
	var out []string
	if d := p.Dashboard; d != nil && d.Node == n.Name {
		if in.Cluster != nil {
			out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), d.Target.Port()).String())
		} else {
			out = append(out, d.Target.String())
		}
	}
	for _, f := range p.Flows {
		if f.To != n.Tier || f.Port.Proto != "tcp" || (n.Metrics.IsValid() && f.Port.Number == int(n.Metrics.Port())) ||
			(n.Exporter != nil && f.Port.Number == int(n.Exporter.Addr.Port())) {
			continue
		}
		addr := n.Addr(f.Network)
		if in.Cluster != nil {
			addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		a := netip.AddrPortFrom(addr, uint16(f.Port.Number)).String()
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// renderer renders the daemons of one role and software.
type renderer func(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error)

var renderers = map[string]renderer{
	spec.RoleEdge + "/nginx":         edgeNginx,
	spec.RoleEdge + "/haproxy":       edgeHAProxy,
	spec.RoleStatic + "/lighttpd":    staticLighttpd,
	spec.RoleStatic + "/nginx":       staticNginx,
	spec.RoleStatic + "/caddy":       staticCaddy,
	spec.RoleApp + "/apache2":        appApache,
	spec.RoleApp + "/nginx":          appNginx,
	spec.RoleCache + "/memcached":    cacheMemcached,
	spec.RoleCache + "/redis":        cacheRedis,
	spec.RoleDB + "/mariadb":         dbMariaDB,
	spec.RoleDB + "/postgresql":      dbPostgres,
	spec.RoleStorage + "/sftp":       storageSFTP,
	spec.RoleStorage + "/nfs":        storageNFS,
	spec.RoleMonitor + "/prometheus": monitorPrometheus,
	spec.RoleMail + "/postfix":       mailPostfix,
}

// conf joins a file name onto the node's config directory.
func (l Layout) conf(name string) string { return path.Join(l.Conf, name) }

// secret is the in-node path of a secrets file.
func (l Layout) secret(name string) string { return path.Join(l.Conf, SecretsDir, name) }
