package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// A journal that cannot be read (cut short by a full disk, emptied by
// hand) would leave a stack that down cannot remove. Everything up makes
// has a name that plan gives it, though, and most of it a mark of its
// stack: down finds those instead, and removes only what is this stack's
// beyond doubt.

// damagedJournal says a journal's file is there but does not parse.
type damagedJournal struct {
	path, stack string
	err         error
}

func (e *damagedJournal) Error() string {
	return fmt.Sprintf("read %s: %v; it records what up made: restore it from a backup, or run 'bulkhead down --stack %s', which finds what the stack has on the host by its names instead (network namespaces and containers bh-%s-*, links %s-*, nftables tables %s, mounts under %s, its supervisor)",
		e.path, e.err, e.stack, e.stack, e.stack, plan.HostTable(e.stack), filepath.Dir(e.path))
}

func (e *damagedJournal) Unwrap() error { return e.err }

// found is what findObjects found of a stack on the host.
type found struct {
	objects []Object
	ids     map[string]uint32 // the nodes' id blocks, as their roots' owners say
	// unsandboxed says the nodes' roots belong to the host's root: the
	// stack ran without its sandbox.
	unsandboxed bool
	notes       []string // what looks like the stack's but is left alone, and why
}

// findObjects finds what up made for stack on the host, by the names it
// gives things, for a down whose journal cannot say:
//   - the supervisor and its keeper by their command lines;
//   - containers whose bundle is in one of the stack's node directories;
//   - network namespaces bh-STACK-NODE of a node the stack has a
//     directory for (or its outside vantage), unless another stack on this
//     host has a node of that name too (a stack "shop-a" with node "x",
//     and "shop" with node "a-x");
//   - bridges and veths whose alias names the stack;
//   - the host's nftables tables of the stack;
//   - mounts under the stack's directory: its nodes' disk images and site
//     mount points.
//
// The nodes' id blocks come from the owners of their roots.
func (d *Driver) findObjects(ctx context.Context, stack string) (*found, error) {
	sys := d.sys()
	ps := d.paths(stack)
	f := &found{ids: map[string]uint32{}}
	var errs []error
	add := func(kind string, names []string, detail func(string) string) {
		slices.Sort(names)
		for _, n := range slices.Compact(names) {
			o := Object{Kind: kind, Name: n}
			if detail != nil {
				o.Detail = detail(n)
			}
			f.objects = append(f.objects, o)
		}
	}

	procs, err := sys.pairProcesses(ps.binary(), stack, d.root())
	errs = append(errs, err)
	f.objects = append(f.objects, procs...)

	nodes := d.stackNodes(stack)
	cs, err := sys.listContainers(ctx)
	errs = append(errs, err)
	var containers []string
	for _, c := range cs {
		if under(c.Bundle, filepath.Join(ps.stack, "nodes")) {
			containers = append(containers, c.ID)
		}
	}
	slices.Sort(containers)
	if p, err := d.savedPlan(stack); err == nil {
		// Down stops the last started first: the edge, so that visitors
		// meet no node half gone.
		rank := map[string]int{}
		for i, n := range slices.Concat(startOrder(p)...) {
			rank[n.Container] = i + 1
		}
		slices.SortStableFunc(containers, func(a, b string) int { return rank[a] - rank[b] })
	}
	for _, c := range containers {
		f.objects = append(f.objects, Object{Kind: KindContainer, Name: c})
	}

	var srvs, vols []string
	mounts, err := sys.mountsUnder(ps.stack)
	errs = append(errs, err)
	for _, m := range mounts {
		rel, _ := filepath.Rel(filepath.Join(ps.stack, "nodes"), m)
		parts := strings.Split(rel, string(filepath.Separator))
		switch {
		case len(parts) == 2 && parts[1] == "vol":
			vols = append(vols, m)
		case len(parts) >= 2 && parts[1] == "srv" && (len(parts) == 2 || len(parts) == 3 && slices.Contains([]string{"shared", "site"}, parts[2])),
			len(parts) == 2 && parts[1] == stageDir:
			// An sshfs on srv/shared, or on the node's stage, goes with
			// srv (see unmount).
			srvs = append(srvs, filepath.Join(ps.stack, "nodes", parts[0], "srv"))
		case len(parts) >= 2 && parts[1] == "vol":
			// Within a disk image: goes with it.
		default:
			f.notes = append(f.notes, fmt.Sprintf("mount %s: not one up makes", m))
		}
	}
	add(KindMount, srvs, nil)
	add(KindVolume, vols, func(vol string) string { return nodePaths(filepath.Dir(vol)).image() })

	ns, err := sys.listNetns()
	errs = append(errs, err)
	others := d.otherStacks(stack)
	var namespaces []string
	for _, n := range ns {
		node, ok := strings.CutPrefix(n, "bh-"+stack+"-")
		if !ok || !slices.Contains(nodes, node) {
			continue
		}
		if o := claimedBy(n, others); o != "" {
			f.notes = append(f.notes, fmt.Sprintf("network namespace %s: stack %s has a node of that name too", n, o))
			continue
		}
		namespaces = append(namespaces, n)
	}
	add(KindNetns, namespaces, nil)

	links, err := sys.listLinks()
	errs = append(errs, err)
	bridgeRE := regexp.MustCompile(`^` + regexp.QuoteMeta(stack) + `-(pri|pub|dmz)$`)
	vethRE := regexp.MustCompile(`^` + regexp.QuoteMeta(stack) + `-[0-9]+[pud]$`)
	var bridges, veths []string
	for _, l := range links {
		if a := strings.Fields(l.Alias); len(a) < 2 || a[0] != "bulkhead" || a[1] != stack {
			continue
		}
		switch {
		case l.Bridge && bridgeRE.MatchString(l.Name):
			bridges = append(bridges, l.Name)
		case !l.Bridge && vethRE.MatchString(l.Name):
			veths = append(veths, l.Name)
		default:
			f.notes = append(f.notes, fmt.Sprintf("interface %s: its alias names the stack, but up gives no interface that name", l.Name))
		}
	}
	add(KindVeth, veths, nil)
	add(KindBridge, bridges, nil)

	var tables []string
	for _, family := range hostFamilies {
		if sys.nftHasTable(ctx, "", family, plan.HostTable(stack)) {
			tables = append(tables, family+" "+plan.HostTable(stack))
		}
	}
	add(KindNftTable, tables, nil)

	// A sandboxed node's root belongs to the first id of its block; an
	// unsandboxed one's to the host's root.
	roots := 0
	for _, n := range nodes {
		uid, err := sys.fileOwner(ps.nodeRoot(n))
		if err != nil {
			continue
		}
		roots++
		if uid >= idFirst && (uid-idFirst)%idRange == 0 && uid < idFirst+idBlocks*idRange {
			f.ids[n] = uint32(uid)
		}
	}
	f.unsandboxed = roots > 0 && len(f.ids) == 0
	return f, errors.Join(errs...)
}

