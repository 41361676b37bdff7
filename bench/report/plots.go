package main

import (
	"fmt"
	"slices"
	"strconv"
)

func statBar(label, group string, s *Stat) bar {
	return bar{Label: label, Group: group, Value: s.Median, Low: s.Min, High: s.Max}
}

func ratioPlot(r *Results) string {
	var bars []bar
	for _, w := range r.Dataplane.Workloads {
		if w.Ratio != nil {
			bars = append(bars, statBar(w.Name+" ("+w.Request+")", "split/mono", w.Ratio))
		}
	}
	for _, w := range r.Dataplane.Workloads {
		if w.Published != nil {
			bars = append(bars, statBar("published/split "+w.Name, "published", w.Published))
		}
	}
	return barChart("Split stack / monolithic baseline, req/s (median, range over rounds)", "ratio",
		bars, []rule{{1, "1.0"}, {0.9, "0.9 static target"}, {0.95, "0.95 dynamic target"}})
}

func sandboxPlot(r *Results) string {
	var bars []bar
	for _, w := range r.Dataplane.Workloads {
		if w.Sandbox != nil {
			bars = append(bars, statBar(w.Name+" ("+w.Request+")", "sandbox", w.Sandbox))
		}
	}
	lo, hi := 1-sandboxTolerance, 1+sandboxTolerance
	return barChart("Sandboxed split / unsandboxed split, req/s (median, range over rounds)", "ratio",
		bars, []rule{{lo, "expected: " + f2(lo)}, {hi, f2(hi)}})
}

func rpsPlot(r *Results) string {
	var bars []bar
	for _, w := range r.Dataplane.Workloads {
		for _, s := range []string{"split", "nosandbox", "mono"} {
			if st := w.RPS[s]; st != nil {
				bars = append(bars, statBar(w.Name+" "+s, s, st))
			}
		}
	}
	return barChart("Requests per second (median, range over rounds)", "req/s", bars, nil)
}

func leverPlot(r *Results) string {
	var bars []bar
	for _, l := range r.Dataplane.Levers {
		ws := make([]string, 0, len(l.Effect))
		for w := range l.Effect {
			ws = append(ws, w)
		}
		slices.Sort(ws)
		for _, w := range ws {
			if s := l.Effect[w]; s != nil {
				bars = append(bars, statBar(l.Name+": "+w, l.Name, s))
			}
		}
	}
	return barChart("Each lever: req/s with it on / off, same round (sets-100: 100 / 2 addresses)", "ratio", bars, []rule{{1, "1.0 (no effect)"}})
}

func changePlot(r *Results) string {
	var bars []bar
	for _, ph := range r.Change.Phases {
		if ph.P99Ratio != nil && ph.Name != "steady" {
			bars = append(bars, statBar(ph.Name, ph.Name, ph.P99Ratio))
		}
	}
	return barChart("Change under load: the phase's p99 / the steady phase's p99, same round", "ratio", bars, []rule{{1, "1.0 (as steady)"}})
}

var ops = []string{"plan", "up-cold", "up-warm", "up-again", "verify", "up-add10", "down", "down-purge"}

func controlPlot(r *Results) string {
	var ss []series
	for _, op := range ops {
		s := series{Name: op}
		for _, t := range r.Controlplane.Times {
			if t["op"] != op || t["exit"] != "0" {
				continue
			}
			x, ok1 := num(t["apps"])
			y, ok2 := num(t["seconds"])
			if ok1 && ok2 {
				s.X, s.Y = append(s.X, x), append(s.Y, y)
			}
		}
		if len(s.X) > 0 {
			ss = append(ss, s)
		}
	}
	return lineChart("bulkhead's own work by the size of the app pool", "app nodes", "seconds", ss)
}

func memoryPlot(r *Results) string {
	byApps := map[float64][][2]float64{} // apps -> (rss, pss) of its sampled nodes
	var xs []float64
	for _, m := range r.Controlplane.Memory {
		a, _ := num(m["apps"])
		rss, _ := num(m["rss_kb"])
		pss, _ := num(m["pss_kb"])
		if _, ok := byApps[a]; !ok {
			xs = append(xs, a)
		}
		byApps[a] = append(byApps[a], [2]float64{rss, pss})
	}
	slices.Sort(xs)
	rss, pss := series{Name: "RSS, MB"}, series{Name: "PSS, MB"}
	for _, a := range xs {
		var r1, p1 []float64
		for _, v := range byApps[a] {
			r1, p1 = append(r1, v[0]/1024), append(p1, v[1]/1024)
		}
		rss.X, rss.Y = append(rss.X, a), append(rss.Y, stat(r1).Median)
		pss.X, pss.Y = append(pss.X, a), append(pss.Y, stat(p1).Median)
	}
	host := series{Name: "host used / apps, MB"}
	for _, h := range r.Controlplane.HostMem {
		a, _ := num(h["apps"])
		u, _ := num(h["used_kb"])
		if a > 0 {
			base := 0.0
			for _, h0 := range r.Controlplane.HostMem {
				if h0["apps"] == "0" {
					base, _ = num(h0["used_kb"])
				}
			}
			host.X, host.Y = append(host.X, a), append(host.Y, (u-base)/a/1024)
		}
	}
	ss := []series{rss, pss}
	if len(host.X) > 0 {
		ss = append(ss, host)
	}
	return lineChart("Memory per app node (agent + apache2 + php-fpm, median of sampled nodes)", "app nodes", "MB", ss)
}

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func fstat(s *Stat, unit string) string {
	if s == nil {
		return "-"
	}
	if s.N == 1 || s.Min == s.Max {
		return fmtNum(s.Median) + unit
	}
	return fmt.Sprintf("%s%s (%s–%s)", fmtNum(s.Median), unit, fmtNum(s.Min), fmtNum(s.Max))
}
