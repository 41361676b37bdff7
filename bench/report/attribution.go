package main

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
)

// Attribution is the CPU each part of a setup spent per request, split
// against mono, by workload: where the split's extra CPU goes.
type Attribution struct {
	Workload string    `json:"workload"`
	Rows     []AttrRow `json:"rows"`
	// CPURatio is the mono's CPU per request over the split's, both
	// without wrk and softirq: the split/mono ratio of req/s where both
	// saturate the same cores and nothing else runs.
	CPURatio *float64 `json:"mono_over_split_cpu_per_request,omitempty"`
}

// AttrRow is one part of the stack: its CPU per request in milliseconds,
// user + system, median over the rounds, on the split and on the mono.
type AttrRow struct {
	Part  string `json:"part"`
	Split string `json:"split_groups"`
	Mono  string `json:"mono_groups"`
	// SplitMs and MonoMs are nil where the setup has no such part.
	SplitMs *Stat `json:"split_ms_per_request"`
	MonoMs  *Stat `json:"mono_ms_per_request"`
	// SplitSys and MonoSys are the system (kernel) share of the same.
	SplitSys *Stat `json:"split_sys_ms_per_request"`
	MonoSys  *Stat `json:"mono_sys_ms_per_request"`
}

// attrParts are the rows of the attribution table: which groups of
// dataplane-cgroups.tsv (or, for sshfs, of the per-process CPU column) make
// up each part, on the split and on the mono. A trailing "*" matches a
// prefix. "stack" is every cgroup of the setup; "host:softirq" is the whole
// host's, whoever it worked for.
var attrParts = []struct{ part, split, mono string }{
	{"edge", "edge", ""},
	{"app: web server + php-fpm", "app-*", "mono:apache2 mono:php-fpm"},
	{"cache", "cache", "mono:memcached"},
	{"db", "db", "mono:mariadb"},
	{"static", "static", ""},
	{"storage", "storage", ""},
	{"sshfs clients (host side)", "proc:*:sshfs", ""},
	{"all of the above", "edge app-* cache db static storage proc:*:sshfs", "mono:*"},
	{"softirq, whole host", "host:softirq", "host:softirq"},
	{"wrk", "wrk", "wrk"},
}

var attrWorkloads = []string{"cached", "miss", "post"}

// loadAttribution reads dataplane-cgroups.tsv, and the per-process CPU
// column of d's runs for the sshfs clients, which are host processes in no
// node's cgroup.
func loadAttribution(dir string, d *Dataplane) error {
	rows, err := table(filepath.Join(dir, "dataplane-cgroups.tsv"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	type key struct {
		round           int
		setup, workload string
	}
	type cpu struct{ total, sys float64 } // ms per request
	groups := map[key]map[string]cpu{}
	ok := map[key]bool{}
	for _, r := range d.Runs {
		if r.Status == "ok" {
			ok[key{r.Round, r.Setup, r.Workload}] = true
		}
	}
	for _, row := range rows {
		round, _ := strconv.Atoi(row["round"])
		k := key{round, row["setup"], row["workload"]}
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
	// The sshfs clients: "label pct, ..." in % of one core over the run.
	for _, r := range d.Runs {
		k := key{r.Round, r.Setup, r.Workload}
		if groups[k] == nil || r.RPS <= 0 {
			continue
		}
		c, _, _ := strings.Cut(r.CPU, " | ")
		for _, item := range strings.Split(c, ", ") {
			label, pct, found := strings.Cut(item, " ")
			v, isNum := num(pct)
			if !found || !isNum || !strings.HasSuffix(label, ":sshfs") {
				continue
			}
			groups[k]["proc:"+label] = cpu{total: v * 10 / r.RPS}
		}
	}
	sum := func(k key, patterns string) (cpu, bool) {
		var s cpu
		found := false
		for g, c := range groups[k] {
			for _, p := range strings.Fields(patterns) {
				if globMatch(p, g) {
					s.total += c.total
					s.sys += c.sys
					found = true
					break
				}
			}
		}
		return s, found
	}
	leverCPU(d, func(round int, setup, workload string) (float64, bool) {
		c, found := sum(key{round, setup, workload}, stackGroups)
		return c.total, found && c.total > 0
	})
	for _, w := range attrWorkloads {
		a := Attribution{Workload: w}
		for _, part := range attrParts {
			row := AttrRow{Part: part.part, Split: part.split, Mono: part.mono}
			for _, side := range []struct {
				setup, patterns string
				total, sys      **Stat
			}{{"split", part.split, &row.SplitMs, &row.SplitSys}, {"mono", part.mono, &row.MonoMs, &row.MonoSys}} {
				if side.patterns == "" {
					continue
				}
				var ts, ss []float64
				for k := range groups {
					if k.setup != side.setup || k.workload != w {
						continue
					}
					if c, found := sum(k, side.patterns); found {
						ts, ss = append(ts, c.total), append(ss, c.sys)
					}
				}
				*side.total, *side.sys = stat(ts), stat(ss)
			}
			a.Rows = append(a.Rows, row)
		}
		for _, row := range a.Rows {
			if row.Part == "all of the above" && row.SplitMs != nil && row.MonoMs != nil && row.SplitMs.Median > 0 {
				r := row.MonoMs.Median / row.SplitMs.Median
				a.CPURatio = &r
			}
		}
		if a.Rows[len(a.Rows)-1].SplitMs != nil || a.Rows[0].SplitMs != nil {
			d.Attribution = append(d.Attribution, a)
		}
	}
	return nil
}

// stackGroups are the split's own cgroups: every node's, as in the "all of
// the above" row of the attribution.
const stackGroups = "edge app-* cache db static storage"

// leverCPU sets each lever's CPUEffect: round by round, the split's CPU
// per request with the lever off over with it on, from cpu(round, setup,
// workload), which says whether that run was measured.
func leverCPU(d *Dataplane, cpu func(round int, setup, workload string) (float64, bool)) {
	rounds := map[int]bool{}
	for _, r := range d.Runs {
		rounds[r.Round] = true
	}
	for i, l := range d.Levers {
		toggled := "split:" + l.Name + "=on"
		if l.Default == "on" {
			toggled = "split:" + l.Name + "=off"
		}
		for w := range l.Effect {
			var vs []float64
			for round := range rounds {
				def, ok1 := cpu(round, "split", w)
				tog, ok2 := cpu(round, toggled, w)
				if !ok1 || !ok2 {
					continue
				}
				if l.Default == "on" {
					vs = append(vs, tog/def)
				} else {
					vs = append(vs, def/tog)
				}
			}
			if s := stat(vs); s != nil {
				if d.Levers[i].CPUEffect == nil {
					d.Levers[i].CPUEffect = map[string]*Stat{}
				}
				d.Levers[i].CPUEffect[w] = s
			}
		}
	}
}

// globMatch reports whether group matches pattern, in which one "*"
// stands for one or more characters other than ":" (so "app-*" is app-1 but
// not benchns:app-1, the idle twin's).
func globMatch(pattern, group string) bool {
	pre, post, star := strings.Cut(pattern, "*")
	if !star {
		return pattern == group
	}
	if len(group) <= len(pre)+len(post) || !strings.HasPrefix(group, pre) || !strings.HasSuffix(group, post) {
		return false
	}
	return !strings.Contains(group[len(pre):len(group)-len(post)], ":")
}
