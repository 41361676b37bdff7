package render_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// tlsSecrets returns testSecrets with a real, throwaway certificate and
// key, which daemons load when they check a config.
func tlsSecrets(t *testing.T, p *plan.Plan) render.Secrets {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: p.Domain},
		DNSNames:     []string{p.Domain, "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	s := testSecrets(p)
	s.TLSCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	s.TLSKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return s
}

// confBlocks returns every brace-delimited block of an nginx config whose
// opening line, trimmed, is head (e.g. "upstream app {").
func confBlocks(conf, head string) []string {
	var out []string
	lines := strings.Split(conf, "\n")
	for i, line := range lines {
		if strings.TrimSpace(line) != head {
			continue
		}
		depth := 0
		for j := i; j < len(lines); j++ {
			depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
			if depth == 0 {
				out = append(out, strings.Join(lines[i:j+1], "\n"))
				break
			}
		}
	}
	return out
}

// serverOn returns the nginx server block that listens on addr.
func serverOn(t *testing.T, conf, listen string) string {
	t.Helper()
	for _, b := range confBlocks(conf, "server {") {
		if strings.Contains(b, "listen "+listen+" ") {
			return b
		}
	}
	t.Fatalf("no server block listens on %s:\n%s", listen, conf)
	return ""
}

// haproxySection returns the lines of one haproxy section, e.g.
// "backend app".
func haproxySection(t *testing.T, conf, head string) string {
	t.Helper()
	var out []string
	in := false
	for _, line := range strings.Split(conf, "\n") {
		if line != "" && line[0] != '\t' && line[0] != '#' {
			in = line == head
			continue
		}
		if in {
			out = append(out, strings.TrimSpace(line))
		}
	}
	if !in && len(out) == 0 {
		t.Fatalf("no section %q in haproxy config:\n%s", head, conf)
	}
	return strings.Join(out, "\n")
}

// pools returns the addresses the edge must proxy to, per role, as the
// plan's flows say.
func pools(p *plan.Plan, edge *plan.Node) map[string][]string {
	out := map[string][]string{}
	for _, peer := range p.Peers(edge) {
		out[peer.Node.Role] = append(out[peer.Node.Role], netip.AddrPortFrom(peer.Node.Addr(peer.Flow.Network), uint16(peer.Flow.Port.Number)).String())
	}
	return out
}

func TestEdgeNginxCheck(t *testing.T) {
	nginx := requireTool(t, "nginx")
	for _, c := range stackCases(t) {
		for _, redirect := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/redirect=%v", c, redirect), func(t *testing.T) {
				p, edge := withSoftware(t, c, spec.RoleEdge, "nginx")
				p.Publish.Redirect = redirect
				sec := tlsSecrets(t, p)
				n, l := writeNode(t, p, edge.Name, sec)
				confPath := filepath.Join(l.Conf, "nginx.conf")
				if msg := runCheckBinding(t, nginx, "-t", "-c", confPath, "-e", "stderr"); strings.Contains(msg, "[warn]") {
					t.Errorf("nginx -t warns:\n%s", msg)
				}

				if len(n.Services) != 1 || !slices.Equal(n.Services[0].Argv, []string{"nginx", "-c", confPath, "-e", "stderr"}) {
					t.Errorf("services = %+v, want nginx -c %s -e stderr", n.Services, confPath)
				}
				for _, s := range []struct {
					path string
					data []byte
				}{{"secrets/edge.crt", sec.TLSCert}, {"secrets/edge.key", sec.TLSKey}} {
					f := fileOf(t, n, s.path)
					if f.Mode != 0o400 || !bytes.Equal(f.Data, s.data) {
						t.Errorf("%s: mode %o, %d bytes; want mode 400 and the secret's bytes", s.path, f.Mode, len(f.Data))
					}
				}
				conf := string(fileOf(t, n, "nginx.conf").Data)
				checkEdgeNginx(t, p, edge, conf, redirect)
			})
		}
	}
}

