package kube

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// agentPath is where the images put bulkhead, whose agent is every pod's
// first process as it is every local node's.
const agentPath = "/usr/local/bin/bulkhead"

// siteClaim is the ReadWriteMany claim that holds the site's files; see
// site.
const siteClaim = "site"

// tier makes a tier's ConfigMap, Secret, Service and workload.
func (x *exporter) tier(tier string, r render.Node) ([]Object, error) {
	nodes := x.p.Tier(tier)
	n := nodes[0]
	d, err := catalog.Lookup(n.Role, n.Software)
	if err != nil {
		return nil, err
	}
	conf, secret, items, err := x.configs(n, d, r)
	if err != nil {
		return nil, err
	}
	out := []Object{{tier + "/configmap.yaml", conf}}
	if secret != nil {
		out = append(out, Object{tier + "/secret.yaml", secret})
	}
	if svc := x.service(tier); svc != nil {
		out = append(out, Object{tier + "/service.yaml", svc})
	}

	labels := tierLabels(n)
	pod := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: withStack(x.p.Stack, labels)},
		Spec:       x.podSpec(n, d, items, secret != nil),
	}
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{LabelStack: x.p.Stack, LabelTier: tier, LabelComponent: ComponentNode}}
	replicas := int32(len(nodes))
	if d.Durable {
		set := &appsv1.StatefulSet{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
			ObjectMeta: x.meta(tier, labels),
			Spec: appsv1.StatefulSetSpec{
				Replicas: &replicas, Selector: selector, Template: pod, ServiceName: tier,
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
					TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
					ObjectMeta: metav1.ObjectMeta{Name: "data"},
					Spec: corev1.PersistentVolumeClaimSpec{
						AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
						Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: bytes(n.Disk)}},
					},
				}},
			},
		}
		return append(out, Object{tier + "/statefulset.yaml", set}), nil
	}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: x.meta(tier, labels),
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas, Selector: selector, Template: pod},
	}
	return append(out, Object{tier + "/deployment.yaml", dep}), nil
}

func withStack(stack string, labels map[string]string) map[string]string {
	out := map[string]string{LabelStack: stack}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// configs puts a node's rendered files in a ConfigMap, and those under
// render.SecretsDir in a Secret, with the same services.json the local
// driver writes (the renderers' cluster mode writes no firewall or hosts
// file: NetworkPolicies and the cluster's DNS take their place). Keys
// cannot hold "/", so each file has a key and an item that
// puts it back at its path.
func (x *exporter) configs(n *plan.Node, d *catalog.Descriptor, r render.Node) (*corev1.ConfigMap, *corev1.Secret, []corev1.KeyToPath, error) {
	name := n.Tier + "-conf"
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: x.meta(name, map[string]string{LabelTier: n.Tier}),
		Data:       map[string]string{},
	}
	var sec *corev1.Secret
	var items []corev1.KeyToPath
	svcs, err := json.MarshalIndent(r.Services, "", "  ")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encode services: %w", err)
	}
	files := append(slices.Clone(r.Files), render.File{Path: "services.json", Mode: 0o644, Data: append(svcs, '\n')})
	seen := map[string]string{}
	for _, f := range files {
		key := strings.ReplaceAll(f.Path, "/", "_")
		if prev, ok := seen[key]; ok {
			return nil, nil, nil, fmt.Errorf("files %s and %s would share the key %s", prev, f.Path, key)
		}
		seen[key] = f.Path
		mode := int32(f.Mode)
		items = append(items, corev1.KeyToPath{Key: key, Path: f.Path, Mode: &mode})
		if strings.HasPrefix(f.Path, render.SecretsDir+"/") {
			if d.SecretGroup != "" && f.Mode&0o040 == 0 {
				// The kubelet makes every file of a volume with an
				// fsGroup readable by that group (podSpec).
				return nil, nil, nil, fmt.Errorf("%s is root's alone (mode %04o), but the pod's fsGroup would let %s read it", f.Path, f.Mode, d.SecretGroup)
			}
			if _, ok := accountIDs[d.SecretGroup]; d.SecretGroup != "" && !ok {
				return nil, nil, nil, fmt.Errorf("%s's secrets are for %s, which has no fixed id in the images", n.Tier, d.SecretGroup)
			}
			if sec == nil {
				sec = &corev1.Secret{
					TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
					ObjectMeta: x.meta(n.Tier+"-secrets", map[string]string{LabelTier: n.Tier}),
					Type:       corev1.SecretTypeOpaque,
					StringData: map[string]string{},
				}
			}
			sec.StringData[key] = string(f.Data)
			continue
		}
		cm.Data[key] = string(f.Data)
	}
	return cm, sec, items, nil
}

