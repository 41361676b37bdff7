package kube_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/kube"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// visitor stands for the internet: an address outside every pod network.
const visitor = "203.0.113.7"

// build plans a stack file's text, with storage over protocol when the
// file leaves it to auto.
func build(t testing.TB, src, protocol string) *plan.Plan {
	t.Helper()
	st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.ByRole(spec.RoleStorage); s != nil && s.Protocol == spec.ProtocolAuto {
		s.Protocol = protocol
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proofStacks are the stacks whose policies must equal their matrix: the
// default, a DMZ, 100 app nodes, every alternative software of every
// role, and extra flows.
func proofStacks(t testing.TB) map[string]*plan.Plan {
	out := map[string]*plan.Plan{
		"default":     build(t, "", spec.ProtocolSFTP),
		"dmz":         build(t, "networks:\n  dmz: 10.77.2.0/24\n", spec.ProtocolSFTP),
		"app-x100":    build(t, "networks:\n  private: 10.80.0.0/23\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: 100\n", spec.ProtocolSFTP),
		"nfs":         build(t, "tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: nfs}\n  app: {replicas: 2}\n", spec.ProtocolNFS),
		"extra-flows": build(t, "flows:\n  - {from: edge, to: db, port: 3306}\n  - {from: static, to: cache, port: 11211}\n  - {from: app, to: edge, port: 8080}\n  - {from: db, to: cache, port: 53, proto: udp}\n", spec.ProtocolSFTP),
	}
	for _, role := range spec.Roles {
		if role == spec.RoleStorage {
			continue // its choices are the protocols, above
		}
		for _, sw := range catalog.Softwares(role)[1:] {
			var src strings.Builder
			src.WriteString("tiers:\n")
			for _, r := range spec.Roles {
				fmt.Fprintf(&src, "  %s: {", r)
				if r == spec.RoleApp {
					src.WriteString("replicas: 2, ")
				}
				if r == role {
					fmt.Fprintf(&src, "software: %s", sw)
				}
				src.WriteString("}\n")
			}
			out[role+"-"+sw] = build(t, strings.ReplaceAll(src.String(), ", }", "}"), spec.ProtocolSFTP)
		}
	}
	return out
}

// exported builds p's export with the test secrets: its policies, and the
// tiers that resolve names.
func exported(t testing.TB, p *plan.Plan) *kube.Export {
	t.Helper()
	e, err := kube.Build(p, kube.Options{Tag: "v0.1.0", Secrets: testSecrets(p)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// engine is cyclonus's policy matcher loaded with a set of policies, and
// the pods of a plan, each with an address in the pod network, and the
// cluster's DNS pod.
type engine struct {
	policy *matcher.Policy
	ns     string
	pods   map[string]*matcher.TrafficPeer
	dns    *matcher.TrafficPeer
}

// dnsPorts are the cells of the DNS flow: port 53 over UDP and TCP.
var dnsPorts = []plan.Port{{Proto: "udp", Number: kube.DNSPort}, {Proto: "tcp", Number: kube.DNSPort}}

// kubePod is a pod of another namespace with the given labels.
func kubePod(ns, addr string, labels map[string]string) *matcher.TrafficPeer {
	return &matcher.TrafficPeer{IP: addr, Internal: &matcher.InternalPeer{
		Namespace: ns, NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns}, PodLabels: labels}}
}

func newEngine(t testing.TB, p *plan.Plan, objs []kube.Object) *engine {
	t.Helper()
	var pols []*networkingv1.NetworkPolicy
	for _, o := range objs {
		np, ok := o.Obj.(*networkingv1.NetworkPolicy)
		if !ok {
			t.Fatalf("%s is a %T, not a NetworkPolicy", o.File, o.Obj)
		}
		pols = append(pols, np)
	}
	e := &engine{policy: matcher.BuildNetworkPolicies(false, pols), ns: "bulkhead-" + p.Stack, pods: map[string]*matcher.TrafficPeer{},
		dns: kubePod(kube.DNSNamespace, "10.244.250.10", map[string]string{kube.DNSLabel: kube.DNSApp})}
	addr := kube.DefaultPodCIDR.Addr()
	for _, n := range p.Nodes {
		addr = addr.Next()
		e.pods[n.Name] = e.peer(n.Tier, n.Role, kube.ComponentNode, addr)
	}
	return e
}

func (e *engine) peer(tier, role, component string, addr netip.Addr) *matcher.TrafficPeer {
	return &matcher.TrafficPeer{IP: addr.String(), Internal: &matcher.InternalPeer{
		Namespace:       e.ns,
		NamespaceLabels: map[string]string{corev1.LabelMetadataName: e.ns},
		PodLabels:       map[string]string{kube.LabelTier: tier, kube.LabelRole: role, kube.LabelComponent: component},
	}}
}

func (e *engine) source(name string) *matcher.TrafficPeer {
	if name == spec.Outside {
		return &matcher.TrafficPeer{IP: visitor}
	}
	return e.pods[name]
}

func (e *engine) allowed(from, to *matcher.TrafficPeer, port plan.Port) bool {
	proto := corev1.ProtocolTCP
	if port.Proto == "udp" {
		proto = corev1.ProtocolUDP
	}
	return e.policy.IsTrafficAllowed(&matcher.Traffic{Source: from, Destination: to, ResolvedPort: port.Number, Protocol: proto}).IsAllowed()
}

// differences lists every cell of p's matrix, every node's cell to the
// internet, and every node's cell to the cluster's DNS pod, on which the
// engine's verdict is not the plan's: the matrix, plus DNS for the tiers
// of resolvers alone, on port 53 alone.
func (e *engine) differences(p *plan.Plan, resolvers []string) []string {
	var out []string
	for _, c := range p.Matrix.Cells() {
		if got := e.allowed(e.source(c.From), e.pods[c.To], c.Port); got != c.Allow {
			out = append(out, fmt.Sprintf("%s -> %s %s/%d: policies say %v, plan says %v", c.From, c.To, c.Port.Proto, c.Port.Number, got, c.Allow))
		}
	}
	// No node has a route to the internet: the column the matrix leaves
	// out because the plan denies all of it.
	for _, n := range p.Nodes {
		for _, port := range p.Matrix.Ports {
			if e.allowed(e.pods[n.Name], &matcher.TrafficPeer{IP: visitor}, port) {
				out = append(out, fmt.Sprintf("%s -> the internet %s/%d: policies allow it, plan denies it", n.Name, port.Proto, port.Number))
			}
		}
		for _, port := range append(slices.Clone(dnsPorts), p.Matrix.Ports...) {
			want := slices.Contains(resolvers, n.Tier) && slices.Contains(dnsPorts, port)
			if got := e.allowed(e.pods[n.Name], e.dns, port); got != want {
				out = append(out, fmt.Sprintf("%s -> DNS %s/%d: policies say %v, want %v", n.Name, port.Proto, port.Number, got, want))
			}
		}
	}
	return out
}

// TestPoliciesEqualMatrix: for every cell of every proof stack's matrix,
// cyclonus's verdict on the exported NetworkPolicies is the plan's.
func TestPoliciesEqualMatrix(t *testing.T) {
	for name, p := range proofStacks(t) {
		t.Run(name, func(t *testing.T) {
			x := exported(t, p)
			e := newEngine(t, p, x.Policies)
			cells := len(p.Matrix.Cells())
			if cells == 0 || len(p.Matrix.Allow) == 0 {
				t.Fatalf("matrix has %d cells, %d allowed: nothing to compare", cells, len(p.Matrix.Allow))
			}
			if diff := e.differences(p, x.Resolvers); len(diff) > 0 {
				t.Errorf("%d of %d cells differ:\n%s", len(diff), cells, strings.Join(first(diff, 20), "\n"))
			}
		})
	}
}

// TestPolicyRemovedIsSeen: without any one of its policies, the set no
// longer equals the matrix; each policy carries a flow or the default
// deny.
func TestPolicyRemovedIsSeen(t *testing.T) {
	for _, name := range []string{"default", "dmz", "extra-flows"} {
		p := proofStacks(t)[name]
		x := exported(t, p)
		pols := x.Policies
		for i := range pols {
			rest := append(append([]kube.Object{}, pols[:i]...), pols[i+1:]...)
			if diff := newEngine(t, p, rest).differences(p, x.Resolvers); len(diff) == 0 {
				t.Errorf("%s: without %s the policies still equal the matrix", name, pols[i].File)
			}
		}
	}
}

// TestOtherPodsDenied: the cells the matrix does not hold. A pod of
// another namespace, a probe pod of each tier, and a pod that poses as a
// visitor with an address in the pod network get exactly what the
// matrix's rows say and no more.
func TestOtherPodsDenied(t *testing.T) {
	p := proofStacks(t)["default"]
	x := exported(t, p)
	e := newEngine(t, p, x.Policies)
	stranger := &matcher.TrafficPeer{IP: "10.244.200.1", Internal: &matcher.InternalPeer{
		Namespace: "other", NamespaceLabels: map[string]string{corev1.LabelMetadataName: "other"},
		PodLabels: map[string]string{kube.LabelTier: "edge"}}}
	for _, n := range p.Nodes {
		for _, port := range p.Matrix.Ports {
			if e.allowed(stranger, e.pods[n.Name], port) {
				t.Errorf("a pod of another namespace reaches %s on %v", n.Name, port)
			}
			if e.allowed(e.pods[n.Name], stranger, port) {
				t.Errorf("%s reaches a pod of another namespace on %v", n.Name, port)
			}
			if e.allowed(e.pods[n.Name], &matcher.TrafficPeer{IP: visitor}, port) {
				t.Errorf("%s reaches the internet on %v", n.Name, port)
			}
			for _, src := range p.Nodes {
				probe := e.peer(src.Tier, src.Role, kube.ComponentProbe, netip.MustParseAddr("10.244.100.1"))
				if got, want := e.allowed(probe, e.pods[n.Name], port), p.Matrix.Allowed(src.Name, n.Name, port) && src.Tier != n.Tier; got != want {
					t.Errorf("probe of %s -> %s on %v: %v, want %v", src.Tier, n.Name, port, got, want)
				}
			}
		}
	}
	if e.allowed(e.pods["app-1"], e.pods["edge"], plan.Port{Proto: "tcp", Number: 80}) {
		t.Errorf("an app pod reaches the edge as a visitor would")
	}
	// DNS: the edge, the app and the monitor name their peers by
	// Service, and no other tier names any; only kube-system's DNS pods
	// answer them.
	if want := []string{"edge", "app", "monitor"}; !slices.Equal(x.Resolvers, want) {
		t.Errorf("tiers that resolve names: %v, want %v", x.Resolvers, want)
	}
	for _, port := range dnsPorts {
		for name, peer := range map[string]*matcher.TrafficPeer{
			"an address outside the pods":         {IP: "10.96.0.10"},
			"a DNS pod of another namespace":      kubePod("other", "10.244.200.2", map[string]string{kube.DNSLabel: kube.DNSApp}),
			"another pod of kube-system":          kubePod(kube.DNSNamespace, "10.244.200.3", map[string]string{"k8s-app": "metrics-server"}),
			"a pod of kube-system with no labels": kubePod(kube.DNSNamespace, "10.244.200.4", nil),
		} {
			if e.allowed(e.pods["app-1"], peer, port) {
				t.Errorf("app-1 reaches %s on %v", name, port)
			}
		}
		if e.allowed(e.dns, e.pods["app-1"], port) {
			t.Errorf("the DNS pod reaches app-1 on %v: DNS egress opened ingress", port)
		}
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}

// TestCheck: a stack file's values with no Kubernetes equivalent are
// refused at their place, with the field named; defaults pass.
func TestCheck(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"", ""},
		{"tiers:\n  edge: {}\n  app:\n    memory: 256MiB\n", ""},
		{"tiers:\n  edge: {}\n  app:\n    pids: 300\n", "bulkhead.yaml:4:11: tiers.app.pids: Kubernetes has no pids limit per pod"},
		{"publish:\n  http: 127.0.0.1:8081\n", "bulkhead.yaml:2:9: publish.http: a host address has no place on a cluster"},
		{"tiers:\n  edge: {}\n  app: {}\n  mail: {}\n", "bulkhead.yaml:4:3: tiers.mail: the mail tier has no Kubernetes equivalent yet"},
	} {
		st, err := spec.Load("bulkhead.yaml", []byte(c.src), spec.Env{})
		if err != nil {
			t.Fatal(err)
		}
		err = kube.Check(st)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.src, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)):
			t.Errorf("%q: got %v, want %s...", c.src, err, c.want)
		}
	}
}
