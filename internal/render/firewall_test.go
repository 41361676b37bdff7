package render_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// TestNftablesCheck runs `nft -c -f` on every node's ruleset of every test
// stack, inside a throwaway network namespace so the host's own ruleset is
// neither read nor touched.
func TestNftablesCheck(t *testing.T) {
	nft := requireTool(t, "nft")
	unshare := requireTool(t, "unshare")
	for _, c := range stackCases(t) {
		p := loadPlan(t, c)
		for i := range p.Nodes {
			n := &p.Nodes[i]
			cmd := exec.Command(unshare, "--net", nft, "-c", "-f", "-")
			cmd.Stdin = strings.NewReader(string(render.Nftables(n)))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s/%s: nft -c: %v\n%s", c, n.Name, err, out)
			}
		}
	}
}

// TestHostNftablesCheck checks the host table of every test stack with
// nft -c, in a throwaway namespace.
func TestHostNftablesCheck(t *testing.T) {
	nft := requireTool(t, "nft")
	unshare := requireTool(t, "unshare")
	for _, c := range stackCases(t) {
		p := loadPlan(t, c)
		cmd := exec.Command(unshare, "--net", nft, "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(string(render.HostNftables(p)))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: nft -c: %v\n%s", c, err, out)
		}
	}
	host := string(render.HostNftables(loadPlan(t, "default")))
	for _, want := range []string{
		"iifname { \"demo-pri\", \"demo-pub\" } drop",
		"ip saddr @app_private ip daddr @db_private tcp dport 3306 ct state new accept",
		"ip daddr @edge_public tcp dport 443 ct state new accept",
		"elements = { 10.77.0.7, 10.77.0.8 }",
	} {
		if !strings.Contains(host, want) {
			t.Errorf("host table lacks %q:\n%s", want, host)
		}
	}
}

// TestHostEgress: the host forwards and masquerades the mail relay's flow
// to its smarthost, from the relay's address alone, and nothing else out.
func TestHostEgress(t *testing.T) {
	p := loadPlan(t, "alt")
	host := string(render.HostNftables(p))
	m := p.Node("mail").Addr("private")
	for _, want := range []string{
		fmt.Sprintf("iifname \"alt-pri\" ip saddr %s ip daddr 192.0.2.25 tcp dport 587 ct state new accept comment \"egress smarthost: mail -> 192.0.2.25:587\"", m),
		fmt.Sprintf("iifname \"alt-pri\" ip saddr %s ip daddr 192.0.2.25 tcp dport 587 masquerade", m),
	} {
		if strings.Count(host, want) != 1 {
			t.Errorf("host table has not exactly one %q:\n%s", want, host)
		}
	}
	if n := strings.Count(host, "masquerade"); n != 1 {
		t.Errorf("%d masquerade rules, want the egress's one", n)
	}
	if strings.Contains(string(render.HostNftables(loadPlan(t, "default"))), "masquerade") {
		t.Errorf("a stack without egress masquerades")
	}
}

// TestHostAntiSpoof: the host's bridge table binds every node interface
// to its own address, for IPv4 and ARP, and lets nodes speak nothing else.
func TestHostAntiSpoof(t *testing.T) {
	p := loadPlan(t, "default")
	host := string(render.HostNftables(p))
	i := p.Node("app-1").Ifaces[0]
	for _, want := range []string{
		"table bridge " + p.HostNFT + " {",
		"type filter hook prerouting priority -300; policy accept;",
		fmt.Sprintf("%q . %s", i.Host, i.Addr),
		"iifname @nodes ether type ip iifname . ip saddr != @own drop",
		"iifname @nodes ether type arp iifname . arp saddr ip != @own drop",
		"iifname @nodes ether type != { ip, arp } drop",
	} {
		if !strings.Contains(host, want) {
			t.Errorf("host table lacks %q:\n%s", want, host)
		}
	}
	// Every node interface is bound, and the outside's is not.
	for _, n := range p.Nodes {
		for _, i := range n.Ifaces {
			if !strings.Contains(host, fmt.Sprintf("%q . %s", i.Host, i.Addr)) {
				t.Errorf("%s's %s is not bound to %s", n.Name, i.Host, i.Addr)
			}
		}
	}
	if strings.Contains(host, fmt.Sprintf("%q . ", p.Outside.Iface.Host)) {
		t.Errorf("the outside namespace is bound to one address")
	}
}

