// Package pkgs knows which Debian packages a plan's nodes and the host side
// need, which of them are missing, and how to install them without starting
// any of their services: bulkhead runs every daemon itself, in a node.
package pkgs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// host is what the host side always needs: runc for the containers,
// nftables and iproute2 for the namespaces, util-linux for nsenter,
// setpriv and loop mounts, e2fsprogs for each node's disk image.
var host = []string{"coreutils", "e2fsprogs", "iproute2", "nftables", "runc", "util-linux"}

// Needed lists the Debian packages a plan's nodes and the host side need,
// sorted, deduplicated. It names only what the plan uses.
func Needed(p *plan.Plan) []string {
	out := slices.Clone(host)
	if d, err := catalog.Lookup(spec.RoleStorage, p.Storage); err == nil {
		out = append(out, d.HostPackages...)
	}
	for i := range p.Nodes {
		out = append(out, p.Packages(&p.Nodes[i])...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// validName is Debian policy's package name, optionally with an
// architecture. Checking it keeps a name from being read as an option.
var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$`)

func checkNames(pkgs []string) error {
	var bad []string
	for _, p := range pkgs {
		if !validName.MatchString(p) {
			bad = append(bad, fmt.Sprintf("%q", p))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("not a Debian package name: %s", strings.Join(bad, ", "))
	}
	return nil
}

// Missing returns which of pkgs are not installed, in the order given. A
// package that dpkg knows but has not fully installed (unpacked, half
// configured, removed with its config files kept) counts as missing.
func Missing(ctx context.Context, pkgs []string) ([]string, error) {
	if len(pkgs) == 0 {
		return nil, nil
	}
	if err := checkNames(pkgs); err != nil {
		return nil, fmt.Errorf("query packages: %w", err)
	}
	args := append([]string{"-W", "-f=${db:Status-Abbrev}\t${binary:Package}\t${Package}\n", "--"}, pkgs...)
	cmd := exec.CommandContext(ctx, "dpkg-query", args...)
	cmd.Env = append(cmd.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		err = nil // some package is unknown to dpkg: an answer, not a failure
	}
	if err != nil {
		return nil, fmt.Errorf("dpkg-query %s: %w: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(stderr.String()))
	}
	installed := map[string]bool{}
	for line := range strings.Lines(stdout.String()) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		// "ii " is installed; "hi " held and installed. The third column is
		// an error flag, such as R for reinstall required.
		if len(f) != 3 || len(f[0]) != 3 || f[0][1] != 'i' || f[0][2] != ' ' {
			continue
		}
		installed[f[1]] = true
		installed[f[2]] = true
	}
	var out []string
	for _, p := range pkgs {
		if !installed[p] {
			out = append(out, p)
		}
	}
	return out, nil
}
