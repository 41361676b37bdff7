// Package nft loads and reads nftables rulesets, on the host or inside a
// named network namespace, through the nft command. nft -f applies a file
// as one transaction, so a ruleset is never half-loaded.
package nft

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

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

// Read lists ns's ruleset as JSON and summarises it.
func Read(ctx context.Context, ns string) (*Ruleset, error) {
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
