package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/bulkhead/bulkhead/internal/kernel"
	"github.com/bulkhead/bulkhead/internal/matrix"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/secrets"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// defaultFile is the stack file verbs read when -f is not given.
const defaultFile = "bulkhead.yaml"

type planOptions struct {
	stackFlags
	// Output is "text" or "json".
	Output string
	// Render, if set, is a directory to write every node's rendered files to.
	Render string
}

func planCommand() *command {
	return &command{
		name:    "plan",
		args:    stackSynopsis + " [--output text|json] [--render DIR]",
		summary: "check a stack file and show its nodes, flows and reachability",
		help: `
Plan reads a stack file, checks it, and prints what bulkhead would run: every
node with its addresses and limits, the flows between tiers (the only traffic
allowed; everything else is dropped both ways), and the reachability matrix
that the running stack must match. It changes nothing on this host.

Every problem in the file is reported at once, as FILE:LINE:COL: field: what
is wrong; what to do.

A storage tier with protocol "auto" uses nfs if this kernel can mount NFS and
sftp otherwise; plan says which it chose and why.

With --render, plan also writes every node's configuration files to
DIR/NODE/PATH and the daemons each node runs to DIR/NODE/services.json. The
keys, certificates and passwords in them are generated afresh on each run, for
inspection only.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := planOptions{Output: "text"}
			o.stackFlags.bind(fs)
			fs.Var(choice{&o.Output, []string{"text", "json"}}, "output", "print the plan as `text|json`")
			fs.StringVar(&o.Render, "render", "", "also write every node's rendered files under `DIR`")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("plan takes no arguments, got %q; pass the stack file with -f", args[0])
				}
				return runPlan(ctx, s, o)
			}
		},
	}
}

// canMountNFS is kernel.CanMountNFS; tests replace it so that their output
// does not depend on the kernel they run on.
var canMountNFS = kernel.CanMountNFS

func runPlan(_ context.Context, s stdio, o planOptions) error {
	p, err := loadPlan(s, o.File, true)
	if err != nil {
		return err
	}
	if err := o.check(o.File, p.Stack); err != nil {
		return err
	}
	if o.Render != "" {
		if err := renderTo(p, o.Render); err != nil {
			return err
		}
		fmt.Fprintf(s.err, "rendered %d nodes into %s; the secrets in it are freshly generated, for inspection only\n", len(p.Nodes), o.Render)
	}
	if o.Output == "json" {
		data, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			return fmt.Errorf("encode plan: %w", err)
		}
		_, err = s.out.Write(append(data, '\n'))
		return err
	}
	return printPlan(s.out, p)
}

// loadPlan reads, validates and plans the stack file, resolving the storage
// protocol "auto" for this kernel, and for a driver that can mount NFS
// only if nfsOK.
func loadPlan(s stdio, file string, nfsOK bool) (*plan.Plan, error) {
	st, err := loadSpec(s, file, nfsOK)
	if err != nil {
		return nil, err
	}
	return plan.Build(st)
}

// loadSpec is loadPlan without the plan: the validated stack, with the
// storage protocol resolved.
func loadSpec(s stdio, file string, nfsOK bool) (*spec.Stack, error) {
	return loadSpecWith(s, file, nfsOK, dirExists)
}

// loadSpecWith is loadSpec with siteOK saying whether the site directory
// may be what it is.
func loadSpecWith(s stdio, file string, nfsOK bool, siteOK func(string) bool) (*spec.Stack, error) {
	file, data, err := readStackFile(file, "run 'bulkhead init' first or pass -f FILE")
	if err != nil {
		return nil, err
	}
	st, err := spec.Load(file, data, spec.Env{DirExists: siteOK, FileExists: fileExists})
	if err != nil {
		return nil, err
	}
	if t := st.ByRole(spec.RoleStorage); t != nil && t.Protocol == spec.ProtocolAuto {
		ok, why := canMountNFS()
		t.Protocol = spec.ProtocolSFTP
		switch {
		case ok && nfsOK:
			t.Protocol = spec.ProtocolNFS
		case ok:
			// As of 2026-11 the local driver mounts storage over sftp
			// only: no kernel it was built on could mount NFS.
			why += ", but the local driver mounts storage over sftp only"
		}
		fmt.Fprintf(s.err, "storage: %s (auto: %s)\n", t.Protocol, why)
	}
	return st, nil
}

// readStackFile reads file, or ./bulkhead.yaml if file is empty; a missing
// default file gets an error that ends with hint.
func readStackFile(file, hint string) (string, []byte, error) {
	explicit := file != ""
	if !explicit {
		file = defaultFile
	}
	data, err := os.ReadFile(file)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return file, nil, fmt.Errorf("no %s here; %s", defaultFile, hint)
		}
		return file, nil, fmt.Errorf("read stack file: %w", err)
	}
	return file, data, nil
}

func fileExists(file string) bool {
	fi, err := os.Stat(file)
	return err == nil && fi.Mode().IsRegular()
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// renderTo writes every node's rendered files to dir/NODE/PATH, and its
// services to dir/NODE/services.json, with freshly generated secrets.
func renderTo(p *plan.Plan, dir string) error {
	sec, err := secrets.Generate(p)
	if err != nil {
		return err
	}
	nodes, err := render.Render(p, render.Input{Layout: render.DefaultLayout(), Secrets: sec.Secrets})
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range nodes {
		for _, f := range n.Files {
			errs = append(errs, writeFile(dir, n.Name, f.Path, f.Data, fs.FileMode(f.Mode)))
		}
		svcs := n.Services
		if svcs == nil {
			svcs = []service.Service{}
		}
		data, err := json.MarshalIndent(svcs, "", "  ")
		if err != nil {
			return fmt.Errorf("encode services of %s: %w", n.Name, err)
		}
		errs = append(errs, writeFile(dir, n.Name, "services.json", append(data, '\n'), 0o644))
	}
	return errors.Join(errs...)
}

func writeFile(dir, node, name string, data []byte, mode fs.FileMode) error {
	if !filepath.IsLocal(name) {
		return fmt.Errorf("write %s of %s: the path leaves the node's directory", name, node)
	}
	path := filepath.Join(dir, node, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Remove first: an earlier run may have left a read-only file, and
	// WriteFile would keep its old mode.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, data, mode.Perm()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// printPlan writes the plan as tables for people.
func printPlan(w io.Writer, p *plan.Plan) error {
	ew := new(bytes.Buffer)
	fmt.Fprintf(ew, "stack %s: domain %s", p.Stack, p.Domain)
	if p.Storage != "" {
		fmt.Fprintf(ew, ", storage over %s", p.Storage)
	}
	fmt.Fprintln(ew)
	fmt.Fprintf(ew, "published on http://%s and https://%s\n", p.Publish.HTTP, p.Publish.HTTPS)

	fmt.Fprint(ew, "\nNETWORKS\n")
	tw := table(ew)
	fmt.Fprint(tw, "NAME\tSUBNET\tBRIDGE\tHOST ADDRESS\n")
	for _, n := range p.Networks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Subnet, n.Bridge, n.Gateway)
	}
	tw.Flush()

	fmt.Fprint(ew, "\nNODES\n")
	tw = table(ew)
	fmt.Fprint(tw, "NAME\tROLE\tSOFTWARE")
	for _, n := range p.Networks {
		fmt.Fprint(tw, "\t"+strings.ToUpper(n.Name))
	}
	fmt.Fprint(tw, "\tMEMORY\tPIDS\tDISK\tCPU\n")
	for _, n := range p.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s", n.Name, n.Role, n.Software)
		for _, net := range p.Networks {
			addr := "-"
			if a := n.Addr(net.Name); a.IsValid() {
				addr = a.String()
			}
			fmt.Fprint(tw, "\t"+addr)
		}
		fmt.Fprintf(tw, "\t%s\t%d\t%s\t%d\n", spec.ByteSize(n.Memory), n.Pids, spec.ByteSize(n.Disk), n.CPUWeight)
	}
	tw.Flush()

	fmt.Fprint(ew, "\nFLOWS (the only traffic allowed; everything else is dropped both ways)\n")
	tw = table(ew)
	fmt.Fprint(tw, "FROM → TO\tPORT\tNETWORK\tWHY\n")
	for _, f := range p.Flows {
		fmt.Fprintf(tw, "%s → %s\t%s\t%s\t%s\n", f.From, f.To, portString(f.Port), f.Network, f.Why)
	}
	tw.Flush()

	if m := p.Mail; m != nil {
		fmt.Fprintf(ew, "\nMAIL: app nodes hand mail to the relay at %s; ", m.Relay)
		if m.Hold() {
			fmt.Fprint(ew, "no smarthost, so it holds every message ('bulkhead mail list' shows them)\n")
		} else {
			fmt.Fprintf(ew, "it relays to %s, tls %s", m.Smarthost, m.TLS)
			if m.Username != "" {
				fmt.Fprintf(ew, ", login %s", m.Username)
			}
			fmt.Fprintln(ew)
		}
	}
	if len(p.Egress) > 0 {
		fmt.Fprint(ew, "\nEGRESS (the only traffic that leaves the stack; the host masquerades it)\n")
		tw = table(ew)
		fmt.Fprint(tw, "NAME\tFROM → TO\tPORT\tVIA\tWHY\n")
		for _, e := range p.Egress {
			fmt.Fprintf(tw, "%s\t%s (%s) → %s\t%s\t%s\t%s\n", e.Name, e.Node, e.Source, e.Target.Addr(), portString(e.Port()), e.Via, e.Why)
		}
		tw.Flush()
	}

	fmt.Fprintf(ew, "\nREACHABILITY (rows are sources, columns destination and port; %s allowed, %s denied)\n", matrix.Allowed, matrix.Denied)
	if err := matrix.Layout(p, matrix.Expected(&p.Matrix), nil).WriteText(ew); err != nil {
		return err
	}
	_, err := w.Write(ew.Bytes())
	return err
}

func portString(p plan.Port) string { return fmt.Sprintf("%d/%s", p.Number, p.Proto) }

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }
