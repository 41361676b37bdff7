// Package kube exports a Plan as Kubernetes manifests: a Namespace, one
// workload per tier with the local driver's rendered configs, Services,
// NetworkPolicies that encode the plan's matrix, probe Jobs for verify, a
// Dockerfile per image and a kustomization.yaml. It is pure, like render:
// secrets are inputs and it does no I/O.
package kube

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Labels every exported object carries. Policies select pods by
// LabelTier alone, so that a probe pod of a tier is held to exactly the
// tier's flows; Services select LabelComponent=node too, so that no probe
// pod ever receives a tier's traffic.
const (
	LabelStack     = "bulkhead/stack"
	LabelTier      = "bulkhead/tier"
	LabelRole      = "bulkhead/role"
	LabelComponent = "bulkhead/component"

	ComponentNode  = "node"
	ComponentProbe = "probe"
)

// Options are the cluster-side facts the plan cannot know.
type Options struct {
	// Namespace holds the stack; empty means "bulkhead-STACK".
	Namespace string
	// Registry prefixes image names: REGISTRY/bulkhead-STACK-TIER:TAG.
	Registry string
	// Tag is the images' tag, normally bulkhead's version.
	Tag string
	// PodCIDR is the cluster's pod network. The outside's flows to the
	// edge admit every address but these, so that no pod passes for a
	// visitor.
	PodCIDR netip.Prefix
	// Ingress, if set, also writes an Ingress for the plan's domain whose
	// controller runs in IngressNamespace; the policy for visitors then
	// admits that namespace's pods to the edge too.
	Ingress          bool
	IngressNamespace string
	// Secrets are the stack's secrets, as the local driver renders with.
	Secrets render.Secrets
}

// DefaultPodCIDR is the pod network of kubeadm's and kind's default
// setups, which most clusters keep.
var DefaultPodCIDR = netip.MustParsePrefix("10.244.0.0/16")

// File is one file of the export, relative to its directory.
type File struct {
	Path string
	Mode uint32
	Data []byte
}

// Export is the manifests of a plan, typed, before they are written.
type Export struct {
	Namespace    string
	Objects      []Object
	Policies     []Object
	Probes       []Object
	Dockerfiles  map[string][]byte // by image name
	Restrictions []Restriction
	// Resolvers are the tiers whose daemons resolve peers' Service names,
	// the only ones the policies let query the cluster's DNS.
	Resolvers []string
}

// Object is one manifest, named by the file it is written to.
type Object struct {
	File string
	Obj  any
}

// Build makes the manifests of p.
func Build(p *plan.Plan, o Options) (*Export, error) {
	if o.Namespace == "" {
		o.Namespace = "bulkhead-" + p.Stack
	}
	if !o.PodCIDR.IsValid() {
		o.PodCIDR = DefaultPodCIDR
	}
	o.PodCIDR = o.PodCIDR.Masked()
	if o.Tag == "" {
		return nil, fmt.Errorf("export %s: no image tag", p.Stack)
	}
	if o.Ingress && o.IngressNamespace == "" {
		o.IngressNamespace = "ingress-nginx"
	}
	e := &Export{Namespace: o.Namespace, Dockerfiles: map[string][]byte{}}
	rendered, err := renderPods(p, o)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", p.Stack, err)
	}
	e.Resolvers = resolvers(p, rendered)

	x := exporter{p: p, o: o, e: e}
	var restrictions []Restriction
	for _, tier := range tiers(p) {
		first := p.Tier(tier)[0]
		d, err := catalog.Lookup(first.Role, first.Software)
		if err != nil {
			return nil, fmt.Errorf("export %s: tier %s: %w", p.Stack, tier, err)
		}
		restrictions = append(restrictions, restrict(first, d)...)
	}
	e.Restrictions = restrictions
	e.Objects = append(e.Objects, Object{"namespace.yaml", x.namespace()})
	for _, tier := range tiers(p) {
		objs, err := x.tier(tier, rendered[p.Tier(tier)[0].Name])
		if err != nil {
			return nil, fmt.Errorf("export %s: tier %s: %w", p.Stack, tier, err)
		}
		e.Objects = append(e.Objects, objs...)
	}
	e.Objects = append(e.Objects, x.site()...)
	if o.Ingress {
		e.Objects = append(e.Objects, x.ingress()...)
	}
	e.Policies = Policies(p, o, e.Resolvers)
	if e.Probes, err = x.probes(); err != nil {
		return nil, fmt.Errorf("export %s: %w", p.Stack, err)
	}
	for _, tier := range tiers(p) {
		n := p.Tier(tier)[0]
		d, err := catalog.Lookup(n.Role, n.Software)
		if err != nil {
			return nil, fmt.Errorf("export %s: tier %s: %w", p.Stack, tier, err)
		}
		e.Dockerfiles[imageName(p, n)] = dockerfile(p, n, d.SecretGroup)
	}
	return e, nil
}

