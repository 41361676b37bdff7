package kube_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/kube"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden export in testdata/golden")

// testSecrets are fixed so that the golden files are stable.
func testSecrets(p *plan.Plan) render.Secrets {
	s := render.Secrets{
		DBPassword:     "golden-db-password",
		StorageKeys:    map[string]string{},
		StorageHostKey: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\ngolden-host-key\n-----END OPENSSH PRIVATE KEY-----\n"),
		TLSCert:        []byte("-----BEGIN CERTIFICATE-----\ngolden-cert\n-----END CERTIFICATE-----\n"),
		TLSKey:         []byte("-----BEGIN PRIVATE KEY-----\ngolden-key\n-----END PRIVATE KEY-----\n"),
	}
	for _, n := range p.Nodes {
		if n.Mount != nil {
			s.StorageKeys[n.Name] = "ssh-ed25519 AAAAgolden" + strings.ReplaceAll(n.Name, "-", "") + " bulkhead-" + n.Name
		}
	}
	return s
}

func export(t testing.TB, p *plan.Plan, o kube.Options) []kube.File {
	t.Helper()
	o.Tag = "v0.1.0"
	o.Secrets = testSecrets(p)
	e, err := kube.Build(p, o)
	if err != nil {
		t.Fatal(err)
	}
	files, err := e.Files()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// kinds are the types the export may write, for strict decoding.
var kinds = map[string]func() any{
	"Namespace":             func() any { return new(corev1.Namespace) },
	"ConfigMap":             func() any { return new(corev1.ConfigMap) },
	"Secret":                func() any { return new(corev1.Secret) },
	"Service":               func() any { return new(corev1.Service) },
	"PersistentVolumeClaim": func() any { return new(corev1.PersistentVolumeClaim) },
	"Deployment":            func() any { return new(appsv1.Deployment) },
	"StatefulSet":           func() any { return new(appsv1.StatefulSet) },
	"Job":                   func() any { return new(batchv1.Job) },
	"NetworkPolicy":         func() any { return new(networkingv1.NetworkPolicy) },
	"Ingress":               func() any { return new(networkingv1.Ingress) },
}

// decodeStrict decodes one manifest into its k8s.io/api type, failing on
// any field the type does not have, and checks that it encodes back to
// the same bytes.
func decodeStrict(t *testing.T, f kube.File) {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(f.Data, &head); err != nil {
		t.Fatalf("%s: %v", f.Path, err)
	}
	mk, ok := kinds[head.Kind]
	if !ok {
		t.Fatalf("%s: kind %q is not one the export writes", f.Path, head.Kind)
	}
	obj := mk()
	if err := strictDecode(f.Data, obj); err != nil {
		t.Fatalf("%s: strict decode as %s: %v", f.Path, head.Kind, err)
	}
	again, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, f.Data) {
		t.Errorf("%s: decoding and encoding again changes it", f.Path)
	}
}

// TestStrictDecode: every manifest of every proof stack, with and
// without an Ingress, decodes strictly into its k8s.io/api type.
func TestStrictDecode(t *testing.T) {
	for name, p := range proofStacks(t) {
		for _, ing := range []bool{false, true} {
			for _, f := range export(t, p, kube.Options{Ingress: ing}) {
				if !strings.HasSuffix(f.Path, ".yaml") || f.Path == "kustomization.yaml" {
					continue
				}
				t.Run(name+"/"+f.Path, func(t *testing.T) { decodeStrict(t, f) })
			}
		}
	}
}

// strictDecode decodes YAML as the API server does: field names match
// case-sensitively, and a field the type lacks, or one given twice, is an
// error. (sigs.k8s.io/yaml's UnmarshalStrict goes through encoding/json,
// which matches names regardless of case, so "targetport" would pass.)
func strictDecode(data []byte, v any) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, v, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// TestStrictDecodeCatches: the strict decoding the tests rely on fails on
// a field the type does not have, misspelt by case or not at all.
func TestStrictDecodeCatches(t *testing.T) {
	for _, field := range []string{"targetport", "targetPorts"} {
		bad := []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n  - port: 80\n    " + field + ": 80\n")
		if err := strictDecode(bad, new(corev1.Service)); err == nil {
			t.Errorf("a Service with %s decoded without error", field)
		}
	}
	good := []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n  - port: 80\n    targetPort: 80\n")
	if err := strictDecode(good, new(corev1.Service)); err != nil {
		t.Errorf("a good Service: %v", err)
	}
}

// TestKustomization: kustomization.yaml lists every manifest but the
// probe Jobs, each once, and nothing else.
func TestKustomization(t *testing.T) {
	p := proofStacks(t)["default"]
	files := export(t, p, kube.Options{})
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
	}
	var want []string
	for _, f := range files {
		if f.Path == "kustomization.yaml" {
			if err := strictDecode(f.Data, &k); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(f.Path, ".yaml") && !strings.HasPrefix(f.Path, "probes/") {
			want = append(want, f.Path)
		}
	}
	slices.Sort(want)
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	if !slices.Equal(got, want) || k.Namespace != "bulkhead-bulkhead" {
		t.Errorf("kustomization: namespace %q resources %v\nwant bulkhead-bulkhead %v", k.Namespace, got, want)
	}
}

