package nft

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
)

// readRuleset has what Read must tell apart: two families, base chains
// on three hooks with both policies, a regular chain, an address set, an
// interval set and a concatenation.
const readRuleset = `table inet bulkhead {
	set from_app {
		type ipv4_addr
		elements = { 10.99.0.7, 10.99.0.10, 10.99.0.8 }
	}
	set nets {
		type ipv4_addr
		flags interval
		elements = { 10.98.0.0/24, 10.97.1.0/28 }
	}
	set pairs {
		type ifname . ipv4_addr
		elements = { "private" . 10.99.0.7, "public" . 10.99.1.2 }
	}
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		iifname "private" ip saddr @from_app tcp dport 3306 accept
		jump extra
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain extra {
		ip saddr @nets drop
	}
}
table bridge other {
	chain pre {
		type filter hook prerouting priority filter; policy accept;
		meta nftrace set 1
	}
}
`

// TestReadAgreesWithNft holds Read, which asks the kernel over netlink, to
// what nft -j lists of the same ruleset.
func TestReadAgreesWithNft(t *testing.T) {
	hosttest.RequireRoot(t)
	ctx := context.Background()
	ns := fmt.Sprintf("bhtest-nftread-%d", os.Getpid())
	if err := netns.Add(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(context.Background(), ns); err != nil {
			t.Error(err)
		}
	})
	if err := Apply(ctx, ns, []byte(readRuleset)); err != nil {
		t.Fatal(err)
	}
	got, err := Read(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	want, err := readJSON(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got.Tables)
	slices.Sort(want.Tables)
	if !reflect.DeepEqual(got.Tables, want.Tables) {
		t.Errorf("tables %v, nft lists %v", got.Tables, want.Tables)
	}
	if !reflect.DeepEqual(got.Chains, want.Chains) {
		t.Errorf("chains %+v, nft lists %+v", got.Chains, want.Chains)
	}
	for k, elems := range want.Sets {
		if len(got.Sets[k]) != len(elems) {
			t.Errorf("set %s has %d elements %v, nft lists %d: %v", k, len(got.Sets[k]), got.Sets[k], len(elems), elems)
		}
	}
	if len(got.Sets) != len(want.Sets) {
		t.Errorf("%d sets, nft lists %d", len(got.Sets), len(want.Sets))
	}
	// Addresses read as nft writes them.
	if g := got.Sets["inet bulkhead from_app"]; !reflect.DeepEqual(g, []string{"10.99.0.10", "10.99.0.7", "10.99.0.8"}) {
		t.Errorf("set from_app = %v", g)
	}
}