func checkEdgeNginx(t *testing.T, p *plan.Plan, edge *plan.Node, conf string, redirect bool) {
	t.Helper()
	pub := edge.Addr(plan.NetPublic).String()
	listens := regexp.MustCompile(`(?m)^\s*listen\s+(\S+)`).FindAllStringSubmatch(conf, -1)
	var got []string
	for _, m := range listens {
		got = append(got, m[1])
	}
	if want := []string{pub + ":80", pub + ":443"}; !slices.Equal(got, want) {
		t.Errorf("listens on %v, want only the public address %v", got, want)
	}

	want := pools(p, edge)
	up := confBlocks(conf, "upstream app {")
	if len(up) != 1 {
		t.Fatalf("want one upstream app, got %d", len(up))
	}
	servers := regexp.MustCompile(`(?m)^\s*server (\S+) max_fails=2 fail_timeout=10s;$`).FindAllStringSubmatch(up[0], -1)
	var addrs []string
	for _, m := range servers {
		addrs = append(addrs, m[1])
	}
	if !slices.Equal(addrs, want[spec.RoleApp]) || len(addrs) == 0 {
		t.Errorf("upstream app has %v, want every app node %v with max_fails", addrs, want[spec.RoleApp])
	}
	if !strings.Contains(up[0], "keepalive 32;") {
		t.Errorf("upstream app has no keepalive:\n%s", up[0])
	}
	for _, d := range []string{"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_next_upstream_tries 2;", "server_tokens off;"} {
		if !strings.Contains(conf, d) {
			t.Errorf("config lacks %q", d)
		}
	}
	if strings.Contains(conf, "X-Served-By") {
		t.Errorf("the edge must keep upstreams' X-Served-By, not hide or set it")
	}

	https := serverOn(t, conf, pub+":443")
	plain := serverOn(t, conf, pub+":80")
	staticBlock := confBlocks(conf, "upstream static {")
	if len(staticBlock) != 1 || !strings.Contains(staticBlock[0], "server "+want[spec.RoleStatic][0]+" ") {
		t.Errorf("upstream static does not hold the static node %v:\n%v", want[spec.RoleStatic], staticBlock)
	}
	for _, s := range p.Site.Static {
		if !strings.HasSuffix(s, "/") {
			continue
		}
		loc := confBlocks(https, fmt.Sprintf("location ^~ %q {", s))
		if len(loc) != 1 || !strings.Contains(loc[0], "proxy_pass http://static;") {
			t.Errorf("prefix %s does not go to static: %v", s, loc)
		}
	}
	// The extension location's regex, as nginx would match it.
	m := regexp.MustCompile(`location ~\* "([^"]+)" \{\n\s*proxy_pass http://static;`).FindStringSubmatch(https)
	if m == nil {
		t.Fatalf("no extension location goes to static:\n%s", https)
	}
	ext := regexp.MustCompile("(?i)" + m[1])
	for _, s := range p.Site.Static {
		if e, ok := strings.CutPrefix(s, "*"); ok && !ext.MatchString("/a/b"+strings.ToUpper(e)) {
			t.Errorf("%s does not match glob %s", m[1], s)
		}
	}
	if ext.MatchString("/index.php") || ext.MatchString("/app.css.php") {
		t.Errorf("%s sends PHP to static", m[1])
	}
	if loc := confBlocks(https, "location / {"); len(loc) != 1 || !strings.Contains(loc[0], "proxy_pass http://app;") {
		t.Errorf("the rest does not go to app: %v", loc)
	}

	if !strings.Contains(https, "Strict-Transport-Security") || strings.Contains(plain, "Strict-Transport-Security") {
		t.Errorf("HSTS must be on the https server only")
	}
	for _, h := range []string{"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy"} {
		for _, b := range []string{https, plain} {
			if !regexp.MustCompile(`add_header ` + h + ` "[^"]+" always;`).MatchString(b) {
				t.Errorf("a server lacks %s", h)
			}
		}
	}
	if !strings.Contains(https, "ssl_protocols TLSv1.2 TLSv1.3;") && !strings.Contains(conf, "ssl_protocols TLSv1.2 TLSv1.3;") {
		t.Errorf("TLS protocols are not limited to 1.2 and 1.3")
	}

	redirects := strings.Contains(plain, "return 301 https://$host:"+fmt.Sprint(p.Publish.HTTPS.Port())+"$request_uri;")
	proxies := strings.Contains(plain, "proxy_pass")
	if redirect != redirects || redirect == proxies {
		t.Errorf("redirect=%v but port 80 redirects=%v, proxies=%v:\n%s", redirect, redirects, proxies, plain)
	}
}

