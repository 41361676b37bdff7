package main

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
)

// WordPress is the WordPress workload (bench/wordpress.sh): the front page
// of a stack made by `bulkhead init --app wordpress` against the same
// WordPress in one namespace.
type WordPress struct {
	Meta map[string]string `json:"meta"`
	Runs []WPRun           `json:"runs"`
	RPS  map[string]*Stat  `json:"rps"`    // by setup
	P50  map[string]*Stat  `json:"p50_ms"` // by setup
	P99  map[string]*Stat  `json:"p99_ms"` // by setup
	// Ratio is split/mono req/s, round by round; Target is issue #17's goal.
	Ratio  *Stat   `json:"split_over_mono"`
	Target float64 `json:"target"`
	Met    *bool   `json:"target_met,omitempty"`
	// CPU is the CPU each part spent per request, split against mono.
	CPU      []AttrRow `json:"cpu_per_request"`
	CPURatio *float64  `json:"mono_over_split_cpu_per_request,omitempty"`
	BadRuns  int       `json:"bad_runs"`
}

// WPRun is one wrk run of bench/wordpress.sh.
type WPRun struct {
	Round    int     `json:"round"`
	Setup    string  `json:"setup"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Non2xx   string  `json:"non2xx"`
	SockErr  string  `json:"socket_errors"`
	Requests string  `json:"requests"`
	Status   string  `json:"status"`
}

// wpTarget is issue #17's goal: the split's front page at least 0.9 of
// the monolith's req/s.
const wpTarget = 0.9

// wpParts are the rows of the WordPress CPU table, as attrParts are the
// data plane's; "sshfs" is the split's sshfs clients on the host.
var wpParts = []struct{ part, split, mono string }{
	{"edge", "edge", ""},
	{"app: apache2 + php-fpm", "app-*", "mono:apache2 mono:php-fpm"},
	{"cache", "cache", "mono:memcached"},
	{"db", "db", "mono:mariadb"},
	{"static", "static", ""},
	{"storage", "storage", ""},
	{"sshfs clients (host side)", "sshfs", ""},
	{"all of the above", "edge app-* cache db static storage sshfs", "mono:*"},
	{"softirq, whole host", "host:softirq", "host:softirq"},
	{"wrk", "wrk", "wrk"},
}

func loadWordPress(dir string, r *Results) error {
	rows, err := table(filepath.Join(dir, "wordpress.tsv"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	w := &r.WordPress
	w.Target = wpTarget
	if w.Meta, err = meta(filepath.Join(dir, "wordpress-meta.tsv")); err != nil {
		return err
	}
	rps := map[string][]float64{}
	p50 := map[string][]float64{}
	p99 := map[string][]float64{}
	byRound := map[int]map[string]float64{}
	for _, row := range rows {
		x := WPRun{Setup: row["setup"], Non2xx: row["non2xx"], SockErr: row["socket_errors"], Requests: row["requests"], Status: row["status"]}
		x.Round, _ = strconv.Atoi(row["round"])
		x.RPS, _ = num(row["rps"])
		x.P50, _ = num(row["p50_ms"])
		x.P99, _ = num(row["p99_ms"])
		w.Runs = append(w.Runs, x)
		if x.Status != "ok" {
			w.BadRuns++
			continue
		}
		rps[x.Setup] = append(rps[x.Setup], x.RPS)
		p50[x.Setup] = append(p50[x.Setup], x.P50)
		p99[x.Setup] = append(p99[x.Setup], x.P99)
		if byRound[x.Round] == nil {
			byRound[x.Round] = map[string]float64{}
		}
		byRound[x.Round][x.Setup] = x.RPS
	}
	w.RPS, w.P50, w.P99 = map[string]*Stat{}, map[string]*Stat{}, map[string]*Stat{}
	for s := range rps {
		w.RPS[s], w.P50[s], w.P99[s] = stat(rps[s]), stat(p50[s]), stat(p99[s])
	}
	var ratios []float64
	for _, rr := range byRound {
		if s, m := rr["split"], rr["mono"]; s > 0 && m > 0 {
			ratios = append(ratios, s/m)
		}
	}
	if w.Ratio = stat(ratios); w.Ratio != nil {
		met := w.Ratio.Median >= w.Target
		w.Met = &met
	}
	return loadWordPressCPU(dir, w)
}

// loadWordPressCPU reads wordpress-cgroups.tsv: CPU per request by part.
func loadWordPressCPU(dir string, w *WordPress) error {
	rows, err := table(filepath.Join(dir, "wordpress-cgroups.tsv"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	type key struct {
		round int
		setup string
	}
	type cpu struct{ total, sys float64 } // ms per request
	ok := map[key]bool{}
	for _, x := range w.Runs {
		ok[key{x.Round, x.Setup}] = x.Status == "ok"
	}
	groups := map[key]map[string]cpu{}
	for _, row := range rows {
		round, _ := strconv.Atoi(row["round"])
		k := key{round, row["setup"]}
		reqs, _ := num(row["requests"])
		usage, okU := num(row["usage_us"])
		if !ok[k] || reqs <= 0 || !okU {
			continue
		}
		sys, _ := num(row["sys_us"])
		if groups[k] == nil {
			groups[k] = map[string]cpu{}
		}
		groups[k][row["group"]] = cpu{usage / 1000 / reqs, sys / 1000 / reqs}
	}
	for _, part := range wpParts {
		row := AttrRow{Part: part.part, Split: part.split, Mono: part.mono}
		for _, side := range []struct {
			setup, patterns string
			total, sys      **Stat
		}{{"split", part.split, &row.SplitMs, &row.SplitSys}, {"mono", part.mono, &row.MonoMs, &row.MonoSys}} {
			if side.patterns == "" {
				continue
			}
			var ts, ss []float64
			for k, gs := range groups {
				if k.setup != side.setup {
					continue
				}
				var s cpu
				found := false
				for g, c := range gs {
					for _, p := range strings.Fields(side.patterns) {
						if globMatch(p, g) {
							s.total, s.sys, found = s.total+c.total, s.sys+c.sys, true
							break
						}
					}
				}
				if found {
					ts, ss = append(ts, s.total), append(ss, s.sys)
				}
			}
			*side.total, *side.sys = stat(ts), stat(ss)
		}
		if row.Part == "all of the above" && row.SplitMs != nil && row.MonoMs != nil && row.SplitMs.Median > 0 {
			v := row.MonoMs.Median / row.SplitMs.Median
			w.CPURatio = &v
		}
		w.CPU = append(w.CPU, row)
	}
	return nil
}

// wordpressMarkdown is results.md's section on WordPress.
func wordpressMarkdown(w WordPress, p func(string, ...any)) {
	if len(w.Runs) == 0 {
		return
	}
	m := w.Meta
	p("\n## WordPress's front page: split vs. monolithic\n\n")
	p("`%s`, %s round(s), each run preceded by a %s s warm-up, split and mono taking turns going first; `%s`. Load average %s at the first run, %s after the last.\n\n", m["wrk"], m["rounds"], m["warm_each_s"], m["request"], m["load_start"], m["load_end"])
	p("- **split**: a stack written by `bulkhead init --app wordpress` (WordPress %s from Debian; edge, static, app-1 and app-2, cache, db, storage), installed through its installer, posts added through the REST API; wrk in the stack's outside namespace against the edge's public address, with the Host the site knows itself by. Up in %s s.\n", m["version.wordpress"], m["split_up_s"])
	p("- **mono**: the same WordPress tree with apache2 + php-fpm + mariadb + memcached in ONE network namespace, configs rendered by bench/mono from the split's plan; installed and posted to the same way.\n")
	p("- object cache: %s on both sides. PHP (split app-1): %s; (mono): %s.\n\n", m["object_cache"], orDash(m["php.split"]), orDash(m["php.mono"]))
	target := "-"
	if w.Met != nil {
		target = map[bool]string{true: "met", false: "**missed**"}[*w.Met]
	}
	p("| split req/s | mono req/s | split/mono | goal ≥ %.2f | split p50 / p99 ms | mono p50 / p99 ms | bytes split / mono |\n|---:|---:|---:|---|---:|---:|---:|\n", w.Target)
	p("| %s | %s | **%s** | %s | %s / %s | %s / %s | %s / %s |\n", fstat(w.RPS["split"], ""), fstat(w.RPS["mono"], ""), fstat(w.Ratio, ""), target,
		med(w.P50["split"]), med(w.P99["split"]), med(w.P50["mono"]), med(w.P99["mono"]), m["bytes.split"], m["bytes.mono"])
	if len(w.CPU) > 0 {
		p("\nCPU per request, ms (system share in brackets), median over the rounds:\n\n| part | split | mono |\n|---|---:|---:|\n")
		for _, row := range w.CPU {
			p("| %s | %s | %s |\n", row.Part, msSys(row.SplitMs, row.SplitSys), msSys(row.MonoMs, row.MonoSys))
		}
		if w.CPURatio != nil {
			p("\nmono's CPU per request over the split's (all of the above): **%s**: the split/mono ratio of req/s to expect where both saturate the same cores.\n", f2(*w.CPURatio))
		}
	}
	p("\n| round | setup | req/s | p50 ms | p99 ms | requests | non-2xx/3xx | socket errors | status |\n|---:|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, x := range w.Runs {
		status := x.Status
		if status != "ok" {
			status = "**" + status + "**"
		}
		p("| %d | %s | %.1f | %.2f | %.2f | %s | %s | %s | %s |\n", x.Round, x.Setup, x.RPS, x.P50, x.P99, x.Requests, x.Non2xx, x.SockErr, status)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
