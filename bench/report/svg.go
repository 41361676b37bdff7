package main

import (
	"fmt"
	"math"
	"strings"
)

// A bar is one horizontal bar of a barChart: a median with its range.
type bar struct {
	Label     string
	Value     float64
	Low, High float64 // the range over the rounds; equal to Value when there is one
	Group     string  // bars of one group share a colour
}

// A rule is a vertical reference line, such as a target ratio.
type rule struct {
	At    float64
	Label string
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

func esc(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}

// barChart draws horizontal bars with whiskers for their range, on a linear
// axis from 0, with reference rules.
func barChart(title, axis string, bars []bar, rules []rule) string {
	const left, right, top, rowH, bottom = 260.0, 40.0, 50.0, 22.0, 50.0
	width := 820.0
	height := top + rowH*float64(len(bars)) + bottom
	max := 0.0
	for _, b := range bars {
		max = math.Max(max, math.Max(b.High, b.Value))
	}
	for _, r := range rules {
		max = math.Max(max, r.At)
	}
	step := niceStep(max / 5)
	max = math.Ceil(max/step) * step
	if max == 0 {
		max, step = 1, 0.2
	}
	x := func(v float64) float64 { return left + (width-left-right)*v/max }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="%.0f" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left-250, esc(title))
	plotBottom := top + rowH*float64(len(bars))
	for v := 0.0; v <= max+step/2; v += step {
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x(v), top-5, x(v), plotBottom)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(v), plotBottom+16, fmtNum(v))
	}
	fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", (left+width-right)/2, plotBottom+36, esc(axis))
	groups := map[string]string{}
	for i, b := range bars {
		c, ok := groups[b.Group]
		if !ok {
			c = palette[len(groups)%len(palette)]
			groups[b.Group] = c
		}
		y := top + rowH*float64(i)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+rowH/2+4, esc(b.Label))
		fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.8"/>`+"\n", x(0), y+3, x(b.Value)-x(0), rowH-6, c)
		if b.High > b.Low {
			ym := y + rowH/2
			fmt.Fprintf(&sb, `<path d="M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f" stroke="black" fill="none"/>`+"\n",
				x(b.Low), ym, x(b.High), x(b.Low), ym-5, ym+5, x(b.High), ym-5, ym+5)
		}
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" font-size="10">%s</text>`+"\n", math.Max(x(b.Value), x(b.High))+4, y+rowH/2+4, fmtNum(b.Value))
	}
	for i, r := range rules {
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="4 3"/>`+"\n", x(r.At), top-10, x(r.At), plotBottom)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" fill="#c00" font-size="10" text-anchor="middle">%s</text>`+"\n", x(r.At), top-14-float64(i%2)*11, esc(r.Label))
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

// A series is one curve of a lineChart.
type series struct {
	Name string
	X, Y []float64
}

// lineChart draws curves with markers on linear axes from 0.
func lineChart(title, xaxis, yaxis string, ss []series) string {
	const width, height, left, right, top, bottom = 820.0, 460.0, 70.0, 170.0, 50.0, 50.0
	maxX, maxY := 0.0, 0.0
	for _, s := range ss {
		for i := range s.X {
			maxX, maxY = math.Max(maxX, s.X[i]), math.Max(maxY, s.Y[i])
		}
	}
	sx, sy := niceStep(maxX/5), niceStep(maxY/5)
	maxX, maxY = math.Max(math.Ceil(maxX/sx)*sx, sx), math.Max(math.Ceil(maxY/sy)*sy, sy)
	x := func(v float64) float64 { return left + (width-left-right)*v/maxX }
	y := func(v float64) float64 { return height - bottom - (height-top-bottom)*v/maxY }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="10" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", esc(title))
	for v := 0.0; v <= maxY+sy/2; v += sy {
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), width-right, y(v))
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, fmtNum(v))
	}
	for v := 0.0; v <= maxX+sx/2; v += sx {
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x(v), top, x(v), height-bottom)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(v), height-bottom+16, fmtNum(v))
	}
	fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", (left+width-right)/2, height-12, esc(xaxis))
	fmt.Fprintf(&sb, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (top+height-bottom)/2, esc(yaxis))
	for i, s := range ss {
		c := palette[i%len(palette)]
		var pts []string
		for j := range s.X {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.X[j]), y(s.Y[j])))
		}
		fmt.Fprintf(&sb, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
		for j := range s.X {
			fmt.Fprintf(&sb, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(s.X[j]), y(s.Y[j]), c)
		}
		ly := top + 18*float64(i)
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", width-right+12, ly, width-right+32, ly, c)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f">%s</text>`+"\n", width-right+38, ly+4, esc(s.Name))
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e6:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
