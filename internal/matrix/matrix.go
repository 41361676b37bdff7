// Package matrix lays the reachability matrix out for people: a row per
// source, a column per destination and port, and a tier of many replicas
// that all read alike folded into one row and one column. 'bulkhead plan'
// prints the expected matrix with it, and 'bulkhead verify' the observed
// one, so the two read the same way. It is pure: it asks a Mark function
// for every cell and writes text to an io.Writer.
package matrix

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Marks a cell may read.
const (
	Allowed = "✔" // allowed; observed, allowed and open
	Denied  = "·" // denied; observed, denied and blocked
	Closed  = "✘" // observed: allowed, but not open
	Breach  = "!" // observed: denied, but reached (open or refused)
	Unknown = "?" // observed: could not be probed
	// Mixed is a folded cell whose cells do not all read alike. Layout
	// folds only tiers that read alike, so it shows only if a Mark is
	// not a function of its arguments.
	Mixed = "±"
)

// Mark says what the cell from a source to a destination on a port reads,
// or "" for a cell with no answer, such as a node and itself.
type Mark func(from, to string, port plan.Port) string

// Expected marks the cells of the plan's matrix m: Allowed or Denied.
func Expected(m *plan.Matrix) Mark {
	return func(from, to string, port plan.Port) string {
		if m.Allowed(from, to, port) {
			return Allowed
		}
		return Denied
	}
}

// collapseAbove is the size from which a tier's nodes share one row and one
// column: a pool of 100 app nodes would otherwise be 100 rows and 100
// columns of the same answer.
const collapseAbove = 4

// Group is one row or column heading: one vantage, or a tier's nodes that
// all read alike.
type Group struct {
	Label string
	Names []string
}

// Column is one destination group and port.
type Column struct {
	Dest Group
	Port plan.Port
}

// Grid is the matrix laid out: Marks[i][j] is what Rows[i] reads towards
// Cols[j].
type Grid struct {
	Rows  []Group
	Cols  []Column
	Marks [][]string
}

// Layout lays out p's matrix as mark reads it. The rows are the host, the
// outside and the nodes. The columns are the nodes, each on the ports it
// serves or a flow opens to it, and on the ports that more lists for it;
// more may name the host and the outside too, which are columns only
// then. A tier of more than four nodes is one row and one column when
// every cell of its nodes reads alike; otherwise each run of its nodes
// that reads alike is. A column where no cell has a mark is left out.
func Layout(p *plan.Plan, mark Mark, more map[string][]plan.Port) *Grid {
	ports := func(name string) []plan.Port {
		var out []plan.Port
		if n := p.Node(name); n != nil {
			out = append(out, n.Listens...)
			for _, f := range p.Flows {
				if f.To == n.Tier {
					out = append(out, f.Port)
				}
			}
		}
		return sortPorts(append(out, more[name]...))
	}
	vantages := []string{spec.Host, spec.Outside}
	var dests []string
	for _, v := range vantages {
		if len(more[v]) > 0 {
			dests = append(dests, v)
		}
	}
	sources := slices.Clone(vantages)
	for _, n := range p.Nodes {
		sources = append(sources, n.Name)
		dests = append(dests, n.Name)
	}
	// uniform reports whether every node of names reads alike, as a
	// source towards every destination, as a destination from every
	// source, and towards each other.
	uniform := func(names []string) bool {
		var gp []plan.Port
		for _, n := range names {
			gp = append(gp, ports(n)...)
		}
		gp = sortPorts(gp)
		for _, port := range gp {
			if _, ok := fold(mark, names, names, port); !ok {
				return false
			}
			for _, s := range sources {
				if _, ok := fold(mark, []string{s}, names, port); !ok {
					return false
				}
			}
		}
		for _, d := range dests {
			for _, port := range ports(d) {
				if _, ok := fold(mark, names, []string{d}, port); !ok {
					return false
				}
			}
		}
		return true
	}

	g := &Grid{}
	for _, v := range vantages {
		g.Rows = append(g.Rows, single(v))
	}
	// A large tier is one group if it reads alike; otherwise its runs of
	// replicas that read alike are, so that one odd node in a hundred
	// shows as itself between two groups.
	var nodes []Group
	for _, tier := range tiers(p) {
		if len(tier) <= collapseAbove || uniform(tier) {
			nodes = append(nodes, group(tier, len(tier) > collapseAbove)...)
			continue
		}
		for i := 0; i < len(tier); {
			j := i + 1
			for j < len(tier) && uniform(tier[i:j+1]) {
				j++
			}
			nodes = append(nodes, group(tier[i:j], true)...)
			i = j
		}
	}
	g.Rows = append(g.Rows, nodes...)
	g.Marks = make([][]string, len(g.Rows))
	var cols []Group
	for _, v := range vantages {
		if len(more[v]) > 0 {
			cols = append(cols, single(v))
		}
	}
	for _, d := range append(cols, nodes...) {
		var dp []plan.Port
		for _, n := range d.Names {
			dp = append(dp, ports(n)...)
		}
		for _, port := range sortPorts(dp) {
			c := Column{Dest: d, Port: port}
			marks := make([]string, len(g.Rows))
			marked := false
			for i, r := range g.Rows {
				m, ok := fold(mark, r.Names, d.Names, port)
				if !ok {
					m = Mixed
				}
				marks[i] = m
				marked = marked || m != ""
			}
			if !marked {
				continue
			}
			g.Cols = append(g.Cols, c)
			for i, m := range marks {
				g.Marks[i] = append(g.Marks[i], m)
			}
		}
	}
	return g
}