func TestEdgeHAProxyCheck(t *testing.T) {
	haproxy := requireTool(t, "haproxy")
	for _, c := range stackCases(t) {
		for _, redirect := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/redirect=%v", c, redirect), func(t *testing.T) {
				p, edge := withSoftware(t, c, spec.RoleEdge, "haproxy")
				p.Publish.Redirect = redirect
				sec := tlsSecrets(t, p)
				n, l := writeNode(t, p, edge.Name, sec)
				confPath := filepath.Join(l.Conf, "haproxy.cfg")
				if msg := mustRun(t, haproxy, "-c", "-f", confPath); strings.Contains(msg, "WARNING") || strings.Contains(msg, "ALERT") {
					t.Errorf("haproxy -c warns:\n%s", msg)
				}

				master := filepath.Join(l.Run, "haproxy-master.sock")
				if len(n.Services) != 1 || !slices.Equal(n.Services[0].Argv, []string{"haproxy", "-W", "-db", "-S", master, "-f", confPath}) ||
					n.Services[0].Reload == nil || n.Services[0].Reload.Socket != master || n.Services[0].Reload.Command != "reload" || n.Services[0].Reload.Signal != "" {
					t.Errorf("services = %+v, want haproxy -W -db -S %s -f %s, reloading on its master socket", n.Services, master, confPath)
				}
				f := fileOf(t, n, "secrets/edge.pem")
				if f.Mode != 0o400 || !bytes.Contains(f.Data, sec.TLSCert) || !bytes.HasSuffix(f.Data, sec.TLSKey) {
					t.Errorf("secrets/edge.pem: mode %o; want mode 400, the certificate then the key", f.Mode)
				}
				conf := string(fileOf(t, n, "haproxy.cfg").Data)
				checkEdgeHAProxy(t, p, edge, conf, redirect)
			})
		}
	}
}

func checkEdgeHAProxy(t *testing.T, p *plan.Plan, edge *plan.Node, conf string, redirect bool) {
	t.Helper()
	pub := edge.Addr(plan.NetPublic).String()
	binds := regexp.MustCompile(`(?m)^\s*bind\s+(\S+)`).FindAllStringSubmatch(conf, -1)
	var got []string
	for _, m := range binds {
		got = append(got, m[1])
	}
	if want := []string{pub + ":80", pub + ":443"}; !slices.Equal(got, want) {
		t.Errorf("binds %v, want only the public address %v", got, want)
	}
	want := pools(p, edge)
	for _, role := range []string{spec.RoleApp, spec.RoleStatic} {
		be := haproxySection(t, conf, "backend "+role)
		servers := regexp.MustCompile(`(?m)^server \S+ (\S+) check$`).FindAllStringSubmatch(be, -1)
		var addrs []string
		for _, m := range servers {
			addrs = append(addrs, m[1])
		}
		if !slices.Equal(addrs, want[role]) || len(addrs) == 0 {
			t.Errorf("backend %s has %v, want every %s node %v with check", role, addrs, role, want[role])
		}
		for _, d := range []string{"balance roundrobin", "http-reuse safe", "http-check send meth GET uri /healthz"} {
			if !strings.Contains(be, d) {
				t.Errorf("backend %s lacks %q", role, d)
			}
		}
	}
	fe := haproxySection(t, conf, "frontend web")
	var prefixes, exts []string
	for _, s := range p.Site.Static {
		if e, ok := strings.CutPrefix(s, "*"); ok {
			exts = append(exts, "'"+e+"'")
		} else {
			prefixes = append(prefixes, "'"+s+"'")
		}
	}
	slices.Sort(exts)
	for _, acl := range []string{
		"acl static_path var(txn.path) -m beg " + strings.Join(prefixes, " "),
		"acl static_ext var(txn.path) -m end -i " + strings.Join(exts, " "),
		"use_backend static if static_path",
		"use_backend static if static_ext",
		"default_backend app",
	} {
		if !strings.Contains(fe, acl+"\n") {
			t.Errorf("frontend lacks %q:\n%s", acl, fe)
		}
	}
	if !strings.Contains(fe, `Strict-Transport-Security "max-age=31536000" if { ssl_fc }`) {
		t.Errorf("HSTS is not limited to https")
	}
	redirects := strings.Contains(fe, fmt.Sprintf("http-request redirect code 301 location https://%%[req.hdr(host),field(1,:)]:%d%%[capture.req.uri] if !{ ssl_fc }", p.Publish.HTTPS.Port()))
	if redirect != redirects {
		t.Errorf("redirect=%v but the frontend redirects=%v", redirect, redirects)
	}
}

// TestEdgeWithoutStatic renders edges for a stack with no static tier:
// every path goes to app, and there is no static pool to fail on.
func TestEdgeWithoutStatic(t *testing.T) {
	src := "tiers:\n  edge: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 2}\n"
	st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sw := range []string{"nginx", "haproxy"} {
		t.Run(sw, func(t *testing.T) {
			tool := requireTool(t, sw)
			st.ByRole(spec.RoleEdge).Software = sw
			p, err := plan.Build(st)
			if err != nil {
				t.Fatal(err)
			}
			edge := p.Role(spec.RoleEdge)[0]
			n, l := writeNode(t, p, edge.Name, tlsSecrets(t, p))
			var conf string
			if sw == "nginx" {
				runCheckBinding(t, tool, "-t", "-c", filepath.Join(l.Conf, "nginx.conf"), "-e", "stderr")
				conf = string(fileOf(t, n, "nginx.conf").Data)
			} else {
				mustRun(t, tool, "-c", "-f", filepath.Join(l.Conf, "haproxy.cfg"))
				conf = string(fileOf(t, n, "haproxy.cfg").Data)
			}
			if strings.Contains(conf, "backend static") || strings.Contains(conf, "http://static") {
				t.Errorf("a stack without a static tier routes to static:\n%s", conf)
			}
			if !strings.Contains(conf, "http://app;") && !strings.Contains(conf, "default_backend app") {
				t.Errorf("nothing goes to app:\n%s", conf)
			}
		})
	}
}

// TestEdgeNeedsTLS checks that an edge without a certificate is an error,
// not a config that fails when the daemon starts.
func TestEdgeNeedsTLS(t *testing.T) {
	for _, sw := range []string{"nginx", "haproxy"} {
		p, edge := withSoftware(t, "default", spec.RoleEdge, sw)
		sec := testSecrets(p)
		sec.TLSKey = nil
		if _, err := render.RenderNode(p, edge, render.Input{Layout: render.DefaultLayout(), Secrets: sec}); err == nil {
			t.Errorf("%s: rendered an edge without a TLS key", sw)
		}
	}
}

