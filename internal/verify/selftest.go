package verify

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/nft"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Mutation is one deliberate break of a running stack that verify must
// see, and see exactly.
type Mutation struct {
	Name string `json:"name"`
	// Break plants the hole and returns what undoes it.
	breakIt func(ctx context.Context) (restore func(context.Context) error, err error)
	// explains says whether a failure line is this break's doing.
	explains func(r *Report) []string
}

// Outcome is how verify fared against one mutation.
type Outcome struct {
	Mutation string   `json:"mutation"`
	Caught   bool     `json:"caught"`
	Failures []string `json:"failures"`
	// Stray lists failures the mutation does not explain; any makes the
	// outcome a miss, since verify must report exactly the break.
	Stray []string `json:"stray,omitempty"`
}

// Mutations lists the breaks the self-test plants in stack p:
//   - one rule widened: the edge's public side also accepts tcp/22;
//   - a rogue listener in an app node (tcp/8081, as a web shell would);
//   - a node's ruleset replaced by one that accepts everything;
//   - the host's own guard table removed;
//   - a published port rewritten to another node than the edge;
//   - a UDP hole: the cache node also accepts udp/11211 (memcached's
//     UDP side, a classic amplifier);
//   - anti-spoofing removed for one node: the host's bridge table no
//     longer checks the source address of what it sends.
func Mutations(p *plan.Plan) []Mutation {
	var ms []Mutation
	if n := pick(p, spec.RoleEdge); n != nil {
		const port = 22
		iface := n.Ifaces[0].Network
		if n.Iface(plan.NetPublic) != nil {
			iface = plan.NetPublic
		}
		ms = append(ms, Mutation{
			Name: fmt.Sprintf("one rule widened: %s also accepts tcp/%d on its %s side", n.Name, port, iface),
			breakIt: func(ctx context.Context) (func(context.Context) error, error) {
				rule := fmt.Sprintf("insert rule inet bulkhead input iifname %q tcp dport %d accept\n", iface, port)
				return restoreNode(n), nft.Apply(ctx, n.Netns, []byte(rule))
			},
			explains: cellsOnly(func(c *Cell) bool { return c.To == n.Name && c.Port == port }),
		})
	}
	if n := pick(p, spec.RoleApp); n != nil {
		const port = 8081
		ms = append(ms, Mutation{
			Name: fmt.Sprintf("a rogue listener: tcp/%d in %s", port, n.Name),
			breakIt: func(ctx context.Context) (func(context.Context) error, error) {
				h, err := netns.Open(n.Netns)
				if err != nil {
					return nil, err
				}
				defer h.Close()
				var l listeners
				err = l.add(h, []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), port)})
				return func(context.Context) error { l.Close(); return nil }, err
			},
			explains: func(r *Report) []string {
				var stray []string
				found := false
				for _, l := range r.Listeners {
					if l.Expected {
						continue
					}
					if l.Node == n.Name && l.Proto == "tcp" && l.Addr.Port() == port {
						found = true
						continue
					}
					stray = append(stray, "unexpected listener: "+l.String())
				}
				stray = append(stray, otherFailures(r, func(*Cell) bool { return false }, nil, false)...)
				if !found {
					stray = append(stray, fmt.Sprintf("(the rogue listener on %s tcp/%d was not reported)", n.Name, port))
				}
				return stray
			},
		})
	}
	n := pick(p, spec.RoleDB)
	if n == nil {
		n = &p.Nodes[len(p.Nodes)-1]
	}
	ms = append(ms, Mutation{
		Name: fmt.Sprintf("accept-all: %s's ruleset replaced by one that accepts everything", n.Name),
		breakIt: func(ctx context.Context) (func(context.Context) error, error) {
			open := "table inet bulkhead\ndelete table inet bulkhead\ntable inet bulkhead {\n" +
				"\tchain input { type filter hook input priority filter; policy accept; }\n" +
				"\tchain output { type filter hook output priority filter; policy accept; }\n}\n"
			return restoreNode(n), nft.Apply(ctx, n.Netns, []byte(open))
		},
		explains: cellsOnly(func(c *Cell) bool { return c.From == n.Name || c.To == n.Name }),
	})
	ms = append(ms, Mutation{
		Name: fmt.Sprintf("host guard removed: table inet %s deleted", p.HostNFT),
		breakIt: func(ctx context.Context) (func(context.Context) error, error) {
			restore := func(ctx context.Context) error { return nft.Apply(ctx, "", render.HostNftables(p)) }
			return restore, nft.DeleteTable(ctx, "", "inet", p.HostNFT)
		},
		explains: cellsOnly(func(c *Cell) bool { return c.To == Host }),
	})
	if m, ok := publishHole(p); ok {
		ms = append(ms, m)
	}
	if m, ok := udpHole(p); ok {
		ms = append(ms, m)
	}
	if m, ok := spoofHole(p); ok {
		ms = append(ms, m)
	}
	return ms
}

