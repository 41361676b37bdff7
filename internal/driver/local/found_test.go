package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
	"github.com/bulkhead/bulkhead/internal/sshfs"
)

// TestDownFindsByNameOnTheKernel: with its journal cut short, down finds
// a stack's kernel objects by their names and marks (a bridge and a veth
// with the stack's alias, a node's namespace, the host table, a site
// mount point under its directory) and removes them, and leaves what only
// looks like them: a bridge of its name pattern without its alias, and
// the namespace of stack STACK-y's node x.
func TestDownFindsByNameOnTheKernel(t *testing.T) {
	hosttest.RequireRoot(t)
	ctx := context.Background()
	stack := fmt.Sprintf("f%d", os.Getpid()%10000)
	d := &Driver{Root: filepath.Join(tempDir(t), "root")}
	ps := d.paths(stack)
	srv := ps.node("x").srv()
	br, decoy, veth, ns, otherNS := stack+"-pri", stack+"-dmz", stack+"-1p", "bh-"+stack+"-x", "bh-"+stack+"-y-x"
	table := "inet " + "bulkhead_" + stack
	t.Cleanup(func() {
		for _, l := range []string{veth, br, decoy} {
			netns.DeleteLink(ctx, l)
		}
		for _, n := range []string{ns, otherNS} {
			netns.Delete(ctx, n)
		}
		nft.DeleteTable(ctx, "", "inet", "bulkhead_"+stack)
		sshfs.ReleaseTarget(srv)
	})
	for _, dir := range []string{srv, filepath.Join(d.root(), stack+"-y", "nodes", "x")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Each subnet is the bridge's before anything else exists: nothing
	// of them can take the default route.
	if err := netns.AddBridge(ctx, br, "10.214.0.1/24", "bulkhead "+stack+" private"); err != nil {
		t.Fatal(err)
	}
	if err := netns.AddBridge(ctx, decoy, "10.214.1.1/24", "not bulkhead's"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ns, otherNS} {
		if err := netns.Add(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := netns.AddVeth(ctx, netns.Veth{Host: veth, Bridge: br, Netns: ns, Name: "private", Addr: "10.214.0.2/24", Alias: "bulkhead " + stack + " x private"}); err != nil {
		t.Fatal(err)
	}
	if err := nft.Apply(ctx, "", []byte("table "+table+" {\n}\n")); err != nil {
		t.Fatal(err)
	}
	if err := sshfs.PrepareTarget(srv); err != nil {
		t.Fatal(err)
	}

	f, err := d.findObjects(ctx, stack)
	if err != nil {
		t.Fatal(err)
	}
	want := []Object{{Kind: KindMount, Name: srv}, {Kind: KindNetns, Name: ns}, {Kind: KindVeth, Name: veth}, {Kind: KindBridge, Name: br}, {Kind: KindNftTable, Name: table}}
	if !slices.Equal(f.objects, want) {
		t.Errorf("found\n\t%v\nwant\n\t%v", f.objects, want)
	}

	if err := os.WriteFile(ps.journal(), []byte(`{"stack": "`+stack+`", "obj`), 0o600); err != nil {
		t.Fatal(err)
	}
	var said strings.Builder
	d.Progress = &said
	if err := d.Down(ctx, stack, false); err != nil {
		t.Fatalf("down: %v\n%s", err, said.String())
	}
	if !strings.Contains(said.String(), "found by name: 1 mount, 1 network namespace, 1 veth pair, 1 bridge, 1 host nft table") {
		t.Errorf("down said:\n%s", said.String())
	}
	if netns.LinkExists(br) || netns.LinkExists(veth) || netns.Exists(ns) || nft.HasTable(ctx, "", "inet", "bulkhead_"+stack) {
		t.Errorf("down left the stack's bridge, veth, namespace or table")
	}
	if mounted, _ := (realSystem{}).mountsUnder(ps.stack); len(mounted) > 0 {
		t.Errorf("down left mounts: %q", mounted)
	}
	if !netns.LinkExists(decoy) || !netns.Exists(otherNS) {
		t.Errorf("down removed the bridge without the stack's alias, or stack %s-y's namespace", stack)
	}
}