// TestEdgeOut renders each edge with app-1 out of its pool, as a drain or
// a release switch does, and runs the daemon's check on it: app-1 is still
// a server of the app pool, marked so that it gets no new requests, and
// nothing else changes, not even for the other nodes Out names. An edge
// with every app node out is an error, not a config that answers nothing.
func TestEdgeOut(t *testing.T) {
	for _, c := range stackCases(t) {
		for _, sw := range []string{"nginx", "haproxy"} {
			t.Run(c+"/"+sw, func(t *testing.T) {
				tool := requireTool(t, sw)
				p, edge := withSoftware(t, c, spec.RoleEdge, sw)
				sec := tlsSecrets(t, p)
				in, l := writeNode(t, p, edge.Name, sec)
				out := map[string]bool{"app-1": true, "static": true, "db": true}
				n, err := render.RenderNode(p, edge, render.Input{Layout: l, Secrets: sec, Out: out})
				if err != nil {
					t.Fatal(err)
				}
				writeFiles(t, l, n)
				var app1 netip.AddrPort
				for _, peer := range p.Peers(edge) {
					if peer.Node.Name == "app-1" {
						app1 = netip.AddrPortFrom(peer.Node.Addr(peer.Flow.Network), uint16(peer.Flow.Port.Number))
					}
				}
				conf, inLine, outLine := map[string]string{"nginx": "nginx.conf", "haproxy": "haproxy.cfg"}[sw], "", ""
				switch sw {
				case "nginx":
					if msg := runCheckBinding(t, tool, "-t", "-c", filepath.Join(l.Conf, conf), "-e", "stderr"); strings.Contains(msg, "[warn]") {
						t.Errorf("nginx -t warns:\n%s", msg)
					}
					inLine = "server " + app1.String() + " max_fails=2 fail_timeout=10s;"
					outLine = "server " + app1.String() + " max_fails=2 fail_timeout=10s down;"
				case "haproxy":
					if msg := mustRun(t, tool, "-c", "-f", filepath.Join(l.Conf, conf)); strings.Contains(msg, "WARNING") || strings.Contains(msg, "ALERT") {
						t.Errorf("haproxy -c warns:\n%s", msg)
					}
					inLine = "server app-1 " + app1.String() + " check"
					outLine = "server app-1 " + app1.String() + " check disabled"
				}
				was := strings.Split(string(fileOf(t, in, conf).Data), "\n")
				is := strings.Split(string(fileOf(t, n, conf).Data), "\n")
				if len(was) != len(is) {
					t.Fatalf("%s has %d lines with app-1 out, %d without", conf, len(is), len(was))
				}
				changed := 0
				for i := range was {
					if was[i] == is[i] {
						continue
					}
					changed++
					if strings.TrimSpace(was[i]) != inLine || strings.TrimSpace(is[i]) != outLine {
						t.Errorf("%s line %d: %q became %q; want only %q to become %q", conf, i+1, was[i], is[i], inLine, outLine)
					}
				}
				if changed != 1 {
					t.Errorf("%s: %d lines changed with app-1 out, want 1", conf, changed)
				}

				all := map[string]bool{}
				for _, a := range p.Role(spec.RoleApp) {
					all[a.Name] = true
				}
				if _, err := render.RenderNode(p, edge, render.Input{Layout: l, Secrets: sec, Out: all}); err == nil {
					t.Errorf("rendered an edge with every app node out of its pool")
				}
			})
		}
	}
}

// TestEdgeOutGolden compares each test stack's edge, rendered with app-2
// out of its pool, with testdata/golden/out/STACK. Run with -update to
// rewrite them.
func TestEdgeOutGolden(t *testing.T) {
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p := loadPlan(t, c)
			edge := p.Role(spec.RoleEdge)[0]
			n, err := render.RenderNode(p, edge, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p), Out: map[string]bool{"app-2": true}})
			if err != nil {
				t.Fatal(err)
			}
			conf := map[string]string{"nginx": "nginx.conf", "haproxy": "haproxy.cfg"}[edge.Software]
			golden(t, filepath.Join("testdata", "golden", "out", c, conf), fileOf(t, n, conf).Data)
		})
	}
}

// fakeTier serves HTTP for the nodes of a tier, on their (loopback)
// addresses, answering with the node's name in X-Served-By and, in the
// body, the request's target as it arrived and its decoded path. It returns
// a function per node that stops its server.
func fakeTier(t *testing.T, p *plan.Plan, edge *plan.Node, role string) map[string]func() {
	t.Helper()
	stops := map[string]func(){}
	for _, peer := range p.Peers(edge) {
		if peer.Node.Role != role {
			continue
		}
		name := peer.Node.Name
		addr := netip.AddrPortFrom(peer.Node.Addr(peer.Flow.Network), uint16(peer.Flow.Port.Number))
		l, err := net.Listen("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", name)
			w.Header().Set("X-Frame-Options", "DENY") // the edge's value must win
			fmt.Fprintf(w, "uri=%s path=%s xff=%s proto=%s\nhost=%s xfhost=%s xfport=%s\n", r.RequestURI, r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
				r.Host, r.Header.Values("X-Forwarded-Host"), r.Header.Values("X-Forwarded-Port"))
		})}
		go srv.Serve(l)
		stops[name] = func() { srv.Close() }
		t.Cleanup(func() { srv.Close() })
	}
	return stops
}