// publishHole makes the first published port lead to an app node (or
// the last node) instead of the edge: a rule ahead of the host table's own
// rewrites connections to it there.
func publishHole(p *plan.Plan) (Mutation, bool) {
	if len(p.Published) == 0 {
		return Mutation{}, false
	}
	f := p.Published[0]
	n := pick(p, spec.RoleApp)
	if n == nil {
		n = &p.Nodes[len(p.Nodes)-1]
	}
	to := netip.AddrPortFrom(n.Ifaces[0].Addr, 80)
	return Mutation{
		Name: fmt.Sprintf("a published port leads elsewhere: %s rewritten to %s %s", f.Listen, n.Name, to),
		breakIt: func(ctx context.Context) (func(context.Context) error, error) {
			restore := func(ctx context.Context) error { return nft.Apply(ctx, "", render.HostNftables(p)) }
			rule := fmt.Sprintf("insert rule ip %s output ip daddr %s tcp dport %d dnat to %s\n", p.HostNFT, f.Listen.Addr(), f.Listen.Port(), to)
			return restore, nft.Apply(ctx, "", []byte(rule))
		},
		explains: checkOnly(PublishedCheck, func(e string) bool { return strings.Contains(e, f.Listen.String()) }),
	}, true
}

// udpHole opens udp/11211 on the cache node's private side (or udp/53 on
// the last node, without a cache). The host, whose own output nothing
// filters, reaches it through the hole; nothing in the node serves UDP,
// so what answers there is verify's echo.
func udpHole(p *plan.Plan) (Mutation, bool) {
	n, port := pick(p, spec.RoleCache), 11211
	if n == nil {
		n, port = &p.Nodes[len(p.Nodes)-1], 53
	}
	iface := n.Ifaces[0].Network
	if n.Iface(plan.NetPrivate) != nil {
		iface = plan.NetPrivate
	}
	return Mutation{
		Name: fmt.Sprintf("a UDP hole: %s also accepts udp/%d on its %s side", n.Name, port, iface),
		breakIt: func(ctx context.Context) (func(context.Context) error, error) {
			rule := fmt.Sprintf("insert rule inet bulkhead input iifname %q udp dport %d accept\n", iface, port)
			return restoreNode(n), nft.Apply(ctx, n.Netns, []byte(rule))
		},
		explains: cellsOnly(func(c *Cell) bool { return c.To == n.Name && c.udp() && c.Port == port }),
	}, true
}

// spoofHole takes one node out of the host's anti-spoofing table: the node
// of the first test of the anti-spoofing check whose spoofed SYN nothing
// else would stop, an app node's if there is one (a PHP bug hands over an
// app node first). Without such a test, the hole could not show, and
// there is no mutation.
func spoofHole(p *plan.Plan) (Mutation, bool) {
	tests, _ := spoofs(p, nil)
	var t *spoof
	for i := range tests {
		if !tests[i].Sharp {
			continue
		}
		if t == nil {
			t = &tests[i]
		}
		if p.Node(tests[i].From).Role == spec.RoleApp {
			t = &tests[i]
			break
		}
	}
	if t == nil {
		return Mutation{}, false
	}
	n := p.Node(t.From)
	return Mutation{
		Name: fmt.Sprintf("anti-spoofing removed for %s: the host's bridge table no longer checks its source address", n.Name),
		breakIt: func(ctx context.Context) (func(context.Context) error, error) {
			restore := func(ctx context.Context) error { return nft.Apply(ctx, "", render.HostNftables(p)) }
			return restore, nft.Apply(ctx, "", antiSpoofHole(p, n))
		},
		explains: checkOnly(SpoofCheck, func(e string) bool { return strings.HasPrefix(e, n.Name+" sent a SYN as ") }),
	}, true
}

// antiSpoofHole is the nft script that takes n's bridge ports out of the
// set the host's anti-spoofing rules match.
func antiSpoofHole(p *plan.Plan, n *plan.Node) []byte {
	var ports []string
	for _, i := range n.Ifaces {
		ports = append(ports, fmt.Sprintf("%q", i.Host))
	}
	return []byte(fmt.Sprintf("delete element bridge %s nodes { %s }\n", p.HostNFT, strings.Join(ports, ", ")))
}

func pick(p *plan.Plan, role string) *plan.Node {
	if ns := p.Role(role); len(ns) > 0 {
		return ns[0]
	}
	return nil
}

func restoreNode(n *plan.Node) func(context.Context) error {
	return func(ctx context.Context) error { return nft.Apply(ctx, n.Netns, render.Nftables(n)) }
}