// podSpec is a node's pod: the agent as its first process, the catalog's
// capabilities and nothing else, a read-only root, RuntimeDefault seccomp,
// its own user namespace, no service account token, and the plan's
// limits.
func (x *exporter) podSpec(n *plan.Node, d *catalog.Descriptor, items []corev1.KeyToPath, secret bool) corev1.PodSpec {
	l := render.DefaultLayout()
	var caps []corev1.Capability
	for _, c := range d.AllCapabilities() {
		caps = append(caps, corev1.Capability(strings.TrimPrefix(c, "CAP_")))
	}
	var cmItems, secItems []corev1.KeyToPath
	for _, it := range items {
		if strings.HasPrefix(it.Path, render.SecretsDir+"/") {
			secItems = append(secItems, it)
		} else {
			cmItems = append(cmItems, it)
		}
	}
	sources := []corev1.VolumeProjection{{ConfigMap: &corev1.ConfigMapProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: n.Tier + "-conf"}, Items: cmItems}}}
	if secret {
		sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: n.Tier + "-secrets"}, Items: secItems}})
	}
	volumes := []corev1.Volume{
		{Name: "conf", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}}},
		scratch("run", "64Mi", corev1.StorageMediumMemory),
		scratch("tmp", "256Mi", corev1.StorageMediumMemory),
		scratch("var-tmp", "64Mi", corev1.StorageMediumMemory),
		scratch("log", "", ""),
	}
	mounts := []corev1.VolumeMount{
		{Name: "conf", MountPath: l.Conf, ReadOnly: true},
		{Name: "run", MountPath: "/run"},
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "var-tmp", MountPath: "/var/tmp"},
		{Name: "log", MountPath: l.Log},
		{Name: "data", MountPath: l.Data},
	}
	if !d.Durable {
		volumes = append(volumes, scratch("data", "", ""))
	}
	switch {
	case n.Mount != nil:
		volumes = append(volumes, siteVolume())
		// The site's code is read-only for every node; only app nodes
		// write the writable paths, as their mount says.
		mounts = append(mounts,
			corev1.VolumeMount{Name: siteClaim, MountPath: l.Site, SubPath: "site", ReadOnly: true},
			corev1.VolumeMount{Name: siteClaim, MountPath: l.Shared, SubPath: "shared", ReadOnly: n.Mount.ReadOnly})
	case n.Role == catalog.RoleStorage:
		volumes = append(volumes, siteVolume())
		mounts = append(mounts, corev1.VolumeMount{Name: siteClaim, MountPath: path.Join(l.Data, "export")})
	}

	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceMemory: bytes(n.Memory),
			// cgroup v2's weight, as the local driver maps it to v1
			// shares (weight*1024/100), is what the kubelet derives
			// from a CPU request of weight*10 millicores.
			corev1.ResourceCPU: *resource.NewMilliQuantity(int64(n.CPUWeight)*10, resource.DecimalSI),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: bytes(n.Memory)},
	}
	if !d.Durable {
		res.Limits[corev1.ResourceEphemeralStorage] = bytes(n.Disk)
	}
	var ports []corev1.ContainerPort
	for _, p := range n.Listens {
		ports = append(ports, corev1.ContainerPort{ContainerPort: int32(p.Number), Protocol: protocol(p.Proto)})
	}
	c := corev1.Container{
		Name:  n.Role,
		Image: "", // set by caller
		Args: []string{"agent", "--node", "$(BULKHEAD_NODE)",
			"--services", path.Join(l.Conf, "services.json"),
			"--socket", path.Join(l.Run, "agent.sock"),
			"--logs", l.Log},
		Command: []string{agentPath},
		Env: []corev1.EnvVar{{Name: "BULKHEAD_NODE", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
		Ports:        ports,
		Resources:    res,
		VolumeMounts: mounts,
		SecurityContext: &corev1.SecurityContext{
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: caps},
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	c.Image = x.image(n)
	if len(n.Listens) > 0 && n.Listens[0].Proto == "tcp" {
		// The kubelet dials the pod's address, which the daemons bind as
		// they bind any address on a cluster. Ready: the service port
		// accepts, as the agent's own check on the loopback says. Live:
		// it has accepted within a minute, once it first did (a database
		// may take minutes to recover at start); the agent restarts a
		// daemon that exits, so this catches one that hangs.
		tcp := corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(n.Listens[0].Number))}}
		c.StartupProbe = &corev1.Probe{ProbeHandler: tcp, PeriodSeconds: 5, FailureThreshold: 120}
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: tcp, PeriodSeconds: 5, FailureThreshold: 3}
		c.LivenessProbe = &corev1.Probe{ProbeHandler: tcp, PeriodSeconds: 10, FailureThreshold: 6, TimeoutSeconds: 5}
	}
	sc := &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	if id, ok := accountIDs[d.SecretGroup]; ok {
		// Secret files are root's; a group-readable one (0440) is for
		// the daemon's account, as the catalog says, so the volume's
		// files get its group, the id its image gives it.
		sc.FSGroup = ptr(id.ID)
		sc.FSGroupChangePolicy = ptr(corev1.FSGroupChangeOnRootMismatch)
	}
	return corev1.PodSpec{
		AutomountServiceAccountToken: ptr(false),
		EnableServiceLinks:           ptr(false),
		HostUsers:                    ptr(false),
		SecurityContext:              sc,
		Containers:                   []corev1.Container{c},
		Volumes:                      volumes,
	}
}

