package plan

import (
	"slices"

	"github.com/bulkhead/bulkhead/internal/spec"
)

// Matrix is the expected reachability of the stack: for every source (the
// outside vantage and every node), every destination node and every port of
// interest, whether a connection is allowed. Cells not in Allow or Host
// are denied.
type Matrix struct {
	Sources []string `json:"sources"`
	Dests   []string `json:"destinations"`
	Ports   []Port   `json:"ports"`
	Allow   []Cell   `json:"allow"`
	// Host is the row of the host (spec.Host), which verify probes from
	// too: it may reach only the targets of the published ports. It is
	// not among Sources: no flow and no firewall rule comes from it.
	Host    []Cell `json:"host,omitempty"`
	allowed map[Cell]bool
}

// Cell is one (source, destination, port) of the matrix.
type Cell struct {
	From string `json:"from"`
	To   string `json:"to"`
	Port Port   `json:"port"`
}

func (p *Plan) matrix() Matrix {
	m := Matrix{Sources: []string{spec.Outside}}
	for _, n := range p.Nodes {
		m.Sources = append(m.Sources, n.Name)
		m.Dests = append(m.Dests, n.Name)
		m.Ports = append(m.Ports, n.Listens...)
		if n.Metrics.IsValid() {
			m.Ports = append(m.Ports, Port{Proto: "tcp", Number: int(n.Metrics.Port())})
		}
		if n.Exporter != nil {
			m.Ports = append(m.Ports, Port{Proto: "tcp", Number: int(n.Exporter.Addr.Port())})
		}
	}
	for _, f := range p.Flows {
		m.Ports = append(m.Ports, f.Port)
		srcs := []string{spec.Outside}
		if f.From != spec.Outside {
			srcs = srcs[:0]
			for _, s := range p.Tier(f.From) {
				srcs = append(srcs, s.Name)
			}
		}
		for _, s := range srcs {
			for _, d := range p.Tier(f.To) {
				if s != d.Name {
					m.Allow = append(m.Allow, Cell{From: s, To: d.Name, Port: f.Port})
				}
			}
		}
	}
	for _, f := range p.Published {
		m.Host = append(m.Host, Cell{From: spec.Host, To: f.Node, Port: Port{Proto: "tcp", Number: int(f.Target.Port())}})
	}
	if d := p.Dashboard; d != nil {
		m.Host = append(m.Host, Cell{From: spec.Host, To: d.Node, Port: d.Port})
	}
	m.Ports = sortPorts(m.Ports)
	m.index()
	return m
}

func sortPorts(ps []Port) []Port {
	slices.SortFunc(ps, func(a, b Port) int {
		if a.Number != b.Number {
			return a.Number - b.Number
		}
		return compareStrings(a.Proto, b.Proto)
	})
	return slices.Compact(ps)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *Matrix) index() {
	m.allowed = make(map[Cell]bool, len(m.Allow)+len(m.Host))
	for _, c := range m.Allow {
		m.allowed[c] = true
	}
	for _, c := range m.Host {
		m.allowed[c] = true
	}
}

// Allowed reports whether the plan allows from to reach to on port.
func (m *Matrix) Allowed(from, to string, port Port) bool {
	if m.allowed == nil {
		c := Cell{From: from, To: to, Port: port}
		return slices.Contains(m.Allow, c) || slices.Contains(m.Host, c)
	}
	return m.allowed[Cell{From: from, To: to, Port: port}]
}

// Cells lists every cell of the matrix, source-major, with its verdict.
func (m *Matrix) Cells() []Verdict {
	out := make([]Verdict, 0, len(m.Sources)*len(m.Dests)*len(m.Ports))
	for _, s := range m.Sources {
		for _, d := range m.Dests {
			if s == d {
				continue
			}
			for _, port := range m.Ports {
				out = append(out, Verdict{Cell: Cell{s, d, port}, Allow: m.Allowed(s, d, port)})
			}
		}
	}
	return out
}

// Verdict is a cell and whether it is allowed.
type Verdict struct {
	Cell
	Allow bool `json:"allow"`
}