// TestNftablesPolicy asserts the shape of a ruleset: default drop in every
// chain, loopback and established traffic allowed, and one rule per flow.
func TestNftablesPolicy(t *testing.T) {
	p := loadPlan(t, "default")
	db := string(render.Nftables(p.Node("db")))
	for _, want := range []string{
		"table inet bulkhead\ndelete table inet bulkhead\n",
		"type filter hook input priority filter; policy drop;",
		"type filter hook output priority filter; policy drop;",
		"type filter hook forward priority filter; policy drop;",
		"iifname \"lo\" accept",
		"ct state established,related accept",
		"elements = { 10.77.0.7, 10.77.0.8 }",
		"iifname \"private\" ip saddr @from_app tcp dport 3306 ct state new accept",
	} {
		if !strings.Contains(db, want) {
			t.Errorf("db ruleset lacks %q:\n%s", want, db)
		}
	}
	if strings.Count(db, " accept comment ") != 1 {
		t.Errorf("db ruleset should allow exactly one flow:\n%s", db)
	}
	edge := string(render.Nftables(p.Node("edge")))
	for _, want := range []string{
		"iifname \"public\" tcp dport 80 ct state new accept",
		"iifname \"public\" tcp dport 443 ct state new accept",
		"oifname \"private\" ip daddr @to_app tcp dport 80 ct state new accept",
		"oifname \"private\" ip daddr @to_static tcp dport 80 ct state new accept",
	} {
		if !strings.Contains(edge, want) {
			t.Errorf("edge ruleset lacks %q:\n%s", want, edge)
		}
	}
}

func TestHosts(t *testing.T) {
	p := loadPlan(t, "default")
	app := string(render.Hosts(p, p.Node("app-1")))
	for _, want := range []string{"10.77.0.7\tapp-1\n", "10.77.0.5\tdb\n", "10.77.0.4\tcache\n", "10.77.0.6\tstorage\n"} {
		if !strings.Contains(app, want) {
			t.Errorf("app-1 hosts lacks %q:\n%s", want, app)
		}
	}
	// static may reach only storage; it must not even resolve the db.
	static := string(render.Hosts(p, p.Node("static")))
	if strings.Contains(static, "db") || !strings.Contains(static, "storage") {
		t.Errorf("static hosts:\n%s", static)
	}
}

// TestHostPublish: the host's ip table rewrites each published address to
// the edge's, for the host's own clients always and for other machines'
// only on an address beyond loopback and never from the stack's bridges;
// a loopback client alone leaves with the gateway's address, and nothing
// on the public bridge may open a connection to the host's loopback.
func TestHostPublish(t *testing.T) {
	nft := requireTool(t, "nft")
	unshare := requireTool(t, "unshare")
	data, err := os.ReadFile(filepath.Join("testdata", "stacks", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	remote := planFrom(t, append(data, "publish:\n  http: 192.0.2.10:8080\n"...))
	for _, c := range []struct {
		name     string
		p        *plan.Plan
		want     []string
		wantNot  []string
		edgeGate bool
	}{
		{"loopback", loadPlan(t, "default"), []string{
			"table ip bulkhead_demo {",
			"type nat hook output priority -100; policy accept;\n\t\tip daddr 127.0.0.1 tcp dport 8080 dnat to 10.77.1.2:80 comment \"published 127.0.0.1:8080 -> edge\"\n",
			"ip daddr 127.0.0.1 tcp dport 8443 dnat to 10.77.1.2:443",
			"type nat hook prerouting priority -100; policy accept;\n\t}",
			"oifname \"demo-pub\" ip saddr 127.0.0.0/8 ct status dnat snat to 10.77.1.1 ",
			"iifname \"demo-pub\" ip daddr 127.0.0.0/8 ct direction original drop",
		}, nil, false},
		{"remote", remote, []string{
			"type nat hook output priority -100; policy accept;\n\t\tip daddr 192.0.2.10 tcp dport 8080 dnat to 10.77.1.2:80",
			"type nat hook prerouting priority -100; policy accept;\n\t\tiifname != { \"demo-pri\", \"demo-pub\" } ip daddr 192.0.2.10 tcp dport 8080 dnat to 10.77.1.2:80",
			"ip daddr 127.0.0.1 tcp dport 8443 dnat to 10.77.1.2:443",
		}, []string{"iifname != { \"demo-pri\", \"demo-pub\" } ip daddr 127.0.0.1"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			host := string(render.HostNftables(c.p))
			for _, want := range c.want {
				if !strings.Contains(host, want) {
					t.Errorf("host table lacks %q:\n%s", want, host)
				}
			}
			for _, no := range c.wantNot {
				if strings.Contains(host, no) {
					t.Errorf("host table has %q:\n%s", no, host)
				}
			}
			cmd := exec.Command(unshare, "--net", nft, "-c", "-f", "-")
			cmd.Stdin = strings.NewReader(host)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("nft -c: %v\n%s", err, out)
			}
			if got := c.p.Node("edge").Gateway.IsValid(); got != c.edgeGate {
				t.Errorf("edge has a default route: %v, want %v", got, c.edgeGate)
			}
		})
	}
}
