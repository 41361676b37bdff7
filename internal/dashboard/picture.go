package dashboard

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// The picture's geometry, in SVG user units.
const (
	boxW, boxH = 120, 44
	gapX       = 30
	bandH      = 100
	marginX    = 130 // room for the band's name
)

type topology struct {
	Width, Height int
	Bands         []band
	Boxes         []box
	Lines         []line
}

type band struct {
	Name string
	Y    int
}

type box struct {
	Name, Tier, Health, Detail string
	X, Y                       int
}

type line struct {
	D     string // the SVG path
	Title string
}

// arrow is the path of a flow from box a to box b: between the facing
// edges of boxes in different bands, and as an arc under the row between
// boxes in the same band.
func arrow(a, b box) string {
	ax, bx := a.X+boxW/2, b.X+boxW/2
	switch {
	case a.Y == b.Y:
		dip := a.Y + boxH + 8 + abs(bx-ax)/20
		return fmt.Sprintf("M%d,%d Q%d,%d %d,%d", ax, a.Y+boxH, (ax+bx)/2, dip, bx, b.Y+boxH)
	case a.Y < b.Y:
		return fmt.Sprintf("M%d,%d L%d,%d", ax, a.Y+boxH, bx, b.Y)
	default:
		return fmt.Sprintf("M%d,%d L%d,%d", ax, a.Y, bx, b.Y+boxH)
	}
}

func abs(n int) int { return max(n, -n) }

// bandOf is the outermost network a node is on: public, then DMZ, then
// private.
func bandOf(n plan.Node) string {
	best := ""
	for _, i := range n.Ifaces {
		switch {
		case i.Network == plan.NetPublic:
			return plan.NetPublic
		case i.Network == plan.NetDMZ:
			best = plan.NetDMZ
		case best == "":
			best = i.Network
		}
	}
	return best
}

// layout draws p's nodes in bands by network, its flows as lines between
// the nodes of their tiers, and colours each node by st and us.
func layout(p *plan.Plan, st *driver.Status, us []driver.NodeUsage) *topology {
	order := []string{spec.Outside, plan.NetPublic, plan.NetDMZ, plan.NetPrivate}
	rows := map[string][]box{spec.Outside: {{Name: spec.Outside, Tier: spec.Outside, Health: "outside"}}}
	for _, n := range p.Nodes {
		b := bandOf(n)
		if !slices.Contains(order, b) {
			order = append(order, b)
		}
		h, detail := health(n.Name, st, us)
		rows[b] = append(rows[b], box{Name: n.Name, Tier: n.Tier, Health: h, Detail: detail})
	}
	t := &topology{}
	at := map[string]box{}
	byTier := map[string][]string{}
	y := 20
	for _, name := range order {
		if len(rows[name]) == 0 {
			continue
		}
		t.Bands = append(t.Bands, band{Name: name, Y: y})
		for i, b := range rows[name] {
			b.X, b.Y = marginX+i*(boxW+gapX), y+(bandH-boxH)/2
			t.Boxes = append(t.Boxes, b)
			at[b.Name] = b
			byTier[b.Tier] = append(byTier[b.Tier], b.Name)
			t.Width = max(t.Width, b.X+boxW+20)
		}
		y += bandH
	}
	t.Height = y + 20
	seen := map[[2]string]int{}
	for _, f := range p.Flows {
		for _, from := range byTier[f.From] {
			for _, to := range byTier[f.To] {
				k := [2]string{from, to}
				if i, ok := seen[k]; ok {
					t.Lines[i].Title += fmt.Sprintf(", %s/%d", f.Port.Proto, f.Port.Number)
					continue
				}
				seen[k] = len(t.Lines)
				t.Lines = append(t.Lines, line{
					D:     arrow(at[from], at[to]),
					Title: fmt.Sprintf("%s → %s %s/%d", from, to, f.Port.Proto, f.Port.Number),
				})
			}
		}
	}
	return t
}