// renderPods renders every node as a pod of the cluster: the renderers'
// cluster mode, where daemons bind any address, reach peer tiers by their
// Services' names and admit clients from the pod network.
func renderPods(p *plan.Plan, o Options) (map[string]render.Node, error) {
	nodes, err := render.Render(p, render.Input{
		Layout:  render.DefaultLayout(),
		Secrets: o.Secrets,
		Cluster: &render.Cluster{Namespace: o.Namespace, PodCIDR: o.PodCIDR},
	})
	if err != nil {
		return nil, err
	}
	out := map[string]render.Node{}
	for _, n := range nodes {
		out[n.Name] = n
	}
	return out, nil
}

// resolvers lists, in plan order, the tiers whose rendered configs name a
// peer by its Service.
func resolvers(p *plan.Plan, rendered map[string]render.Node) []string {
	var out []string
	for _, tier := range tiers(p) {
		for _, n := range p.Tier(tier) {
			if len(rendered[n.Name].Names) > 0 && !slices.Contains(out, tier) {
				out = append(out, tier)
			}
		}
	}
	return out
}

// Files serialises the export: one YAML file per object, the Dockerfiles
// under images/, and a kustomization.yaml naming every manifest.
func (e *Export) Files() ([]File, error) {
	var out []File
	var resources []string
	for i, group := range [][]Object{e.Objects, e.Policies, e.Probes} {
		for _, obj := range group {
			data, err := yaml.Marshal(obj.Obj)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", obj.File, err)
			}
			mode := uint32(0o644)
			if _, ok := obj.Obj.(*corev1.Secret); ok {
				mode = 0o600
			}
			out = append(out, File{Path: obj.File, Mode: mode, Data: data})
			if i < 2 {
				resources = append(resources, obj.File)
			}
		}
	}
	k := kustomization{APIVersion: "kustomize.config.k8s.io/v1beta1", Kind: "Kustomization", Namespace: e.Namespace, Resources: resources}
	data, err := yaml.Marshal(k)
	if err != nil {
		return nil, err
	}
	out = append(out, File{Path: "kustomization.yaml", Mode: 0o644, Data: data})
	names := make([]string, 0, len(e.Dockerfiles))
	for name := range e.Dockerfiles {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		out = append(out, File{Path: "images/" + name + "/Dockerfile", Mode: 0o644, Data: e.Dockerfiles[name]})
	}
	return out, nil
}

// kustomization is kustomize's file. The probe Jobs are not among its
// resources: verify runs them when it wants to, with kubectl apply -f.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

type exporter struct {
	p *plan.Plan
	o Options
	e *Export
}

// tiers lists the plan's tiers in plan order.
func tiers(p *plan.Plan) []string {
	var out []string
	for _, n := range p.Nodes {
		if !slices.Contains(out, n.Tier) {
			out = append(out, n.Tier)
		}
	}
	return out
}

func (x *exporter) meta(name string, extra map[string]string) metav1.ObjectMeta {
	labels := map[string]string{LabelStack: x.p.Stack}
	for k, v := range extra {
		labels[k] = v
	}
	return metav1.ObjectMeta{Name: name, Namespace: x.o.Namespace, Labels: labels}
}

func tierLabels(n *plan.Node) map[string]string {
	return map[string]string{LabelTier: n.Tier, LabelRole: n.Role, LabelComponent: ComponentNode}
}

// namespace enforces the Pod Security level the stack's pods can meet and
// warns and audits at restricted, so that every shortfall is shown.
func (x *exporter) namespace() *corev1.Namespace {
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: x.meta(x.o.Namespace, nil),
	}
	ns.Namespace = ""
	level := LevelRestricted
	for _, r := range x.e.Restrictions {
		if levelRank[r.Level] > levelRank[level] {
			level = r.Level
		}
	}
	ns.Labels["pod-security.kubernetes.io/enforce"] = level
	ns.Labels["pod-security.kubernetes.io/warn"] = LevelRestricted
	ns.Labels["pod-security.kubernetes.io/audit"] = LevelRestricted
	return ns
}

// imageName names a tier's image. The name is the tier's rather than the
// software's because an app image's PHP clients depend on the stack's
// database and cache.
func imageName(p *plan.Plan, n *plan.Node) string { return "bulkhead-" + p.Stack + "-" + n.Tier }

func (x *exporter) image(n *plan.Node) string {
	name := imageName(x.p, n) + ":" + x.o.Tag
	if x.o.Registry != "" {
		name = x.o.Registry + "/" + name
	}
	return name
}

// outside reports whether a flow comes from visitors.
func outside(f plan.Flow) bool { return f.From == spec.Outside }
