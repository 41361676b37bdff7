// Package nft loads and reads nftables rulesets, on the host or inside a
// named network namespace, through the nft command. nft -f applies a file
// as one transaction, so a ruleset is never half-loaded.
package nft

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/bulkhead/bulkhead/internal/netns"
)

// run runs nft with args on the host, or inside the named namespace ns:
// started from a thread there (netns.In), not through "ip netns exec",
// whose mount namespace and /sys remount cost more than nft's own work.
func run(ctx context.Context, ns string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nft", args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
	var err error
	if ns == "" {
		err = cmd.Run()
	} else {
		err = netns.In(ns, cmd.Run)
	}
	if err != nil {
		where := "host"
		if ns != "" {
			where = "netns " + ns
		}
		return nil, fmt.Errorf("nft %s in %s: %w: %s", strings.Join(args, " "), where, err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// Apply loads ruleset (nft -f syntax) into ns atomically.
func Apply(ctx context.Context, ns string, ruleset []byte) error {
	_, err := run(ctx, ns, ruleset, "-f", "-")
	return err
}

// Check parses ruleset without loading it.
func Check(ctx context.Context, ns string, ruleset []byte) error {
	_, err := run(ctx, ns, ruleset, "-c", "-f", "-")
	return err
}

// List returns `nft --numeric list ruleset` of ns, as text.
func List(ctx context.Context, ns string) (string, error) {
	out, err := run(ctx, ns, nil, "--numeric", "list", "ruleset")
	return string(out), err
}

// HasTable reports whether ns has the table.
func HasTable(ctx context.Context, ns, family, name string) bool {
	_, err := run(ctx, ns, nil, "list", "table", family, name)
	return err == nil
}

// DeleteTable removes a table if it exists.
func DeleteTable(ctx context.Context, ns, family, name string) error {
	if !HasTable(ctx, ns, family, name) {
		return nil // absent already
	}
	_, err := run(ctx, ns, nil, "delete", "table", family, name)
	return err
}

// Ruleset is the part of `nft -j list ruleset` that bulkhead compares with
// its plan: tables, chains with their hooks and policies, sets with their
// elements, and the number of rules in each chain.
type Ruleset struct {
	Tables []string
	Chains map[string]Chain    // "family table chain"
	Sets   map[string][]string // "family table set" -> sorted elements
}

// Chain is a base or regular chain.
type Chain struct {
	Hook   string
	Policy string
	Rules  int
}

// Read summarises ns's ruleset, asking the kernel over netlink from this
// process: as of 2026-11, an nft run cost about 50 ms of CPU on a busy
// host, and up reads every node's firewall back.
func Read(ctx context.Context, ns string) (*Ruleset, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := netns.Open(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(h.Fd()))
	if err != nil {
		return nil, fmt.Errorf("nftables in %s: %w", where(ns), err)
	}
	defer c.CloseLasting()
	rs, err := read(c)
	if err != nil {
		return nil, fmt.Errorf("read the ruleset in %s: %w", where(ns), err)
	}
	return rs, nil
}

func where(ns string) string {
	if ns == "" {
		return "host"
	}
	return "netns " + ns
}

// familyNames and hookNames are nft's names for the kernel's numbers.
var familyNames = map[nftables.TableFamily]string{
	nftables.TableFamilyINet: "inet", nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6",
	nftables.TableFamilyARP: "arp", nftables.TableFamilyNetdev: "netdev", nftables.TableFamilyBridge: "bridge",
}

// nfInetIngress is the inet family's ingress hook (NF_INET_INGRESS in
// linux/netfilter.h), which x/sys/unix does not name as of 2026-11.
const nfInetIngress = 5

func hookName(family nftables.TableFamily, h *nftables.ChainHook) string {
	if h == nil {
		return ""
	}
	if family == nftables.TableFamilyNetdev {
		switch *h {
		case *nftables.ChainHookIngress:
			return "ingress"
		case *nftables.ChainHookEgress:
			return "egress"
		}
		return fmt.Sprint(*h)
	}
	switch *h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	case nfInetIngress:
		return "ingress"
	}
	return fmt.Sprint(*h)
}

func read(c *nftables.Conn) (*Ruleset, error) {
	rs := &Ruleset{Chains: map[string]Chain{}, Sets: map[string][]string{}}
	tables, err := c.ListTables()
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		rs.Tables = append(rs.Tables, familyNames[t.Family]+" "+t.Name)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		fam := familyNames[ch.Table.Family]
		k := fam + " " + ch.Table.Name + " " + ch.Name
		out := Chain{Hook: hookName(ch.Table.Family, ch.Hooknum)}
		if ch.Policy != nil {
			out.Policy = "accept"
			if *ch.Policy == nftables.ChainPolicyDrop {
				out.Policy = "drop"
			}
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("rules of %s: %w", k, err)
		}
		out.Rules = len(rules)
		rs.Chains[k] = out
	}
	for _, t := range tables {
		sets, err := c.GetSets(t)
		if err != nil {
			return nil, fmt.Errorf("sets of %s %s: %w", familyNames[t.Family], t.Name, err)
		}
		for _, set := range sets {
			k := familyNames[t.Family] + " " + t.Name + " " + set.Name
			elems, err := c.GetSetElements(set)
			if err != nil {
				return nil, fmt.Errorf("elements of %s: %w", k, err)
			}
			var out []string
			for _, e := range elems {
				// An interval's end is half of one element, as nft
				// lists it.
				if e.IntervalEnd {
					continue
				}
				out = append(out, element(e.Key))
			}
			slices.Sort(out)
			rs.Sets[k] = out
		}
	}
	return rs, nil
}

// element names a set element's key as nft does for an IPv4 or IPv6
// address; other keys (concatenations, interface names) as hex, which only
// their count is compared by.
func element(key []byte) string {
	if a, ok := netip.AddrFromSlice(key); ok && (len(key) == 4 || len(key) == 16) {
		return a.String()
	}
	return hex.EncodeToString(key)
}

// readJSON is Read through nft -j, the reference the tests hold Read to.
func readJSON(ctx context.Context, ns string) (*Ruleset, error) {
	out, err := run(ctx, ns, nil, "-j", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	return parse(out)
}

func parse(data []byte) (*Ruleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse nft json: %w", err)
	}
	rs := &Ruleset{Chains: map[string]Chain{}, Sets: map[string][]string{}}
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			var o struct {
				Family, Table, Name, Chain, Hook, Policy string
				Elem                                     []json.RawMessage
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				continue // metainfo and the like
			}
			switch kind {
			case "table":
				rs.Tables = append(rs.Tables, o.Family+" "+o.Name)
			case "chain":
				k := o.Family + " " + o.Table + " " + o.Name
				c := rs.Chains[k]
				c.Hook, c.Policy = o.Hook, o.Policy
				rs.Chains[k] = c
			case "rule":
				k := o.Family + " " + o.Table + " " + o.Chain
				c := rs.Chains[k]
				c.Rules++
				rs.Chains[k] = c
			case "set":
				var elems []string
				for _, e := range o.Elem {
					elems = append(elems, strings.Trim(string(e), `"`))
				}
				rs.Sets[o.Family+" "+o.Table+" "+o.Name] = elems
			}
		}
	}
	return rs, nil
}
