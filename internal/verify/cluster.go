package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/bulkhead/bulkhead/internal/netns"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// On a cluster, verify runs in two halves. A probe Job per tier runs
// ProbeCluster in a pod that carries the tier's labels, so the namespace's
// NetworkPolicies treat it as one of the tier's nodes, and prints a
// ClusterResult as JSON. Import then judges those results against the
// plan, as Run judges its own probes.

// Pod is a node's pod as the cluster lists it.
type Pod struct {
	Name string     `json:"name"`
	Tier string     `json:"tier"`
	Addr netip.Addr `json:"addr"`
}

// ClusterResult is what one probe pod saw.
type ClusterResult struct {
	Stack string `json:"stack"`
	// Source is the node whose row the pod probed: the first node of
	// the probe's tier. Every node of a tier gets the same policies.
	Source string         `json:"source"`
	Pod    string         `json:"pod,omitempty"`
	Probes []ClusterProbe `json:"probes"`
}

// ClusterProbe is one connection attempt from a probe pod.
type ClusterProbe struct {
	To     string     `json:"to"`
	Pod    string     `json:"pod"`
	Addr   netip.Addr `json:"addr"`
	Port   int        `json:"port"`
	Proto  string     `json:"proto"`
	Status Status     `json:"status"`
}

// Nodes pairs a plan's nodes with the pods that run them: the pods of a
// tier, sorted by name, are its replicas in order. A tier with fewer pods
// than the plan's replicas is an error: its cells could not be probed.
func Nodes(p *plan.Plan, pods []Pod) (map[string]Pod, error) {
	byTier := map[string][]Pod{}
	for _, pod := range pods {
		byTier[pod.Tier] = append(byTier[pod.Tier], pod)
	}
	out := map[string]Pod{}
	for tier, ps := range byTier {
		nodes := p.Tier(tier)
		if len(nodes) == 0 {
			return nil, fmt.Errorf("pod %s has tier %q, which the plan does not have", ps[0].Name, tier)
		}
		slices.SortFunc(ps, func(a, b Pod) int {
			switch {
			case a.Name < b.Name:
				return -1
			case a.Name > b.Name:
				return 1
			}
			return 0
		})
		if len(ps) < len(nodes) {
			return nil, fmt.Errorf("tier %s has %d running pods with an address, the plan %d; wait for them to be ready", tier, len(ps), len(nodes))
		}
		for i, n := range nodes {
			out[n.Name] = ps[i]
		}
	}
	for _, n := range p.Nodes {
		if _, ok := out[n.Name]; !ok {
			return nil, fmt.Errorf("no pod runs %s (tier %s)", n.Name, n.Tier)
		}
	}
	return out, nil
}

// ProbeCluster probes, from this process's own network namespace, every
// node's pod on every port of the plan's matrix, and reports it as the
// row of source. It needs no privilege: it enters no namespace.
func ProbeCluster(ctx context.Context, p *plan.Plan, source string, pods []Pod, timeout time.Duration) (*ClusterResult, error) {
	if p.Node(source) == nil {
		return nil, fmt.Errorf("probe: %s is not a node of stack %s", source, p.Stack)
	}
	nodes, err := Nodes(p, pods)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	res := &ClusterResult{Stack: p.Stack, Source: source}
	var probes []Probe
	for _, n := range p.Nodes {
		if n.Name == source {
			continue
		}
		pod := nodes[n.Name]
		for _, port := range p.Matrix.Ports {
			res.Probes = append(res.Probes, ClusterProbe{To: n.Name, Pod: pod.Name, Addr: pod.Addr, Port: port.Number, Proto: port.Proto})
			probes = append(probes, Probe{From: 0, To: netip.AddrPortFrom(pod.Addr, uint16(port.Number)), UDP: port.Proto == "udp"})
		}
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	st, err := prober{Timeout: timeout, Window: 256}.run(ctx, []*netns.Handle{nil}, probes)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	for i := range res.Probes {
		res.Probes[i].Status = st[i]
	}
	return res, nil
}

// ReadClusterResults reads the JSON a probe Job printed: one or more
// ClusterResults, one after another.
func ReadClusterResults(r io.Reader) ([]ClusterResult, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var out []ClusterResult
	for dec.More() {
		var res ClusterResult
		if err := dec.Decode(&res); err != nil {
			return nil, fmt.Errorf("read probe results: %w", err)
		}
		out = append(out, res)
	}
	return out, nil
}

// Import judges probe results from a cluster against the plan, with the
// same rules, report and counts as a local run. A tier with no results is
// a failed check; a result for another stack or a node the plan does not
// have is an error. The outside's row cannot be probed from inside a
// cluster, and the host has none there: the report says so.
func Import(p *plan.Plan, results []ClusterResult) (*Report, error) {
	r := &Report{Stack: p.Stack, Tiers: map[string]string{}, Plan: p}
	for _, n := range p.Nodes {
		r.Sources = append(r.Sources, n.Name)
		r.Tiers[n.Name] = n.Tier
	}
	for _, port := range p.Matrix.Ports {
		if port.Proto == "udp" {
			r.UDPPorts = append(r.UDPPorts, port.Number)
		} else {
			r.Ports = append(r.Ports, port.Number)
		}
	}
	rows := map[string]bool{}
	for _, res := range results {
		if res.Stack != p.Stack {
			return nil, fmt.Errorf("import: results of stack %q, not %s; pass the stack file they were made with", res.Stack, p.Stack)
		}
		src := p.Node(res.Source)
		if src == nil {
			return nil, fmt.Errorf("import: results from %q, which is not a node of stack %s", res.Source, p.Stack)
		}
		rows[src.Tier] = true
		for _, pr := range res.Probes {
			if p.Node(pr.To) == nil {
				return nil, fmt.Errorf("import: %s probed %q, which is not a node of stack %s", res.Source, pr.To, p.Stack)
			}
			port := plan.Port{Proto: pr.Proto, Number: pr.Port}
			allow := p.Matrix.Allowed(res.Source, pr.To, port)
			c := Cell{From: res.Source, To: pr.To, Port: pr.Port, Proto: pr.Proto, Allow: allow,
				Targets: []Target{{Addr: pr.Addr, Status: pr.Status, Primary: allow}}}
			c.judge()
			r.Cells = append(r.Cells, c)
			r.Probes++
		}
	}
	var missing []string
	for _, n := range p.Nodes {
		if !rows[n.Tier] && !slices.Contains(missing, n.Tier) {
			missing = append(missing, n.Tier)
		}
	}
	probed := Check{Name: "probe jobs", OK: len(missing) == 0,
		Detail: fmt.Sprintf("results from %d of %d tiers; one pod per tier stands for every node of it, as the policies select by tier", len(rows), len(rows)+len(missing))}
	for _, t := range missing {
		probed.Errors = append(probed.Errors, "no results from tier "+t+": run its probe Job and add its output")
	}
	r.Checks = append(r.Checks, probed, Check{Name: spec.Outside + " row", OK: true,
		Detail: "not probed: a probe Job runs inside the cluster; the edge's LoadBalancer is reached from outside it"})
	r.tally()
	return r, nil
}
