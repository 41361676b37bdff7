package cli

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/kube"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/secrets"
	"github.com/bulkhead/bulkhead/internal/spec"
)

type exportOptions struct {
	File      string
	Dir       string
	Namespace string
	Registry  string
	Tag       string
	PodCIDR   string
	Ingress   bool
	IngressNS string
}

func exportCommand() *command {
	return &command{
		name:    "export",
		args:    "kubernetes [-f FILE] [-o DIR] [--registry R] [--tag T] [--namespace NS] [--pod-cidr CIDR] [--ingress [--ingress-namespace NS]]",
		summary: "write Kubernetes manifests for a stack, with NetworkPolicies that encode its matrix",
		help: `
Export kubernetes writes the stack as manifests that 'kubectl apply -k DIR'
accepts: a Namespace, a Deployment per tier (a StatefulSet with a volume
claim for the database and storage), Services with the edge as a
LoadBalancer, ConfigMaps and Secrets with the same rendered configs and
services.json the local driver uses, and NetworkPolicies: a default deny of
ingress and egress, then exactly one ingress and one egress policy per
flow of the plan. It also writes a Dockerfile per tier under DIR/images,
and a probe Job per tier under DIR/probes for 'bulkhead verify --import'.
It changes nothing on this host or any cluster.

The secrets in DIR are generated afresh on each run; DIR/*/secret.yaml are
mode 0600.

A stack file value that has no Kubernetes equivalent (a pids limit, a
published host address) is refused as FILE:LINE:COL: field: why; what to
do. Storage "auto" exports as sftp. Tiers whose pods cannot meet the
restricted Pod Security Standard are listed on stderr with the reason; the
Namespace enforces the level they need and warns at restricted.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := exportOptions{Dir: "kubernetes", Tag: versionTag(), PodCIDR: kube.DefaultPodCIDR.String()}
			usage := "read the stack from `FILE` instead of ./" + defaultFile
			fs.StringVar(&o.File, "f", "", usage)
			fs.StringVar(&o.File, "file", "", usage)
			fs.StringVar(&o.Dir, "o", o.Dir, "write the manifests under `DIR`")
			fs.StringVar(&o.Namespace, "namespace", "", "the `NS` to put the stack in (default bulkhead-STACK)")
			fs.StringVar(&o.Registry, "registry", "", "prefix image names with `REGISTRY`")
			fs.StringVar(&o.Tag, "tag", o.Tag, "the images' `TAG`")
			fs.StringVar(&o.PodCIDR, "pod-cidr", o.PodCIDR, "the cluster's pod network `CIDR`: visitors' policy excludes it, and the database, app and storage admit their clients from it")
			fs.BoolVar(&o.Ingress, "ingress", false, "also write an Ingress for the stack's domain")
			fs.StringVar(&o.IngressNS, "ingress-namespace", "ingress-nginx", "the `NS` the Ingress controller runs in")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) != 1 || args[0] != "kubernetes" {
					return usageErrorf("export takes one target, kubernetes")
				}
				return runExport(ctx, s, o)
			}
		},
	}
}

// versionTag is the images' default tag: this bulkhead's version.
func versionTag() string {
	if Version != "" {
		return Version
	}
	return devVersion
}

func runExport(_ context.Context, s stdio, o exportOptions) error {
	cidr, err := netip.ParsePrefix(o.PodCIDR)
	if err != nil || !cidr.Addr().Is4() {
		return usageErrorf("--pod-cidr %q: give the cluster's IPv4 pod network, e.g. 10.244.0.0/16", o.PodCIDR)
	}
	file, data, err := readStackFile(o.File, "pass -f FILE")
	if err != nil {
		return err
	}
	st, err := spec.Load(file, data, spec.Env{DirExists: func(string) bool { return true }, FileExists: fileExists})
	if err != nil {
		return err
	}
	if err := kube.Check(st); err != nil {
		return err
	}
	if t := st.ByRole(spec.RoleStorage); t != nil && t.Protocol == spec.ProtocolAuto {
		t.Protocol = spec.ProtocolSFTP
	}
	p, err := plan.Build(st)
	if err != nil {
		return err
	}
	sec, err := secrets.Generate(p)
	if err != nil {
		return err
	}
	e, err := kube.Build(p, kube.Options{Namespace: o.Namespace, Registry: o.Registry, Tag: o.Tag, PodCIDR: cidr.Masked(),
		Ingress: o.Ingress, IngressNamespace: o.IngressNS, Secrets: sec.Secrets})
	if err != nil {
		return err
	}
	files, err := e.Files()
	if err != nil {
		return err
	}
	for _, f := range files {
		path := filepath.Join(o.Dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, f.Data, fs.FileMode(f.Mode)); err != nil {
			return err
		}
		// WriteFile keeps an older file's mode.
		if err := os.Chmod(path, fs.FileMode(f.Mode)); err != nil {
			return err
		}
	}
	for _, r := range e.Restrictions {
		fmt.Fprintf(s.err, "pod security: %s\n", r)
	}
	fmt.Fprintf(s.out, "wrote %d files to %s for namespace %s\n", len(files), o.Dir, e.Namespace)
	fmt.Fprintf(s.out, "\nNext, build and push the images under %s/images, then:\n\n  kubectl apply -k %s\n", o.Dir, o.Dir)
	return nil
}