// under reports whether path is dir or beneath it.
func under(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// stackNodes lists the nodes stack has had: those with a directory (kept
// until down --purge), those of its saved plan if it reads, and its
// outside vantage.
func (d *Driver) stackNodes(stack string) []string {
	names := []string{spec.Outside}
	ents, _ := os.ReadDir(filepath.Join(d.paths(stack).stack, "nodes"))
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if p, err := d.savedPlan(stack); err == nil {
		for _, n := range p.Nodes {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// otherStacks maps each other stack on this host whose name could make
// names that start as stack's do (stack-...) to its nodes.
func (d *Driver) otherStacks(stack string) map[string][]string {
	out := map[string][]string{}
	ents, err := os.ReadDir(d.root())
	if err != nil {
		return out
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), stack+"-") {
			out[e.Name()] = d.stackNodes(e.Name())
		}
	}
	return out
}

// claimedBy returns the stack of others that has a node whose namespace
// is ns, if any.
func claimedBy(ns string, others map[string][]string) string {
	for _, o := range slices.Sorted(maps.Keys(others)) {
		if node, ok := strings.CutPrefix(ns, "bh-"+o+"-"); ok && slices.Contains(others[o], node) {
			return o
		}
	}
	return ""
}

// downFound is Down for a stack whose journal cannot be read (cause): it
// finds the stack's objects by their names, keeps the damaged journal
// beside a new one that records them, with the nodes' id blocks as their
// roots say, and removes them as down removes what a journal records. It
// says what it did, and what it left alone.
func (d *Driver) downFound(ctx context.Context, stack string, purge bool, cause *damagedJournal) error {
	ps := d.paths(stack)
	d.progress("the journal %s cannot be read (%v); finding the stack's objects by their names instead", cause.path, cause.err)
	f, err := d.findObjects(ctx, stack)
	if err != nil {
		return fmt.Errorf("find stack %s's objects: %w", stack, err)
	}
	kept := ps.journal() + ".damaged"
	if err := os.Rename(ps.journal(), kept); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	j := &journal{path: ps.journal(), Stack: stack, Objects: f.objects, Unsandboxed: f.unsandboxed}
	if len(f.ids) > 0 {
		j.IDs = f.ids
	}
	j.mu.Lock()
	err = j.save()
	j.mu.Unlock()
	if err != nil {
		return err
	}
	d.progress("kept the damaged journal as %s; a new one records what was found", kept)
	var counts []string
	for _, kind := range destroyOrder {
		if n := len(j.list(kind)); n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, plural(kind, n)))
		}
	}
	if len(counts) == 0 {
		counts = []string{"nothing"}
	}
	d.progress("found by name: %s", strings.Join(counts, ", "))
	for _, n := range f.notes {
		d.progress("left alone: %s", n)
	}
	d.progress("left alone: the neighbour-table limits, and forwarding on an interface the stack published on, if up raised them: their earlier values were in the journal")
	return d.destroy(ctx, stack, j, purge)
}