// health is a node's colour class and a line on why.
func health(node string, st *driver.Status, us []driver.NodeUsage) (string, string) {
	if st == nil {
		return "unknown", "no status"
	}
	var ns *driver.NodeStatus
	for i := range st.Nodes {
		if st.Nodes[i].Name == node {
			ns = &st.Nodes[i]
		}
	}
	if ns == nil {
		return "down", "not running"
	}
	detail := ns.State
	for _, u := range us {
		if u.Node == node {
			detail += fmt.Sprintf(", cpu %.2f", u.CPU)
			if !u.Up {
				return "down", detail + ", not scraped"
			}
		}
	}
	if !ns.Healthy {
		return "down", detail + ", unhealthy"
	}
	return "healthy", detail
}

// graphQueries are the graphs per node; a query with no series (the
// role exporters' before they exist) draws none.
var graphQueries = []struct{ title, unit, query string }{
	{"CPU", "cores", `rate(bulkhead_node_cpu_seconds_total{job="node"}[30s])`},
	{"memory", "MiB", `bulkhead_node_memory_bytes{job="node"} / 1048576`},
	{"requests", "/s", `sum by (node) (rate(nginx_http_requests_total[30s]))`},
	// The agent's counts from the edge's access log; NaN (no requests)
	// is no point.
	{"5xx", "/s", `sum by (node) (rate(bulkhead_http_responses_total{job="node",code="5xx"}[30s]))`},
	{"p99 latency", "s", `histogram_quantile(0.99, sum by (node, le) (rate(bulkhead_http_request_duration_seconds_bucket{job="node"}[1m]))) >= 0`},
}

type graph struct {
	Title, Unit, Node string
	Points            string // the polyline's points
	N                 int
	Max, Last         float64
	W, H              int
}

func (s *Server) graphs(ctx context.Context) ([]graph, error) {
	window := s.Window
	if window == 0 {
		window = 15 * time.Minute
	}
	end := time.Now()
	start := end.Add(-window)
	step := max(window/120, 5*time.Second)
	var out []graph
	for _, q := range graphQueries {
		ss, err := s.Ranges.Range(ctx, s.Stack, q.query, start, end, step)
		if err != nil {
			return out, fmt.Errorf("%s: %w", q.title, err)
		}
		for _, se := range ss {
			if len(se.Points) == 0 {
				continue
			}
			out = append(out, plot(q.title, q.unit, se, start, end))
		}
	}
	slices.SortStableFunc(out, func(a, b graph) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}

// plot scales a series into a small chart's polyline.
func plot(title, unit string, se driver.Series, start, end time.Time) graph {
	g := graph{Title: title, Unit: unit, Node: se.Node, W: 240, H: 60, N: len(se.Points)}
	for _, p := range se.Points {
		g.Max = max(g.Max, p.Value)
	}
	g.Last = se.Points[len(se.Points)-1].Value
	top := g.Max
	if top <= 0 {
		top = 1
	}
	span := end.Sub(start).Seconds()
	var pts []string
	for _, p := range se.Points {
		x := float64(g.W) * p.At.Sub(start).Seconds() / span
		y := float64(g.H) - float64(g.H)*p.Value/top
		pts = append(pts, strconv.FormatFloat(x, 'f', 1, 64)+","+strconv.FormatFloat(y, 'f', 1, 64))
	}
	g.Points = strings.Join(pts, " ")
	return g
}

// listBackups reads the manifest of each of stack's archives in dir,
// newest first: the files named as backup.Name names them, not another
// stack's whose name starts with this one's.
func listBackups(dir, stack string) ([]backupRow, error) {
	pattern := regexp.MustCompile(`^` + regexp.QuoteMeta(stack) + `-\d{8}T\d{6}Z\.tar\.zst$`)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []backupRow
	for _, e := range entries {
		if !pattern.MatchString(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		row := backupRow{Name: e.Name()}
		m, err := backup.Inspect(filepath.Join(dir, e.Name()))
		if err != nil {
			row.Err = err.Error()
		} else {
			row.Created, row.Members = m.Created, len(m.Members)
			if m.DB != nil {
				row.DB = m.DB.Software + " " + m.DB.Version
			}
		}
		out = append(out, row)
	}
	slices.Reverse(out) // ReadDir sorts by name, and the names by time
	return out, nil
}
