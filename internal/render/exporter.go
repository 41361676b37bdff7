package render

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
)

// A node's role exporter runs in the node beside the daemon it reads, as
// catalog.MonitorAccount, which owns nothing there, and serves only on
// the address the plan gives it (n.Exporter.Addr), which only the
// monitor's flow reaches. It exists only in a stack with a monitor.

// exporterListen is where n's exporter serves, and the address the agent
// checks it on: its plan address, or on a cluster, where a pod's address
// is known only once it runs, any address (checked on the loopback).
func exporterListen(n *plan.Node, in Input) (listen, ready string) {
	a := n.Exporter.Addr
	if in.Cluster != nil {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), a.Port()).String(),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), a.Port()).String()
	}
	return a.String(), a.String()
}

// exporterDaemon is where an exporter reads its daemon. The web servers'
// exporters read the status server (n.Exporter.Status) and need none.
type exporterDaemon struct {
	Socket string // a database's local socket: its directory for PostgreSQL
	Addr   string // redis's host:port
	Port   int    // PostgreSQL's port, which names its socket
}

// exporterService runs n's role exporter; ok is false when n has none, or
// when the daemon serves its metrics itself (haproxy).
func exporterService(n *plan.Node, in Input, d exporterDaemon) (svc service.Service, ok bool, err error) {
	e := n.Exporter
	if e == nil || e.Package == "" {
		return service.Service{}, false, nil
	}
	listen, ready := exporterListen(n, in)
	as := []string{"setpriv", "--reuid=" + catalog.MonitorAccount, "--regid=" + catalog.MonitorAccount, "--init-groups", "--"}
	var argv []string
	switch e.Package {
	case "prometheus-nginx-exporter":
		// stub_status: requests and connections.
		argv = []string{e.Package,
			"-nginx.scrape-uri=http://" + e.Status.String() + "/stub_status",
			// nginx may start after it: it retries rather than exit.
			"-nginx.retries=30", "-nginx.retry-interval=1s",
			"-web.listen-address=" + listen}
	case "prometheus-apache-exporter":
		// mod_status: busy and idle workers, the scoreboard, uptime (with
		// ExtendedStatus off, no request or byte counters: see the template).
		argv = []string{e.Package,
			"--scrape_uri=http://" + e.Status.String() + "/server-status?auto",
			"--telemetry.address=" + listen, "--log.level=warn"}
	case "prometheus-mysqld-exporter":
		// It logs in over the local socket as the account it runs as
		// (unix_socket), which the server grants nothing: SHOW GLOBAL
		// STATUS and VARIABLES need no privilege. The collectors that
		// need PROCESS, which would show every session's queries, or
		// replication rights, are off.
		argv = []string{"env", "DATA_SOURCE_NAME=" + catalog.MonitorAccount + "@unix(" + d.Socket + ")/",
			e.Package, "--web.listen-address=" + listen, "--log.level=warn",
			"--no-collect.slave_status", "--no-collect.info_schema.innodb_cmp",
			"--no-collect.info_schema.innodb_cmpmem", "--no-collect.info_schema.query_response_time"}
	case "prometheus-postgres-exporter":
		// Peer authentication on the local socket: the server knows the
		// account the exporter runs as, and it needs no password.
		argv = []string{"env", "DATA_SOURCE_NAME=host=" + d.Socket + " port=" + strconv.Itoa(d.Port) +
			" user=" + catalog.MonitorAccount + " dbname=postgres sslmode=disable",
			e.Package, "--web.listen-address=" + listen, "--log.level=warn"}
	case "prometheus-redis-exporter":
		argv = []string{e.Package, "-redis.addr=redis://" + d.Addr, "-web.listen-address=" + listen}
	default:
		return service.Service{}, false, fmt.Errorf("no way to run exporter %s", e.Package)
	}
	return service.Service{
		Name:  strings.TrimPrefix(e.Package, "prometheus-"),
		Argv:  append(as, argv...),
		Ready: []string{ready},
	}, true, nil
}

// withExporter puts n's exporter, if it has one to run, before svcs: the
// daemon that faces the network stays last (see RenderNode).
func withExporter(n *plan.Node, in Input, d exporterDaemon, svcs []service.Service) ([]service.Service, error) {
	e, ok, err := exporterService(n, in, d)
	if err != nil || !ok {
		return svcs, err
	}
	return append([]service.Service{e}, svcs...), nil
}

// statsOf is where n's agent reads the daemon's figures, or nil: the plan's
// address, or on a cluster, where daemons bind any address, the loopback.
func statsOf(n *plan.Node, in Input) *service.Stats {
	s := n.Stats
	if s == nil {
		return nil
	}
	a := s.Addr
	if in.Cluster != nil {
		a = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), a.Port())
	}
	switch s.Format {
	case catalog.StatsPHPFPM:
		return &service.Stats{Format: s.Format, URL: "http://" + a.String() + catalog.StatusPathPHPFPM + "?json"}
	default:
		return &service.Stats{Format: s.Format, Addr: a.String()}
	}
}

// listenHost is where a daemon of the node that listens on a is reached
// from inside the node: a, or the loopback for a daemon that listens on
// any address (on a cluster).
func listenHost(a netip.AddrPort, in Input) string {
	if a.Addr().IsUnspecified() {
		return "127.0.0.1"
	}
	return a.Addr().String()
}
