package nft_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
)

func scratchNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("bhtest-nft-%d", os.Getpid())
	ctx := context.Background()
	if err := netns.Add(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(context.Background(), name); err != nil {
			t.Error(err)
		}
	})
	return name
}

// list returns the ruleset in ns ("" for the host), failing the test when
// nft does: two failed listings must not compare equal.
func list(t *testing.T, ns string) string {
	t.Helper()
	out, err := nft.List(context.Background(), ns)
	if err != nil {
		t.Fatalf("list ruleset in %q: %v", ns, err)
	}
	return out
}

const ruleset = `table inet bulkhead
delete table inet bulkhead
table inet bulkhead {
	set from_app {
		type ipv4_addr
		elements = { 10.99.0.7, 10.99.0.8 }
	}
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		iifname "private" ip saddr @from_app tcp dport 3306 accept
	}
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
	}
}
`

// TestApplyReplaces applies the same ruleset twice and expects one copy, as
// router7's test does: rules must be replaced, not appended.
func TestApplyReplaces(t *testing.T) {
	hosttest.RequireRoot(t)
	ns := scratchNetns(t)
	ctx := context.Background()
	if err := nft.Apply(ctx, ns, []byte(ruleset)); err != nil {
		t.Fatal(err)
	}
	first := list(t, ns)
	if err := nft.Apply(ctx, ns, []byte(ruleset)); err != nil {
		t.Fatal(err)
	}
	second := list(t, ns)
	if first != second {
		t.Fatalf("second apply changed the ruleset:\n%s\n---\n%s", first, second)
	}
	rs, err := nft.Read(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Tables) != 1 || rs.Tables[0] != "inet bulkhead" {
		t.Errorf("tables %v", rs.Tables)
	}
	in := rs.Chains["inet bulkhead input"]
	if in.Hook != "input" || in.Policy != "drop" || in.Rules != 2 {
		t.Errorf("input chain %+v", in)
	}
	if got := rs.Sets["inet bulkhead from_app"]; len(got) != 2 || got[0] != "10.99.0.7" {
		t.Errorf("set from_app = %v", got)
	}
	// The host's ruleset is untouched by work inside the namespace.
	host := list(t, "")
	if host == first {
		t.Error("the ruleset landed on the host")
	}
}

func TestApplyIsAtomic(t *testing.T) {
	hosttest.RequireRoot(t)
	ns := scratchNetns(t)
	ctx := context.Background()
	if err := nft.Apply(ctx, ns, []byte(ruleset)); err != nil {
		t.Fatal(err)
	}
	before := list(t, ns)
	// The broken rule comes last: nothing before it may be applied either.
	broken := "delete table inet bulkhead\ntable inet bulkhead { chain input { type filter hook input priority filter; policy accept; }\n chain x { tcp dport 99999 accept } }\n"
	if err := nft.Apply(ctx, ns, []byte(broken)); err == nil {
		t.Fatal("a ruleset with port 99999 was accepted")
	}
	after := list(t, ns)
	if before != after {
		t.Fatalf("a failed apply changed the ruleset:\n%s\n---\n%s", before, after)
	}
}