// cellsOnly explains breaks that show as failed cells: those that match,
// and nothing else.
func cellsOnly(match func(*Cell) bool) func(*Report) []string {
	return func(r *Report) []string {
		stray := otherFailures(r, match, nil, true)
		if !slices.ContainsFunc(r.Cells, func(c Cell) bool { return !c.OK && match(&c) }) {
			stray = append(stray, "(no failed cell shows the break)")
		}
		return stray
	}
}

// checkOnly explains breaks that show as errors of the check called name:
// those that match, and nothing else.
func checkOnly(name string, match func(string) bool) func(*Report) []string {
	return func(r *Report) []string {
		explained := func(check, e string) bool { return check == name && match(e) }
		stray := otherFailures(r, func(*Cell) bool { return false }, explained, true)
		if !slices.ContainsFunc(r.Checks, func(ch Check) bool {
			return slices.ContainsFunc(ch.Errors, func(e string) bool { return explained(ch.Name, e) })
		}) {
			stray = append(stray, fmt.Sprintf("(the check %q does not show the break)", name))
		}
		return stray
	}
}

// otherFailures lists the failures that neither match (a cell) nor check
// (a check's error; nil explains none) explains. Unexpected listeners are
// failures unless listeners is false.
func otherFailures(r *Report, match func(*Cell) bool, check func(name, err string) bool, listeners bool) []string {
	var out []string
	if listeners {
		for _, l := range r.Listeners {
			if !l.Expected {
				out = append(out, "unexpected listener: "+l.String())
			}
		}
	}
	for i := range r.Cells {
		c := &r.Cells[i]
		if !c.OK && !match(c) {
			out = append(out, fmt.Sprintf("%s: %s", c, c.Why))
		}
	}
	for _, ch := range r.Checks {
		for _, e := range ch.Errors {
			if check == nil || !check(ch.Name, e) {
				out = append(out, ch.Name+": "+e)
			}
		}
	}
	return out
}

// SelfTest proves that verify sees planted holes. The stack must verify
// clean first. Then each mutation is planted, verify runs, the stack is
// restored, and the outcome is recorded: caught when verify failed and
// every failure is the mutation's doing. Last, the stack must verify clean
// again. progress, if not nil, hears about each step.
func SelfTest(ctx context.Context, p *plan.Plan, o Options, progress func(string)) ([]Outcome, *Report, error) {
	say := func(format string, args ...any) {
		if progress != nil {
			progress(fmt.Sprintf(format, args...))
		}
	}
	say("baseline: verifying the stack as it is")
	base, err := Run(ctx, p, o)
	if err != nil {
		return nil, nil, err
	}
	if base.Counts.Failures > 0 {
		return nil, base, fmt.Errorf("stack %s does not verify clean before the self-test (%s); fix those first: %s",
			p.Stack, Plural(base.Counts.Failures, "failure"), strings.Join(base.Failures(), "; "))
	}
	var outcomes []Outcome
	var errs []error
	ms := Mutations(p)
	for i, m := range ms {
		say("mutation %d/%d: %s", i+1, len(ms), m.Name)
		out, err := try(ctx, p, o, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("mutation %q: %w", m.Name, err))
			break
		}
		if out.Caught {
			say("  caught: %s, all of them this break", Plural(len(out.Failures), "failure"))
		} else {
			say("  MISSED: %d failures, %d not explained by the break", len(out.Failures), len(out.Stray))
		}
		outcomes = append(outcomes, out)
	}
	say("after: verifying the restored stack")
	after, err := Run(ctx, p, o)
	if err != nil {
		errs = append(errs, err)
	} else if after.Counts.Failures > 0 {
		errs = append(errs, fmt.Errorf("stack %s does not verify clean after the self-test: %s", p.Stack, strings.Join(after.Failures(), "; ")))
	}
	return outcomes, after, errors.Join(errs...)
}

// try plants one mutation, verifies, and restores, even when ctx is
// cancelled meanwhile.
func try(ctx context.Context, p *plan.Plan, o Options, m Mutation) (out Outcome, err error) {
	out.Mutation = m.Name
	restore, berr := m.breakIt(ctx)
	defer func() {
		if restore == nil {
			return
		}
		if rerr := restore(context.WithoutCancel(ctx)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("RESTORE FAILED (run 'bulkhead up' to repair the stack): %w", rerr))
		}
	}()
	if berr != nil {
		return out, berr
	}
	r, err := Run(ctx, p, o)
	if err != nil {
		return out, err
	}
	out.Failures = r.Failures()
	out.Stray = m.explains(r)
	out.Caught = len(out.Failures) > 0 && len(out.Stray) == 0
	return out, nil
}