func single(name string) Group { return Group{Label: name, Names: []string{name}} }

// tiers lists the names of the plan's nodes by tier, in plan order. The
// tier is the plan's, never read back from a node's name.
func tiers(p *plan.Plan) [][]string {
	var out [][]string
	for i := 0; i < len(p.Nodes); {
		var names []string
		for _, n := range p.Tier(p.Nodes[i].Tier) {
			names = append(names, n.Name)
		}
		out = append(out, names)
		i += len(names)
	}
	return out
}

// group makes names one group labelled first..last if fold, and one group
// per name otherwise.
func group(names []string, fold bool) []Group {
	if fold && len(names) > 1 {
		return []Group{{Label: names[0] + ".." + names[len(names)-1], Names: names}}
	}
	out := make([]Group, len(names))
	for i, n := range names {
		out[i] = single(n)
	}
	return out
}

// fold is the one mark that every cell from a source in from to a
// destination in to on port reads, skipping cells without one; ok is
// false when they differ.
func fold(mark Mark, from, to []string, port plan.Port) (m string, ok bool) {
	for _, s := range from {
		for _, d := range to {
			if s == d {
				continue
			}
			switch c := mark(s, d, port); {
			case c == "":
			case m == "":
				m = c
			case c != m:
				return "", false
			}
		}
	}
	return m, true
}

func sortPorts(ps []plan.Port) []plan.Port {
	slices.SortFunc(ps, func(a, b plan.Port) int {
		if a.Number != b.Number {
			return a.Number - b.Number
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return slices.Compact(ps)
}

// Shows reports whether a column of g holds the cells towards the
// destination on port.
func (g *Grid) Shows(dest string, port plan.Port) bool {
	return slices.ContainsFunc(g.Cols, func(c Column) bool {
		return c.Port == port && slices.Contains(c.Dest.Names, dest)
	})
}

// WriteText writes the grid as a table: two heading lines (destinations,
// then their ports; a port not over TCP shows its protocol), then a line
// per row.
func (g *Grid) WriteText(w io.Writer) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	var top, bottom strings.Builder
	for i, c := range g.Cols {
		label := ""
		if i == 0 || g.Cols[i-1].Dest.Label != c.Dest.Label {
			label = c.Dest.Label
		}
		top.WriteString("\t" + label)
		bottom.WriteString("\t" + fmt.Sprint(c.Port.Number))
		if c.Port.Proto != "tcp" {
			bottom.WriteString("/" + c.Port.Proto)
		}
	}
	fmt.Fprintln(tw, top.String())
	fmt.Fprintln(tw, bottom.String())
	for i, r := range g.Rows {
		fmt.Fprint(tw, r.Label)
		for _, m := range g.Marks[i] {
			fmt.Fprint(tw, "\t"+m)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// tabwriter pads a cell before an empty last one.
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}