// TestEdgeLive runs each edge daemon on loopback addresses in front of fake
// app and static nodes, and checks routing, headers, TLS, failover and the
// redirect with real requests.
func TestEdgeLive(t *testing.T) {
	cases := []struct {
		stack, software string
		net             int
	}{{"default", "nginx", 1}, {"alt", "haproxy", 2}, {"alt", "nginx", 3}, {"default", "haproxy", 4}}
	for _, c := range cases {
		for _, redirect := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/%s/redirect=%v", c.stack, c.software, redirect), func(t *testing.T) {
				r := 0
				if redirect {
					r = 1
				}
				e := startEdge(t, c.stack, c.software, fmt.Sprintf("127.77.%d.", c.net*2+r), redirect)
				checkEdgeLive(t, e.plan, e.pub, e.secrets, e.apps, redirect)
			})
		}
	}
}

// liveEdge is an edge node that startEdge runs on loopback.
type liveEdge struct {
	plan    *plan.Plan
	node    *plan.Node // the edge
	pub     string     // the edge's public address
	secrets render.Secrets
	apps    map[string]func() // stops one fake app node
	layout  render.Layout
	daemon  *daemon
	service service.Service // as rendered
}

// startEdge renders stack's edge as software and runs it until the test
// ends, on loopback addresses that begin with base ("127.77.2."): the edge
// on base+"1", its peers from base+"10" on, each served by fakeTier.
func startEdge(t *testing.T, stack, software, base string, redirect bool) liveEdge {
	t.Helper()
	hosttest.RequireRoot(t) // to bind ports 80 and 443
	tool := requireTool(t, software)
	p, edge := withSoftware(t, stack, spec.RoleEdge, software)
	p.Publish.Redirect = redirect
	pub := base + "1"
	for _, port := range []string{"80", "443"} {
		l, err := net.Listen("tcp", net.JoinHostPort(pub, port))
		hosttest.Require(t, err == nil, "%s:%s free to bind (stop what listens there): %v", pub, port, err)
		l.Close()
	}
	moveToLoopback(p, edge, plan.NetPublic, pub)
	for i, peer := range p.Peers(edge) {
		moveToLoopback(p, peer.Node, peer.Flow.Network, fmt.Sprintf("%s%d", base, 10+i))
	}
	port := freePort(t, base+"10")
	for i := range p.Flows {
		if f := &p.Flows[i]; f.From == edge.Tier {
			f.Port.Number = port
		}
	}
	apps := fakeTier(t, p, edge, spec.RoleApp)
	fakeTier(t, p, edge, spec.RoleStatic)

	sec := tlsSecrets(t, p)
	n, l := writeNode(t, p, edge.Name, sec)
	// The daemon runs as the node agent would run it.
	svc := n.Services[0]
	d := startDaemon(t, append([]string{tool}, svc.Argv[1:]...)...)
	d.waitDial(t, pub+":80")
	d.waitDial(t, pub+":443")
	return liveEdge{plan: p, node: edge, pub: pub, secrets: sec, apps: apps, layout: l, daemon: d, service: svc}
}

