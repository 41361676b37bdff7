// Command mono renders the configs of bench/dataplane.sh's monolithic
// baseline: the daemons of the split stack's app-1, db and cache, rendered
// by bulkhead's own renderer from the stack's plan, but with every node on
// 127.0.0.1 and every path under one directory. Both sides of the benchmark
// then run the same apache MPM, php-fpm pool, mariadb and memcached
// settings, and nothing is adapted by text substitution.
//
// Usage: mono -plan PLAN.json -dir DIR [-agent BULKHEAD]
//
// PLAN.json is `bulkhead plan --output json` of the split stack. It writes
// DIR/etc/FILE (the nodes' configs and secrets, as each node's Layout.Conf
// holds them) and DIR/services/NODE.json (the daemons each node runs, as
// services.json in `bulkhead plan --render`). The run, log, data and site
// directories are DIR/run/NODE, DIR/log, DIR and DIR/site, and the site's
// writable paths stay in DIR/site (its shared root); it creates none of
// them. With -agent, PHP's mail() hands messages to that bulkhead binary's
// sendmail sink, as on the split's app nodes (WordPress's installer mails);
// without it, mail() is disabled.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/secrets"
	"github.com/bulkhead/bulkhead/internal/service"
)

// monoNodes are the nodes whose daemons the baseline runs, by their name in
// the split stack, and the name app-1 takes in the baseline.
var monoNodes = []string{"app-1", "db", "cache"}

const monoName = "mono"

func main() {
	planFile := flag.String("plan", "", "the split stack's `bulkhead plan --output json`")
	dir := flag.String("dir", "", "the baseline's directory")
	agent := flag.String("agent", "", "a bulkhead binary for PHP's mail() to run as its sendmail (none: mail() is disabled)")
	flag.Parse()
	if *planFile == "" || *dir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mono -plan PLAN.json -dir DIR [-agent BULKHEAD]")
		os.Exit(2)
	}
	if err := run(*planFile, *dir, *agent); err != nil {
		fmt.Fprintln(os.Stderr, "mono:", err)
		os.Exit(1)
	}
}

func run(planFile, dir, agent string) error {
	data, err := os.ReadFile(planFile)
	if err != nil {
		return err
	}
	p, err := plan.Decode(data)
	if err != nil {
		return err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	nodes, err := Render(p, dir, agent)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		for _, f := range n.Files {
			if err := write(filepath.Join(dir, "etc", f.Path), f.Data, os.FileMode(f.Mode)); err != nil {
				return err
			}
		}
		svcs, err := json.MarshalIndent(n.Services, "", "  ")
		if err != nil {
			return err
		}
		if err := write(filepath.Join(dir, "services", n.Name+".json"), append(svcs, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Render renders the baseline's nodes of p (its app-1, db and cache, with
// app-1 called mono) for a baseline in dir. Every address of every node is
// 127.0.0.1: one network namespace, its loopback. The nodes' firewalls and
// hosts files are left out: the baseline has neither. Two nodes writing the
// same file is an error. agent, when not empty, is the bulkhead binary whose
// sendmail sink PHP's mail() runs.
func Render(p *plan.Plan, dir, agent string) ([]render.Node, error) {
	mono, err := loopback(p)
	if err != nil {
		return nil, err
	}
	sec, err := secrets.Generate(mono)
	if err != nil {
		return nil, err
	}
	var out []render.Node
	owner := map[string]string{}
	for _, name := range monoNodes {
		if name == "app-1" {
			name = monoName
		}
		n := mono.Node(name)
		if n == nil {
			return nil, fmt.Errorf("the plan has no node %s", name)
		}
		layout := render.Layout{
			Conf: filepath.Join(dir, "etc"),
			Run:  filepath.Join(dir, "run", n.Role),
			Log:  filepath.Join(dir, "log"),
			Data: dir,
			Site: filepath.Join(dir, "site"),
			// One copy of the site, uploads included, as before releases.
			Shared: filepath.Join(dir, "site"),
			// The site does not change while the baseline runs, as a
			// release does not: the baseline gets the same opcache
			// settings as the split's app nodes.
			Release: true,
			Agent:   agent,
		}
		r, err := render.RenderNode(mono, n, render.Input{Layout: layout, Secrets: sec.Secrets})
		if err != nil {
			return nil, err
		}
		files := r.Files[:0]
		for _, f := range r.Files {
			if f.Path == "nftables.nft" || f.Path == "hosts" {
				continue
			}
			if o, ok := owner[f.Path]; ok {
				return nil, fmt.Errorf("%s and %s both render %s", o, n.Name, f.Path)
			}
			owner[f.Path] = n.Name
			files = append(files, f)
		}
		r.Files = files
		if r.Services == nil {
			r.Services = []service.Service{}
		}
		out = append(out, r)
	}
	return out, nil
}

// loopback is a copy of p with every interface's address 127.0.0.1 and
// app-1 called mono.
func loopback(p *plan.Plan) (*plan.Plan, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	c, err := plan.Decode(data) // a deep copy, indexed afresh below
	if err != nil {
		return nil, err
	}
	lo := netip.MustParseAddr("127.0.0.1")
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if n.Name == "app-1" {
			n.Name = monoName
		}
		for j := range n.Ifaces {
			n.Ifaces[j].Addr = lo
		}
	}
	if data, err = json.Marshal(c); err != nil {
		return nil, err
	}
	return plan.Decode(data)
}

func write(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, mode)
}
