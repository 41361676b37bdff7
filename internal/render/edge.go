package render

import (
	"bytes"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// edgeConf is what the edge templates see; every path is precomputed.
type edgeConf struct {
	Node        string
	Public      netip.Addr // the only address the edge listens on
	ServerNames []string
	App         []edgeServer
	Static      []edgeServer // empty: every path goes to app
	Paths       sitePaths
	// WritablePHP matches a normalised path that names PHP under a writable
	// directory, which the edge refuses; "" without writable directories.
	WritablePHP string
	// AmbiguousPath and AmbiguousURI match a raw path, or a raw request
	// target with its query, that the edge refuses to route because a
	// node behind it could resolve it differently (see writable.go).
	AmbiguousPath, AmbiguousURI string
	// Redirect sends plain HTTP to HTTPS on HTTPSPort, where visitors
	// reach the edge's 443 (the published port); empty for 443 itself.
	Redirect  bool
	HTTPSPort string
	Cert, Key string // nginx: PEM files
	PEM       string // haproxy: certificate and key in one file
	Pid       string
	Socket    string // haproxy's stats socket
	Temp      string // nginx temp directories: prefix of one per kind
	Log       string // nginx's access log
	// Status is where nginx serves stub_status for the role exporter, on
	// the node's loopback; empty without one.
	Status string
	// Metrics is where haproxy serves its own metrics for the monitor;
	// empty without a monitor.
	Metrics   string
	BodyMB    int
	BodyBytes int
}

// edgeServer is one upstream node.
type edgeServer struct {
	Name string
	Addr string // host:port, the host an address or a Service's name
	Out  bool   // in the pool, but sent no new requests (Input.Out)
}

// edgeMaxBody is the largest request body the edge lets through: the app
// tier's upload limit (16 MB).
const edgeMaxBody = 16 << 20

func newEdgeConf(p *plan.Plan, n *plan.Node, in Input) (*edgeConf, error) {
	l := in.Layout
	c := &edgeConf{
		Node:      n.Name,
		Public:    in.bind(n, plan.NetPublic),
		Redirect:  p.Publish.Redirect,
		Cert:      l.secret("edge.crt"),
		Key:       l.secret("edge.key"),
		PEM:       l.secret("edge.pem"),
		Pid:       path.Join(l.Run, n.Software+".pid"),
		Socket:    path.Join(l.Run, "haproxy.sock"),
		Temp:      path.Join(l.Run, "nginx-"),
		Log:       path.Join(l.Log, "access.log"),
		BodyMB:    edgeMaxBody >> 20,
		BodyBytes: edgeMaxBody,

		WritablePHP:   writablePHPRegex(p.Site.Writable),
		AmbiguousPath: ambiguousPathRegex,
		AmbiguousURI:  ambiguousURIRegex,
	}
	if e := n.Exporter; e != nil && e.Status.IsValid() {
		c.Status = e.Status.String()
	}
	if e := n.Exporter; e != nil && e.Package == "" {
		c.Metrics, _ = exporterListen(n, in)
	}
	if !c.Public.IsValid() {
		return nil, fmt.Errorf("%s has no address on the %s network", n.Name, plan.NetPublic)
	}
	if len(in.Secrets.TLSCert) == 0 || len(in.Secrets.TLSKey) == 0 {
		return nil, fmt.Errorf("no TLS certificate and key for %s in the secrets", n.Name)
	}
	c.ServerNames = p.ServerNames
	if hp := p.Publish.HTTPS; hp.IsValid() && hp.Port() != 443 {
		c.HTTPSPort = strconv.Itoa(int(hp.Port()))
	}
	// Upstreams come from the flows the roles imply, on the flow's
	// network: with a DMZ, that is the app and static nodes' DMZ address.
	// On a cluster a pool is one server, the tier's Service: the cluster
	// balances its connections over the tier's ready pods, whose number
	// and addresses change without the edge's config changing.
	for _, peer := range p.Peers(n) {
		if peer.Flow.Explicit {
			continue
		}
		host := in.peer(peer.Node, peer.Flow.Network)
		if host == "" {
			return nil, fmt.Errorf("%s has no address on the %s network", peer.Node.Name, peer.Flow.Network)
		}
		s := edgeServer{Name: peer.Node.Name, Addr: hostPort(host, peer.Flow.Port.Number)}
		if in.Cluster != nil {
			s.Name = peer.Node.Tier
			if slices.ContainsFunc(slices.Concat(c.App, c.Static), func(o edgeServer) bool { return o.Addr == s.Addr }) {
				continue
			}
		}
		switch peer.Node.Role {
		case spec.RoleApp:
			s.Out = in.Out[s.Name]
			c.App = append(c.App, s)
		case spec.RoleStatic:
			c.Static = append(c.Static, s)
		}
	}
	if len(c.App) == 0 {
		return nil, fmt.Errorf("no flow from %s reaches an app node, so it has nothing to proxy to", n.Name)
	}
	if !slices.ContainsFunc(c.App, func(s edgeServer) bool { return !s.Out }) {
		return nil, fmt.Errorf("every app node of %s's pool is out of it, so it has nothing to proxy to; leave one in", n.Name)
	}
	if len(c.Static) > 0 {
		c.Paths = newSitePaths(p.Site)
	}
	return c, nil
}

// edgeNginx renders nginx as the edge: TLS termination, static paths to the
// static pool and the rest to the app pool.
func edgeNginx(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newEdgeConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	conf, err := execTemplate("edge-nginx.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	files := []File{
		{Path: "nginx.conf", Mode: 0o644, Data: conf, OnChange: Reload},
		{Path: path.Join(SecretsDir, "edge.crt"), Mode: 0o400, Data: in.Secrets.TLSCert, OnChange: Reload},
		{Path: path.Join(SecretsDir, "edge.key"), Mode: 0o400, Data: in.Secrets.TLSKey, OnChange: Reload},
	}
	svc := service.Service{
		Name: "nginx",
		// -e: nginx opens its built-in error log before reading the config.
		Argv: []string{"nginx", "-c", in.Layout.conf("nginx.conf"), "-e", "stderr"},
		// On HUP the master starts workers with the new config and lets
		// the old ones finish their requests; the reload is done when
		// they have.
		Reload: &service.Reload{Signal: "HUP", Replaces: true},
		// The agent counts responses by status and times them from
		// the access log.
		AccessLog: c.Log,
	}
	svcs, err := withExporter(n, in, exporterDaemon{}, []service.Service{svc})
	return files, svcs, err
}

// edgeHAProxy renders haproxy as the edge, with the same routing as nginx
// and active health checks of the app pool.
func edgeHAProxy(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	c, err := newEdgeConf(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	conf, err := execTemplate("edge-haproxy.cfg.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	pem := slices.Concat(bytes.TrimRight(in.Secrets.TLSCert, "\n"), []byte("\n"), in.Secrets.TLSKey)
	master := path.Join(in.Layout.Run, "haproxy-master.sock")
	files := []File{
		{Path: "haproxy.cfg", Mode: 0o644, Data: conf, OnChange: Reload},
		{Path: path.Join(SecretsDir, "edge.pem"), Mode: 0o400, Data: pem, OnChange: Reload},
	}
	svc := service.Service{
		Name: "haproxy",
		// -W: a master process that, told to reload on its socket (-S),
		// starts a worker with the new config, hands it the listening
		// sockets (the stats socket exposes them) and lets the old worker
		// finish its connections. The socket, not USR2: the master
		// ignores a USR2 that comes before its loop runs.
		Argv:   []string{"haproxy", "-W", "-db", "-S", master, "-f", in.Layout.conf("haproxy.cfg")},
		Reload: &service.Reload{Socket: master, Command: "reload", Replaces: true},
	}
	return files, []service.Service{svc}, nil
}