// TestGolden compares the default stack's export with testdata/golden.
// Run with -update to rewrite it, then read the diff.
func TestGolden(t *testing.T) {
	p := build(t, "", spec.ProtocolSFTP)
	files := export(t, p, kube.Options{})
	dir := filepath.Join("testdata", "golden", "default")
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, f := range files {
		path := filepath.Join(dir, f.Path)
		seen[path] = true
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run with -update)", f.Path, err)
			continue
		}
		if !bytes.Equal(want, f.Data) {
			t.Errorf("%s differs from %s (run with -update and read the diff)", f.Path, path)
		}
	}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !seen[path] {
			t.Errorf("%s is no longer exported", path)
		}
		return nil
	})
}

// TestPodsOnCluster: for every proof stack, each workload's pod is one
// its daemons can serve from. Its probes dial the port the agent's own
// readiness check dials on the loopback, which daemons bound to any
// address answer on the pod's address too; its configs hold no firewall
// or hosts file; and a tier whose daemon reads secrets through its group
// gets that group as fsGroup, with the id its image gives the account.
func TestPodsOnCluster(t *testing.T) {
	for name, p := range proofStacks(t) {
		t.Run(name, func(t *testing.T) {
			e, err := kube.Build(p, kube.Options{Tag: "v0.1.0", Secrets: testSecrets(p)})
			if err != nil {
				t.Fatal(err)
			}
			confs := map[string]*corev1.ConfigMap{}
			for _, o := range e.Objects {
				if cm, ok := o.Obj.(*corev1.ConfigMap); ok {
					confs[cm.Name] = cm
				}
			}
			for _, o := range e.Objects {
				var pod corev1.PodTemplateSpec
				switch w := o.Obj.(type) {
				case *appsv1.Deployment:
					pod = w.Spec.Template
				case *appsv1.StatefulSet:
					pod = w.Spec.Template
				default:
					continue
				}
				tier := pod.Labels[kube.LabelTier]
				n := p.Tier(tier)[0]
				cm := confs[tier+"-conf"]
				if cm == nil {
					t.Fatalf("%s: no ConfigMap %s-conf", o.File, tier)
				}
				if _, ok := cm.Data["hosts"]; ok {
					t.Errorf("%s: a hosts file on a cluster", o.File)
				}
				var svcs []struct {
					Ready []string `json:"ready"`
				}
				if err := yaml.Unmarshal([]byte(cm.Data["services.json"]), &svcs); err != nil {
					t.Fatalf("%s: services.json: %v", o.File, err)
				}
				c := pod.Spec.Containers[0]
				for _, probe := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
					if probe == nil || probe.TCPSocket == nil {
						t.Errorf("%s: a probe is missing or not TCP: %+v", o.File, probe)
						continue
					}
					want := fmt.Sprintf("127.0.0.1:%d", probe.TCPSocket.Port.IntValue())
					if len(svcs) == 0 || !slices.Contains(svcs[len(svcs)-1].Ready, want) {
						t.Errorf("%s: the kubelet probes port %d, but the agent checks %v", o.File, probe.TCPSocket.Port.IntValue(), svcs)
					}
				}
				d, err := catalog.Lookup(n.Role, n.Software)
				if err != nil {
					t.Fatal(err)
				}
				fsGroup := pod.Spec.SecurityContext.FSGroup
				switch {
				case d.SecretGroup == "" && fsGroup != nil:
					t.Errorf("%s: fsGroup %d, but the daemon reads no secret through a group", o.File, *fsGroup)
				case d.SecretGroup != "" && fsGroup == nil:
					t.Errorf("%s: no fsGroup, but %s reads the secrets through its group", o.File, d.SecretGroup)
				case d.SecretGroup == "www-data" && *fsGroup != 33:
					t.Errorf("%s: fsGroup %d, but Debian's www-data is 33", o.File, *fsGroup)
				case d.SecretGroup != "" && d.SecretGroup != "www-data":
					img := string(e.Dockerfiles["bulkhead-"+p.Stack+"-"+tier])
					if want := fmt.Sprintf("groupadd --system --gid %d %s ", *fsGroup, d.SecretGroup); !strings.Contains(img, want) ||
						strings.Index(img, want) > strings.Index(img, "apt-get install") {
						t.Errorf("%s: the image does not create group %s with id %d before installing packages:\n%s", o.File, d.SecretGroup, *fsGroup, img)
					}
				}
			}
		})
	}
}

// TestReadmePolicies: the policies README's Kubernetes section shows
// whole are the default stack's, as exported.
func TestReadmePolicies(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, b := range strings.Split(string(readme), "```yaml\n")[1:] {
		blocks = append(blocks, strings.SplitN(b, "```", 2)[0])
	}
	files := map[string]string{}
	for _, f := range export(t, build(t, "", spec.ProtocolSFTP), kube.Options{}) {
		files[f.Path] = string(f.Data)
	}
	for _, name := range []string{"app-to-db-tcp-3306-ingress", "app-to-db-tcp-3306-egress", "app-to-kube-dns-53-egress"} {
		want := files["policies/"+name+".yaml"]
		if want == "" {
			t.Fatalf("the export has no policy %s", name)
		}
		if !slices.ContainsFunc(blocks, func(b string) bool {
			return slices.Contains(strings.Split(b, "---\n"), want)
		}) {
			t.Errorf("README does not show policy %s as exported:\n%s", name, want)
		}
	}
}
