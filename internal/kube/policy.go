package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// The cluster's DNS, as kubeadm, kind and most distributions deploy it:
// CoreDNS pods labelled k8s-app=kube-dns in kube-system, on port 53 over
// UDP and TCP (TCP for answers too long for a datagram).
const (
	DNSNamespace = "kube-system"
	DNSLabel     = "k8s-app"
	DNSApp       = "kube-dns"
	DNSPort      = 53
)

// Policies encodes the plan's matrix: a default deny of ingress and
// egress for every pod in the namespace, then for each flow an egress
// policy on its source tier and an ingress policy on its destination tier,
// each for the flow's port alone. The only other traffic is DNS: each
// tier of resolvers, whose configs name peers by their Services, may
// query the cluster's DNS pods on port 53. No pod reaches the internet.
func Policies(p *plan.Plan, o Options, resolvers []string) []Object {
	if o.Namespace == "" {
		o.Namespace = "bulkhead-" + p.Stack
	}
	if !o.PodCIDR.IsValid() {
		o.PodCIDR = DefaultPodCIDR
	}
	if o.Ingress && o.IngressNamespace == "" {
		o.IngressNamespace = "ingress-nginx"
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: map[string]string{LabelStack: p.Stack}}
	}
	typ := metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
	out := []Object{{"policies/default-deny.yaml", &networkingv1.NetworkPolicy{
		TypeMeta: typ, ObjectMeta: meta("default-deny"),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}}}
	for _, tier := range resolvers {
		var ports []networkingv1.NetworkPolicyPort
		for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: ptr(proto), Port: ptr(intstr.FromInt32(DNSPort))})
		}
		name := fmt.Sprintf("%s-to-%s-%d-egress", tier, DNSApp, DNSPort)
		out = append(out, Object{"policies/" + name + ".yaml", &networkingv1.NetworkPolicy{
			TypeMeta: typ, ObjectMeta: meta(name),
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: *tierSelector(tier),
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				// One peer with both selectors: DNS pods of kube-system,
				// not every pod there nor DNS pods elsewhere.
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: DNSNamespace}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{DNSLabel: DNSApp}},
				}}, Ports: ports}},
			},
		}})
	}
	for _, f := range p.Flows {
		port := []networkingv1.NetworkPolicyPort{{Protocol: ptr(protocol(f.Port.Proto)), Port: ptr(intstr.FromInt32(int32(f.Port.Number)))}}
		name := fmt.Sprintf("%s-to-%s-%s-%d", f.From, f.To, f.Port.Proto, f.Port.Number)
		from := []networkingv1.NetworkPolicyPeer{{PodSelector: tierSelector(f.From)}}
		if outside(f) {
			// Visitors are every address but the pods'; a pod that is
			// not the edge must not pass for one.
			from = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "0.0.0.0/0", Except: []string{o.PodCIDR.String()}}}}
			if o.Ingress {
				from = append(from, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{corev1.LabelMetadataName: o.IngressNamespace}}})
			}
		}
		out = append(out, Object{"policies/" + name + "-ingress.yaml", &networkingv1.NetworkPolicy{
			TypeMeta: typ, ObjectMeta: meta(name + "-ingress"),
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: *tierSelector(f.To),
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: port}},
			},
		}})
		if outside(f) {
			continue
		}
		out = append(out, Object{"policies/" + name + "-egress.yaml", &networkingv1.NetworkPolicy{
			TypeMeta: typ, ObjectMeta: meta(name + "-egress"),
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: *tierSelector(f.From),
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: tierSelector(f.To)}}, Ports: port}},
			},
		}})
	}
	return out
}

func tierSelector(tier string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{LabelTier: tier}}
}