func checkEdgeLive(t *testing.T, p *plan.Plan, pub string, sec render.Secrets, apps map[string]func(), redirect bool) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(sec.TLSCert)
	client := &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "localhost"},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(url string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
			} else {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	https := "https://" + pub
	if redirect {
		resp, _ := get("http://"+pub+"/shop/cart?id=7", "Host", "visitor.test:8080")
		want := fmt.Sprintf("https://visitor.test:%d/shop/cart?id=7", p.Publish.HTTPS.Port())
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
			t.Errorf("port 80 answered %d Location %q, want 301 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("the redirect lacks the security headers")
		}
	} else {
		resp, body := get("http://" + pub + "/index.php")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "app-") || !strings.Contains(body, "proto=http\n") {
			t.Errorf("plain http /index.php: %d by %q: %s", resp.StatusCode, resp.Header.Get("X-Served-By"), body)
		}
		if resp.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("HSTS sent over plain http")
		}
	}

	routes := map[string]string{"/": "app-", "/index.php": "app-", "/healthz": "app-"}
	for _, s := range p.Site.Static {
		if e, ok := strings.CutPrefix(s, "*"); ok {
			routes["/deep/dir/file"+strings.ToUpper(e)] = "static"
			routes["/file"+e+".php"] = "app-"
		} else {
			// A static prefix wins over PHP, but PHP under a writable
			// directory goes nowhere (TestEdgeWritableNeverReachesApp).
			if !slices.ContainsFunc(p.Site.Writable, func(w string) bool { return strings.HasPrefix(s, "/"+w+"/") }) {
				routes[s+"x.php"] = "static"
			}
			routes[s+"img/a.png"] = "static"
		}
	}
	for path, want := range routes {
		resp, body := get(https+path, "X-Forwarded-For", "6.6.6.6")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("X-Served-By"), want) {
			t.Errorf("%s: %d served by %q, want %s*", path, resp.StatusCode, resp.Header.Get("X-Served-By"), want)
		}
		if strings.Contains(body, "6.6.6.6") || !strings.Contains(body, "proto=https\n") {
			t.Errorf("%s: upstream saw %q; want the visitor's real address and https", path, body)
		}
		for h, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN", "Strict-Transport-Security": "max-age=31536000"} {
			if got := resp.Header.Values(h); len(got) != 1 || got[0] != v {
				t.Errorf("%s: %s = %q, want exactly %q", path, h, got, v)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: Content-Security-Policy = %q", path, csp)
		}
	}

	// Host goes up as the visitor sent it, port and all, whatever the
	// published port; X-Forwarded-Host and -Port say the same, and what a
	// visitor claimed in them is replaced.
	for _, c := range []struct{ url, host, want string }{
		{https + "/", "visitor.test:19140", "host=visitor.test:19140 xfhost=[visitor.test:19140] xfport=[19140]"},
		{https + "/", "visitor.test", "host=visitor.test xfhost=[visitor.test] xfport=[443]"},
		{https + "/", "[::1]:8443", "host=[::1]:8443 xfhost=[[::1]:8443] xfport=[8443]"},
		{"http://" + pub + "/", "127.0.0.1:19140", "host=127.0.0.1:19140 xfhost=[127.0.0.1:19140] xfport=[19140]"},
		{"http://" + pub + "/", "localhost", "host=localhost xfhost=[localhost] xfport=[80]"},
	} {
		if redirect && strings.HasPrefix(c.url, "http:") {
			continue
		}
		_, body := get(c.url, "Host", c.host, "X-Forwarded-Host", "evil.test", "X-Forwarded-Port", "1")
		if !strings.Contains(body, c.want+"\n") {
			t.Errorf("%s with Host %s: upstream saw %q, want %q", c.url, c.host, body, c.want)
		}
	}

	seen := map[string]bool{}
	for range 2 * len(apps) {
		resp, _ := get(https + "/")
		seen[resp.Header.Get("X-Served-By")] = true
	}
	if len(seen) != len(apps) {
		t.Errorf("requests were served by %v, want all %d app nodes", seen, len(apps))
	}

	// One app node dies: every request still succeeds.
	apps["app-1"]()
	for i := range 3 * len(apps) {
		resp, _ := get(https + "/")
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") == "app-1" {
			t.Errorf("request %d after app-1 died: %d from %q", i, resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	}

	old := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
	}}}
	if resp, err := old.Get(https + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("the edge accepted TLS 1.1")
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("TLS 1.1 probe: %v", err)
	}
}

