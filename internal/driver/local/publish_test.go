package local

import (
	"context"
	"slices"
	"testing"
)

// TestKeepPublished: a supervisor that finds no kernel table for the
// stack's published ports (a stack an older bulkhead brought up, whose
// supervisor forwarded them itself) puts the host's tables back, records
// them for down, and sets the routing they need; with the table there, it
// does nothing.
func TestKeepPublished(t *testing.T) {
	s := newFakeStack(t)
	p := planWithApps(t, 1)
	s.mustUp(t, p)
	ctx := context.Background()
	if err := s.d.keepPublished(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ops := s.f.take(); len(ops) > 0 {
		t.Errorf("with the table there: %q, want nothing done", ops)
	}
	if err := s.d.sys().nftDeleteTable(ctx, "", "ip", p.HostNFT); err != nil {
		t.Fatal(err)
	}
	j, err := loadJournal(s.d.paths(p.Stack).journal(), p.Stack)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.forget(Object{Kind: KindNftTable, Name: "ip " + p.HostNFT}); err != nil {
		t.Fatal(err)
	}
	s.f.take()
	if err := s.d.keepPublished(ctx, p); err != nil {
		t.Fatal(err)
	}
	want := []string{"nft apply host bridge bulkhead_n, inet bulkhead_n, ip bulkhead_n", "sysctl net/ipv4/conf/n-pub/route_localnet = 1"}
	if ops := s.f.take(); !slices.Equal(ops, want) {
		t.Errorf("without the table: %q, want %q", ops, want)
	}
	if !slices.ContainsFunc(s.journal(t, p.Stack), func(o Object) bool { return o == Object{Kind: KindNftTable, Name: "ip " + p.HostNFT} }) {
		t.Errorf("the journal does not record the table for down")
	}
}
