package render_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// testCluster is the cluster the tests render pods for.
var testCluster = &render.Cluster{Namespace: "shop", PodCIDR: netip.MustParsePrefix("10.244.0.0/16")}

// TestClusterHoldsNoPlanAddress: rendered for a cluster, no node's files
// or services name an address of the plan, which pods never get; peers
// are Service names, which Names lists, and only the edge, the app and
// the monitor resolve any.
func TestClusterHoldsNoPlanAddress(t *testing.T) {
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p := loadPlan(t, c)
			var addrs []string
			for _, n := range p.Nodes {
				for _, i := range n.Ifaces {
					addrs = append(addrs, regexp.QuoteMeta(i.Addr.String()))
				}
			}
			planAddr := regexp.MustCompile(`(^|[^0-9.])(` + strings.Join(addrs, "|") + `)($|[^0-9])`)
			nodes, err := render.Render(p, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p), Cluster: testCluster})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				pn := p.Node(n.Name)
				for _, f := range n.Files {
					if m := planAddr.FindString(string(f.Data)); m != "" {
						t.Errorf("%s/%s names the plan's address %s", n.Name, f.Path, strings.Trim(m, " :'\"\n\t"))
					}
				}
				for _, s := range n.Services {
					if m := planAddr.FindString(strings.Join(slices.Concat(s.Argv, s.Ready), " ")); m != "" {
						t.Errorf("%s's %s names the plan's address %s", n.Name, s.Name, m)
					}
				}
				var want []string
				for _, peer := range p.Peers(pn) {
					named := pn.Role == spec.RoleEdge && !peer.Flow.Explicit ||
						pn.Role == spec.RoleApp && (peer.Node.Role == spec.RoleDB || peer.Node.Role == spec.RoleCache || peer.Node.Role == spec.RoleMail) ||
						pn.Role == spec.RoleMonitor
					if name := peer.Node.Tier + ".shop.svc"; named && !slices.Contains(want, name) {
						want = append(want, name)
					}
				}
				slices.Sort(want)
				if got := slices.Sorted(slices.Values(n.Names)); !slices.Equal(got, want) {
					t.Errorf("%s resolves %v, want %v", n.Name, n.Names, want)
				}
				if slices.ContainsFunc(n.Files, func(f render.File) bool { return f.Path == "nftables.nft" || f.Path == "hosts" }) {
					t.Errorf("%s has a firewall or hosts file on a cluster", n.Name)
				}
			}
		})
	}
}