// TestEdgeReloadUnderLoad shrinks the app pool of a running edge, as a
// scale-down does, or leaves a node out of it (Input.Out), as a drain
// does, by rewriting its config and sending the reload signal its service
// names, while clients on keep-alive connections send requests without
// pause. Not one request may fail, and the removed node must stop getting
// new ones.
func TestEdgeReloadUnderLoad(t *testing.T) {
	cases := []struct{ software, how string }{{"nginx", "removed"}, {"haproxy", "removed"}, {"nginx", "out"}, {"haproxy", "out"}}
	for i, c := range cases {
		t.Run(c.software+"/"+c.how, func(t *testing.T) {
			e := startEdge(t, "default", c.software, fmt.Sprintf("127.77.%d.", 30+i), false)
			if e.service.Reload == nil {
				t.Fatalf("the edge's service %+v cannot reload", e.service)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(e.secrets.TLSCert)
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"},
			}}
			var (
				mu       sync.Mutex
				total    int
				failures []string
				last     []string // the last servers, newest last
			)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := client.Get("https://" + e.pub + "/")
						mu.Lock()
						total++
						if err != nil {
							failures = append(failures, err.Error())
						} else {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != 200 {
								failures = append(failures, resp.Status)
							}
							last = append(last, resp.Header.Get("X-Served-By"))
							if len(last) > 40 {
								last = last[1:]
							}
						}
						mu.Unlock()
					}
				})
			}
			hosttest.Eventually(t, waitDeadline, "load on both app nodes", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return slices.Contains(last, "app-1") && slices.Contains(last, "app-2")
			})

			var n render.Node
			switch c.how {
			case "removed":
				// The plan without app-2, indexed afresh as a saved plan is.
				cut := *e.plan
				cut.Nodes = slices.DeleteFunc(slices.Clone(e.plan.Nodes), func(n plan.Node) bool { return n.Name == "app-2" })
				data, err := json.Marshal(&cut)
				if err != nil {
					t.Fatal(err)
				}
				smaller, err := plan.Decode(data)
				if err != nil {
					t.Fatal(err)
				}
				n, err = render.RenderNode(smaller, smaller.Node(e.node.Name), render.Input{Layout: e.layout, Secrets: e.secrets})
				if err != nil {
					t.Fatal(err)
				}
			case "out":
				var err error
				n, err = render.RenderNode(e.plan, e.node, render.Input{Layout: e.layout, Secrets: e.secrets, Out: map[string]bool{"app-2": true}})
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range n.Files {
				if f.OnChange == render.Restart {
					t.Errorf("%s changes need a restart; an edge must reload them", f.Path)
				}
			}
			writeFiles(t, e.layout, n)
			reload(t, e.daemon, e.service.Reload)
			hosttest.Eventually(t, waitDeadline, "app-2 out of the pool", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(last) == 40 && !slices.Contains(last, "app-2")
			})
			close(stop)
			wg.Wait()
			select {
			case <-e.daemon.done:
				t.Fatalf("the edge exited on reload: %v\n%s", e.daemon.err, e.daemon.out)
			default:
			}
			if len(failures) > 0 {
				t.Errorf("%d of %d requests failed across the reload: %q", len(failures), total, failures[:min(len(failures), 5)])
			}
			t.Logf("%d requests, %d failed", total, len(failures))
		})
	}
}

// reload does what the node agent does for r: the signal to the daemon,
// or the command to its socket once it listens, reading the reply to its
// end.
func reload(t *testing.T, d *daemon, r *service.Reload) {
	t.Helper()
	if r.Signal != "" {
		sig := map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}[r.Signal]
		if err := syscall.Kill(d.pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	if r.Socket != "" {
		// As the agent does: the daemon may not listen yet.
		var c net.Conn
		d.waitFor(t, "listener on "+r.Socket, func() (err error) {
			c, err = net.DialTimeout("unix", r.Socket, time.Second)
			return err
		})
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitDeadline))
		if _, err := io.WriteString(c, r.Command+"\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(c); err != nil {
			t.Fatal(err)
		}
	}
}
