package kube

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Where a probe pod finds the plan, which the export writes, and the
// pods' addresses, which the operator lists once the stack runs (README:
// "Verify on a cluster").
const (
	probeDir      = "/etc/bulkhead-probe"
	ProbePlanMap  = "probe-plan"
	ProbePodsMap  = "probe-pods"
	ProbePlanFile = "plan.json"
	ProbePodsFile = "pods.json"
)

// probes makes a Job per tier that probes every node's pod from a pod
// with the tier's labels, as bulkhead's "probe" verb, which prints what it
// saw as JSON. The Jobs are not in kustomization.yaml: they run when the
// operator verifies. They meet the restricted Pod Security Standard: the
// probe needs no privilege, not even root.
func (x *exporter) probes() ([]Object, error) {
	planJSON, err := json.MarshalIndent(x.p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	out := []Object{{"probes/plan-configmap.yaml", &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: x.meta(ProbePlanMap, nil),
		Data:       map[string]string{ProbePlanFile: string(planJSON) + "\n"},
	}}}
	nobody := int64(65534)
	for _, tier := range tiers(x.p) {
		n := x.p.Tier(tier)[0]
		labels := map[string]string{LabelTier: tier, LabelRole: n.Role, LabelComponent: ComponentProbe}
		c := corev1.Container{
			Name:    "probe",
			Image:   x.image(n),
			Command: []string{agentPath},
			Args: []string{"probe", "--source", n.Name,
				"--plan", path.Join(probeDir, ProbePlanFile), "--pods", path.Join(probeDir, ProbePodsFile)},
			Resources:    corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
			VolumeMounts: []corev1.VolumeMount{{Name: "probe", MountPath: probeDir, ReadOnly: true}},
			SecurityContext: &corev1.SecurityContext{
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				AllowPrivilegeEscalation: ptr(false),
				ReadOnlyRootFilesystem:   ptr(true),
				RunAsNonRoot:             ptr(true),
				RunAsUser:                &nobody,
				RunAsGroup:               &nobody,
				SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		}
		job := &batchv1.Job{
			TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
			ObjectMeta: x.meta("probe-"+tier, labels),
			Spec: batchv1.JobSpec{
				BackoffLimit: ptr(int32(0)),
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: withStack(x.p.Stack, labels)},
					Spec: corev1.PodSpec{
						RestartPolicy:                corev1.RestartPolicyNever,
						AutomountServiceAccountToken: ptr(false),
						EnableServiceLinks:           ptr(false),
						SecurityContext: &corev1.PodSecurityContext{
							SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						Containers: []corev1.Container{c},
						Volumes: []corev1.Volume{{Name: "probe", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
							Sources: []corev1.VolumeProjection{
								{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: ProbePlanMap}}},
								{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: ProbePodsMap}}},
							}}}}},
					},
				},
			},
		}
		out = append(out, Object{"probes/" + tier + "-job.yaml", job})
	}
	return out, nil
}

// Pod is a node's pod as a cluster lists it.
type Pod struct {
	Name string
	Tier string
	Addr netip.Addr
}

// ParsePods reads a PodList as "kubectl get pods -o json" prints it and
// returns the running node pods of stack, probe pods and others left
// out.
func ParsePods(stack string, data []byte) ([]Pod, error) {
	var list corev1.PodList
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("read pod list: %w", err)
	}
	var out []Pod
	for _, p := range list.Items {
		l := p.Labels
		if l[LabelStack] != stack || l[LabelComponent] != ComponentNode || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			continue
		}
		addr, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			return nil, fmt.Errorf("pod %s: address %q: %w", p.Name, p.Status.PodIP, err)
		}
		out = append(out, Pod{Name: p.Name, Tier: l[LabelTier], Addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the pod list holds no running pod of stack %s", stack)
	}
	return out, nil
}