// runResolving runs a daemon's offline check in network and mount
// namespaces of its own, where binding any address works and /etc/hosts
// resolves names to the loopback, as the cluster's DNS would resolve
// them to Services.
func runResolving(t *testing.T, names []string, argv ...string) (string, error) {
	t.Helper()
	hosttest.RequireRoot(t) // for the namespaces
	hosts := filepath.Join(t.TempDir(), "hosts")
	data := "127.0.0.1\tlocalhost\n"
	for _, n := range names {
		data += "127.0.0.1\t" + n + "\n"
	}
	if err := os.WriteFile(hosts, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `mount --make-rprivate / && mount --bind "$0" /etc/hosts && ip link set lo up && exec "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, hosts}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("%s:\n%s", strings.Join(argv, " "), out)
	return string(out), err
}

// TestClusterConfigCheck runs each daemon's own offline check on the
// configs rendered for a cluster: nginx and haproxy at the edge, whose
// upstreams are Service names they resolve as they load; apache2 or
// nginx and php-fpm in the app; lighttpd or nginx in static. The edge's
// check must fail where the names do not resolve: it does look them up.
func TestClusterConfigCheck(t *testing.T) {
	requireTool(t, "ip")
	for _, c := range stackCases(t) {
		p := loadPlan(t, c)
		for _, role := range []string{spec.RoleEdge, spec.RoleApp, spec.RoleStatic} {
			n := p.Role(role)[0]
			t.Run(c+"/"+n.Name+"/"+n.Software, func(t *testing.T) {
				sec := testSecrets(p)
				if role == spec.RoleEdge {
					sec = tlsSecrets(t, p)
				}
				out, l := writeNodeOn(t, p, n.Name, sec, testCluster)
				var checks [][]string
				switch n.Role + "/" + n.Software {
				case "edge/nginx", "app/nginx", "static/nginx":
					checks = append(checks, []string{requireTool(t, "nginx"), "-t", "-c", filepath.Join(l.Conf, "nginx.conf"), "-e", "stderr"})
				case "edge/haproxy":
					checks = append(checks, []string{requireTool(t, "haproxy"), "-c", "-f", filepath.Join(l.Conf, "haproxy.cfg")})
				case "app/apache2":
					checks = append(checks, []string{requireTool(t, "apache2"), "-t", "-f", filepath.Join(l.Conf, "apache2.conf")})
				case "static/lighttpd":
					checks = append(checks, []string{requireTool(t, "lighttpd"), "-tt", "-f", filepath.Join(l.Conf, "lighttpd.conf")})
				default:
					t.Fatalf("no check for %s/%s", n.Role, n.Software)
				}
				if n.Role == spec.RoleApp {
					checks = append(checks, []string{requireTool(t, "php-fpm8.2"), "-t", "-y", filepath.Join(l.Conf, "php-fpm.conf")})
				}
				for _, argv := range checks {
					msg, err := runResolving(t, out.Names, argv...)
					if err != nil {
						t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, msg)
					}
					if strings.Contains(msg, "[warn]") || strings.Contains(msg, "WARNING") || strings.Contains(msg, "ALERT") {
						t.Errorf("%s warns:\n%s", argv[0], msg)
					}
				}
				if n.Role == spec.RoleEdge {
					if len(out.Names) == 0 {
						t.Fatalf("the edge resolves no names on a cluster")
					}
					if msg, err := runResolving(t, nil, checks[0]...); err == nil {
						t.Errorf("%s passes where %v do not resolve:\n%s", n.Software, out.Names, msg)
					}
				}
			})
		}
	}
}

// TestClusterMariaDBGrant starts MariaDB as rendered for a cluster in a
// network namespace with an address in the pod network, which no plan
// named, and one outside it. The server binds any address, so it answers
// on both; the site user logs in from the pod network's address and not
// from the other (a connection to a local address comes from it). The
// NetworkPolicies are the gate on a cluster; the grant admits the pod
// network.
func TestClusterMariaDBGrant(t *testing.T) {
	hosttest.RequireRoot(t)
	requireTool(t, "mariadbd")
	requireTool(t, "mariadb-install-db")
	client := requireTool(t, "mariadb")
	nsenter := requireTool(t, "nsenter")
	unshare := requireTool(t, "unshare")
	requireTool(t, "ip")
	p := loadPlan(t, "default")
	db := p.Role(spec.RoleDB)[0]
	n, l := writeNodeOn(t, p, db.Name, testSecrets(p), testCluster)
	logsOnFailure(t, l)
	if len(n.Names) != 0 {
		t.Errorf("the database resolves %v, but it names no peer", n.Names)
	}
	ownLayout(t, l, "mysql", "secrets/mariadb-init.sql")
	svc := n.Services[0]
	mustRun(t, svc.Setup...)

	const pod, outsider = "10.244.1.10", "10.99.0.30"
	d := startDaemon(t, append([]string{unshare, "--net", "--", "sh", "-ec",
		`ip link set lo up; for a in "$1" "$2"; do ip addr add "$a/32" dev lo; done; shift 2; exec "$@"`,
		"sh", pod, outsider}, svc.Argv...)...)
	login := func(from string) (string, error) {
		out, err := exec.Command(nsenter, "--net=/proc/"+fmt.Sprint(d.pid)+"/ns/net", "--",
			client, "--no-defaults", "-h", from, "-P", "3306",
			"-u", p.Site.DBUser, "-p"+testSecrets(p).DBPassword, "-N", "-B", "-e", "SELECT CURRENT_USER()", p.Site.DBName).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	d.waitFor(t, "mariadb letting a pod in", func() error {
		out, err := login(pod)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if want := p.Site.DBUser + "@10.244.0.0/255.255.0.0"; out != want {
			t.Fatalf("a pod logs in as %q, want %q", out, want)
		}
		return nil
	})
	if out, err := login(outsider); err == nil || !strings.Contains(out, "Access denied") && !strings.Contains(out, "is not allowed") {
		t.Errorf("from %s, outside the pod network: %v %s; want access denied", outsider, err, out)
	}
	// The agent's readiness check on a cluster: the loopback's port.
	if want := []string{"127.0.0.1:3306"}; !slices.Equal(svc.Ready, want) {
		t.Errorf("ready = %v, want %v", svc.Ready, want)
	}
	d.stop(t)
}