func scratch(name, size string, medium corev1.StorageMedium) corev1.Volume {
	ed := &corev1.EmptyDirVolumeSource{Medium: medium}
	if size != "" {
		q := resource.MustParse(size)
		ed.SizeLimit = &q
	}
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: ed}}
}

func siteVolume() corev1.Volume {
	return corev1.Volume{Name: siteClaim, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: siteClaim, ReadOnly: false}}}
}

// site is the ReadWriteMany claim that static and app pods mount the
// site's files from, as the README's section on storage explains; the
// storage tier's pod mounts it whole, to put releases in.
func (x *exporter) site() []Object {
	st := x.p.Tier(storageTier(x.p))
	if len(st) == 0 {
		return nil
	}
	pvc := &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: x.meta(siteClaim, nil),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: bytes(st[0].Disk)}},
		},
	}
	return []Object{{"site-pvc.yaml", pvc}}
}

func storageTier(p *plan.Plan) string {
	if s := p.Role(catalog.RoleStorage); len(s) > 0 {
		return s[0].Tier
	}
	return ""
}

// service makes a tier's Service if any flow leads to it: a LoadBalancer
// for a tier the outside reaches, keeping visitors' addresses (Local) so
// that the policy for them sees who they are.
func (x *exporter) service(tier string) *corev1.Service {
	var ports []corev1.ServicePort
	public := false
	for _, f := range x.p.Flows {
		if f.To != tier {
			continue
		}
		public = public || outside(f)
		name := fmt.Sprintf("%s-%d", f.Port.Proto, f.Port.Number)
		if slices.ContainsFunc(ports, func(p corev1.ServicePort) bool { return p.Name == name }) {
			continue
		}
		ports = append(ports, corev1.ServicePort{Name: name, Port: int32(f.Port.Number),
			TargetPort: intstr.FromInt32(int32(f.Port.Number)), Protocol: protocol(f.Port.Proto)})
	}
	if len(ports) == 0 {
		return nil
	}
	n := x.p.Tier(tier)[0]
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: x.meta(tier, map[string]string{LabelTier: tier, LabelRole: n.Role}),
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{LabelStack: x.p.Stack, LabelTier: tier, LabelComponent: ComponentNode},
			Ports:    ports,
		},
	}
	if public {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	return svc
}

// ingress routes the plan's domain to the edge's port 80, for clusters
// whose visitors arrive through an Ingress controller.
func (x *exporter) ingress() []Object {
	var edge string
	for _, f := range x.p.Flows {
		if outside(f) {
			edge = f.To
			break
		}
	}
	if edge == "" {
		return nil
	}
	prefix := networkingv1.PathTypePrefix
	ing := &networkingv1.Ingress{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "Ingress"},
		ObjectMeta: x.meta(edge, nil),
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
			Host: x.p.Domain,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: &prefix,
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
					Name: edge, Port: networkingv1.ServiceBackendPort{Number: 80}}},
			}}}},
		}}},
	}
	return []Object{{"ingress.yaml", ing}}
}

func bytes(n int64) resource.Quantity { return *resource.NewQuantity(n, resource.BinarySI) }

func protocol(p string) corev1.Protocol {
	if p == "udp" {
		return corev1.ProtocolUDP
	}
	return corev1.ProtocolTCP
}

func ptr[T any](v T) *T { return &v }
