package main

import (
	"fmt"
	"slices"
	"strings"
)

func markdown(r *Results) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	run, mc := r.Run, r.Machine
	p("# bulkhead benchmarks\n\n")
	p("- command: `%s` (as root, from the repository's root), mode %s\n", run["command"], run["mode"])
	p("- when: %s, bulkhead %s, %s s in all\n", run["when"], run["git"], run["elapsed_s"])
	p("- machine: %s, %s cores, %s memory, kernel %s, Debian %s\n", mc["cpu"], mc["cores"], mc["memory"], mc["kernel"], mc["debian"])
	var vs []string
	for _, k := range []string{"nginx", "lighttpd", "apache2", "php8.2-fpm", "mariadb-server", "memcached", "wrk", "runc", "go"} {
		if v := mc["version."+k]; v != "" {
			vs = append(vs, k+" "+v)
		}
	}
	p("- versions: %s\n", strings.Join(vs, ", "))
	if start, end := r.Dataplane.Meta["load_start"], r.Dataplane.Meta["load_end"]; start != "" || end != "" {
		p("- the machine is shared: load average %s at the first data-plane run, %s after the last. Figures are medians over interleaved rounds, with the range (min–max) in brackets; compare within a run, not across runs.\n", start, end)
	} else if start, end := r.WordPress.Meta["load_start"], r.WordPress.Meta["load_end"]; start != "" || end != "" {
		p("- the machine is shared: load average %s at the first WordPress run, %s after the last. Figures are medians over interleaved rounds, with the range (min–max) in brackets; compare within a run, not across runs.\n", start, end)
	} else {
		p("- the machine is shared, and this run measured no data plane, so it recorded no load average. Compare within a run, not across runs.\n")
	}

	if v := r.Dataplane.Meta["installed_binary_ours"]; v != "" {
		p("- the host's installed bulkhead, which every stack's supervisor runs, was this run's build: %s (another checkout's `bulkhead up` replaces it, and its supervisor may then put the split's configs back as that build renders them)\n", v)
	}

	if d := r.Dataplane; len(d.Workloads) > 0 {
		m := d.Meta
		p("\n## Data plane: split vs. monolithic\n\n")
		p("`%s`, %s round(s); each run preceded by a %s s warm-up. In every round each workload runs on the split, the unsandboxed split (right next to the split) and the mono (split and mono take turns going first), then the published port, then the levers.\n\n", m["wrk"], m["rounds"], m["warm_each_s"])
		p("- **split**: the default stack (edge nginx; static lighttpd; app-1, app-2 apache2 + php-fpm; memcached; mariadb; storage sshd, the site mounted over sshfs). wrk runs in `%s`, the namespace on the stack's public bridge that `bulkhead up` makes for verify's outside vantage point, against the edge's public address http://%s/: the path the internet takes to the edge.\n", m["client_netns"], m["edge_public"])
		p("- **mono**: apache2 + php-fpm + mariadb + memcached in ONE network namespace, no edge, no containers, the site on local disk; wrk in that namespace against 127.0.0.1. The configs are the split's app-1, db and cache configs, rendered by bulkhead's renderer (bench/mono) with every node on 127.0.0.1 and paths of its own (apache: %s; php-fpm: %s). The split has two app nodes, so twice the PHP workers, on the same 2 cores.\n", m["apache_mpm"], m["php_fpm_pool"])
		if m["nosandbox_stack"] != "" {
			p("- **nosandbox**: a second split stack, `%s`, the same stack file but for its name, subnets and ports, serving the same site, brought up with `bulkhead up --unsafe-no-sandbox`: its nodes run without user namespaces and seccomp (its edge's nginx: %s; the split's: %s). wrk runs in `%s` against its edge's public address http://%s/, as for the split, on %s.\n",
				m["nosandbox_stack"], m["sandbox.nosandbox"], m["sandbox.split"], m["nosandbox_client_netns"], m["nosandbox_edge_public"], m["nosandbox_workloads"])
		}
		p("- **published**: wrk on the host against the published port %s: the host's DNAT to the edge's public address, then the edge. Goal: published/split >= 0.9.\n\n", m["published"])
		p("![split/mono ratios](dataplane-ratio.svg)\n\n")
		p("| workload | request | bytes | split req/s | mono req/s | split/mono | target | split p50 / p99 ms | mono p50 / p99 ms |\n|---|---|---:|---:|---:|---:|---|---:|---:|\n")
		for _, w := range d.Workloads {
			target := "-"
			if w.Met != nil {
				target = fmt.Sprintf("≥ %.2f: %s", w.Target, map[bool]string{true: "met", false: "**missed**"}[*w.Met])
			}
			p("| %s | `%s` | %s | %s | %s | **%s** | %s | %s / %s | %s / %s |\n", w.Name, w.Request, w.Bytes["split"],
				fstat(w.RPS["split"], ""), fstat(w.RPS["mono"], ""), fstat(w.Ratio, ""), target,
				med(w.P50["split"]), med(w.P99["split"]), med(w.P50["mono"]), med(w.P99["mono"]))
		}
		p("\n![req/s](dataplane-rps.svg)\n\n")
		p("### The published port against the edge's own address\n\n| workload | published req/s | split req/s | published/split |\n|---|---:|---:|---:|\n")
		for _, w := range d.Workloads {
			if w.Published != nil {
				p("| %s | %s | %s | %s |\n", w.Name, fstat(w.RPS["published"], ""), fstat(w.RPS["split"], ""), fstat(w.Published, ""))
			}
		}
		if slices.ContainsFunc(d.Workloads, func(w Workload) bool { return w.Sandbox != nil }) {
			p("\n## Sandbox: sandboxed vs. unsandboxed split, same round\n\n")
			p("The ratio is the split's req/s over the unsandboxed split's (nosandbox), round by round: below 1 is what user namespaces and seccomp cost a visitor; it is expected within %.0f%% of 1. Both stacks are up throughout, but only one is under load at a time; the idle one's CPU shows in the runs below as its `%s:` groups.\n\n",
				100*sandboxTolerance, m["nosandbox_stack"])
			p("![sandboxed/unsandboxed](sandbox.svg)\n\n")
			p("| workload | split req/s | nosandbox req/s | sandboxed/unsandboxed | within %.0f%% | split p50 / p99 ms | nosandbox p50 / p99 ms |\n|---|---:|---:|---:|---|---:|---:|\n", 100*sandboxTolerance)
			for _, w := range d.Workloads {
				if w.Sandbox == nil {
					continue
				}
				within := map[bool]string{true: "yes", false: "**no**"}[*w.SandboxExpected]
				p("| %s | %s | %s | **%s** | %s | %s / %s | %s / %s |\n", w.Name, fstat(w.RPS["split"], ""), fstat(w.RPS["nosandbox"], ""), fstat(w.Sandbox, ""), within,
					med(w.P50["split"]), med(w.P99["split"]), med(w.P50["nosandbox"]), med(w.P99["nosandbox"]))
			}
		}
		if len(d.Attribution) > 0 {
			p("\n## CPU per request: where the split's extra goes\n\n")
			p("Milliseconds of CPU per request (user + system; the system share in brackets), median over the rounds, from the same runs as above: each node's cgroup on the split (runc's, one per container), one cgroup per daemon on the mono, both read before and after wrk; the sshfs clients from their processes' times; softirq is the whole host's (/proc/stat), where most of the kernel's packet handling runs whoever it works for, so other jobs on the host show there too. \"app\" is both app nodes together on the split. Per request, not per second: a setup that serves fewer requests in the same time shows what each one cost it.\n\n")
			for _, a := range d.Attribution {
				p("### %s\n\n| part | split ms/req (sys) | mono ms/req (sys) | split − mono |\n|---|---:|---:|---:|\n", a.Workload)
				for _, row := range a.Rows {
					diff := "-"
					switch {
					case row.SplitMs != nil && row.MonoMs != nil:
						diff = fmt.Sprintf("%+.3f", row.SplitMs.Median-row.MonoMs.Median)
					case row.SplitMs != nil:
						diff = fmt.Sprintf("%+.3f", row.SplitMs.Median)
					}
					p("| %s | %s | %s | %s |\n", row.Part, msSys(row.SplitMs, row.SplitSys), msSys(row.MonoMs, row.MonoSys), diff)
				}
				if a.CPURatio != nil {
					p("\nmono ÷ split, CPU per request of all of the above: **%.2f**: the split/mono ratio of req/s on a host whose two cores did nothing else.\n", *a.CPURatio)
				}
				p("\n")
			}
		}
		p("\n## Levers: each one off vs. on, same round\n\n")
		p("The split stack runs with one lever set against the rendered default, then is set back; the ratio is req/s with the lever on over req/s with it off, from the same round (the default state's figure is that round's split run). \"CPU/request off/on\" is, from the same runs, the split's CPU per request (every node's cgroup) with the lever off over with it on: what it saves per request, which holds where req/s swings on a busy host. Above 1 the lever helps.\n\n")
		p("![levers](levers.svg)\n\n| lever | what | rendered default | req/s on/off by workload | CPU/request off/on by workload |\n|---|---|---|---|---|\n")
		for _, l := range d.Levers {
			byWorkload := func(m map[string]*Stat) string {
				ws := make([]string, 0, len(m))
				for w := range m {
					ws = append(ws, w)
				}
				slices.Sort(ws)
				var es []string
				for _, w := range ws {
					es = append(es, w+" "+fstat(m[w], ""))
				}
				if len(es) == 0 {
					return "-"
				}
				return strings.Join(es, "; ")
			}
			p("| %s | %s | %s | %s | %s |\n", l.Name, l.Doc, l.Default, byWorkload(l.Effect), byWorkload(l.CPUEffect))
		}
		for _, l := range d.Levers {
			if l.Name == "sets-100" {
				p("\n### Isolation overhead\n\nThe `sets-100` lever is the isolation measurement: every nft set that holds the app pool's addresses (%s) grown to the 100 addresses it has at 100 app nodes, against the default stack's 2. The ratio is req/s with 100 over req/s with 2: ", m["sets_grown"])
				var es []string
				for w, s := range l.Effect {
					es = append(es, w+" "+fstat(s, ""))
				}
				slices.Sort(es)
				p("%s. The sets are hash sets and are consulted only for a connection's first packet (`ct state established,related accept` comes first), and the edge keeps its upstream connections alive, so their size should not show.\n", strings.Join(es, "; "))
			}
		}
		p("\n## Every run\n\nCPU in %% of one core over the run (the host has 200%%), by node for the split (`app-1:sshfs` is the host-side sshfs client of app-1) and for the unsandboxed split (`benchns:edge`, ...), by daemon for the mono; `supervise` is `bulkhead supervise`; \"elsewhere\" is the rest of the host (other jobs, softirqs).\n\n")
		p("| round | setup | workload | req/s | p50 ms | p99 ms | non-2xx/3xx | socket errors | status | CPU by group | host busy | elsewhere |\n|---:|---|---|---:|---:|---:|---:|---|---|---|---:|---:|\n")
		for _, x := range d.Runs {
			c := strings.Split(x.CPU, " | ")
			for len(c) < 3 {
				c = append(c, "-")
			}
			status := x.Status
			if status != "ok" {
				status = "**" + status + "**"
			}
			p("| %d | %s | %s | %.0f | %.2f | %.2f | %s | %s | %s | %s | %s | %s |\n", x.Round, x.Setup, x.Workload, x.RPS, x.P50, x.P99, x.Non2xx, x.SockErr, status, c[0], c[1], c[2])
		}
		if d.BadRuns > 0 {
			p("\n**%d run(s) had errors or failed: their figures do not measure a healthy stack.**\n\n## Diagnostics\n%s", d.BadRuns, d.Diagnose)
		}
	}

	if c := r.Controlplane; len(c.Times) > 0 {
		p("\n## Control plane: bulkhead's own work by stack size\n\n")
		p("A stack with the default tiers and N app nodes, from nothing: `plan`; `up` cold (first time, DB init); `up` again (nothing to do); `verify`; `down` (data kept); `up` warm (data there); `up` with 10 more app nodes on the running stack (up-add10: N → N+10, each new node joins the edge's pool once it serves); `down --purge`. Wall-clock seconds, one run each; `down` and `up` warm only at %s app nodes (`-` elsewhere: an up warm costs about as much as an up cold, and the suite must fit in 15 minutes). verify: %s.\n\n", c.Meta["cycle_sizes"], c.Meta["verify"])
		if len(c.Settle) > 0 {
			var waits []float64
			var unsettled []string
			for _, st := range c.Settle {
				if v, ok := num(st["waited_s"]); ok {
					waits = append(waits, v)
				}
				if v, ok := num(st["idle_pct"]); ok && v < 90 {
					unsettled = append(unsettled, fmt.Sprintf("%s at %s app nodes (%s%% idle)", st["op"], st["apps"], st["idle_pct"]))
				}
			}
			p("Each command was timed once the host was at least 90%% idle over a second, so that none paid for what the one before left running: it waited %s s (the median, and the range when the waits differ).", fstat(stat(waits), ""))
			if len(unsettled) > 0 {
				p(" Timed on a host that had not settled within the wait: %s.", strings.Join(unsettled, ", "))
			}
			p("\n\n")
		}
		p("Goals (issue #14), on a quiet machine:\n\n| op | app nodes | goal | measured | met |\n|---|---:|---:|---:|---|\n")
		for _, g := range c.Goals {
			measured, met := "not measured", "-"
			if g.Seconds != nil {
				measured = fmt.Sprintf("%.2f s", *g.Seconds)
				met = "yes"
				if !*g.Met {
					met = "**no**"
				}
			}
			p("| %s | %d | ≤ %.0f s | %s | %s |\n", g.Op, g.Apps, g.Limit, measured, met)
		}
		p("\n")
		p("![control plane](controlplane.svg)\n\n| app nodes |")
		for _, op := range ops {
			p(" %s |", op)
		}
		p("\n|---:|")
		for range ops {
			p("---:|")
		}
		var sizes []string
		cell := map[string]string{}
		for _, t := range c.Times {
			if !slices.Contains(sizes, t["apps"]) {
				sizes = append(sizes, t["apps"])
			}
			v := t["seconds"]
			switch {
			case t["exit"] == "not available":
				v = "n/a"
			case t["exit"] != "0":
				v = v + " (**exit " + t["exit"] + "**)"
			}
			cell[t["apps"]+"/"+t["op"]] = v
		}
		p("\n")
		for _, s := range sizes {
			p("| %s |", s)
			for _, op := range ops {
				v := cell[s+"/"+op]
				if v == "" {
					v = "-"
				}
				p(" %s |", v)
			}
			p("\n")
		}
		p("\n### Memory per app node\n\nAfter `up` cold, for app-1, the middle app node and the last: every process of the node's runc container (`runc ps`: the agent, apache2's processes, php-fpm's master and workers), RSS and PSS (shared pages split among the processes that map them, so PSS adds up across nodes and RSS does not), and the host-side sshfs client that mounts the site for the node. Over all sampled nodes: RSS %s KB, PSS %s KB; sshfs client RSS %s KB, PSS %s KB. The host's used memory grew by %.0f KB per added app node from the smallest stack to the largest (MemTotal − MemAvailable, which includes kernel objects and page cache, and whatever else the shared machine did meanwhile).\n\n",
			fstat(c.PerApp["rss_kb"], ""), fstat(c.PerApp["pss_kb"], ""), fstat(c.PerApp["sshfs_rss_kb"], ""), fstat(c.PerApp["sshfs_pss_kb"], ""), c.HostSlope)
		p("![memory](memory.svg)\n\n| app nodes | node | processes | RSS KB | PSS KB | sshfs RSS KB | sshfs PSS KB |\n|---:|---|---:|---:|---:|---:|---:|\n")
		for _, m := range c.Memory {
			p("| %s | %s | %s | %s | %s | %s | %s |\n", m["apps"], m["node"], m["processes"], m["rss_kb"], m["pss_kb"], m["sshfs_rss_kb"], m["sshfs_pss_kb"])
		}
	}
	if c := r.Change; len(c.Phases) > 0 {
		m := c.Meta
		p("\n## Change under load: the app pool scaled and the site deployed while visitors use the stack\n\n")
		p("A stack with the default tiers and %s app nodes. In each of %s round(s), `%s` runs from `%s`, the namespace on the stack's public bridge that `bulkhead up` makes for verify's outside vantage point, against the edge's public address http://%s/ (GET /, PHP: the app pool answers), for the whole of each phase: **steady** (no change, %s s), **scale-up** (`tiers.app.replicas` %s → %s, `bulkhead up`), **scale-down** (%s → %s, `bulkhead up`), **deploy** (a changed PHP file, `bulkhead deploy`: one more app node with the new release, then each app node drained, switched, checked and re-verified in turn) and **rollback** (`bulkhead rollback`, the same steps back to the previous release). wrk starts %s s before the change and stops %s s after it returns. Load average %s before the first round, %s after the last.\n\n",
			m["from"], m["rounds"], m["wrk"], m["client_netns"], m["edge_public"], m["steady_s"], m["from"], m["to"], m["to"], m["from"], m["settle_s"], m["tail_s"], m["load_start"], m["load_end"])
		p("Failed is wrk's responses of 400 and above plus its socket errors (connect, read, write, timeout), which it counts once per attempt: a port that refuses connections for a second counts thousands. A change that visitors do not notice fails none. The p99 ratio is the phase's p99 over the same round's steady p99.\n\n")
		p("![p99 over steady](change.svg)\n\n")
		p("| phase | change s | requests | failed | p99 ms | p99 / steady p99 |\n|---|---:|---:|---:|---:|---:|\n")
		for _, ph := range c.Phases {
			failed := fstat(ph.Failed, "")
			if ph.Failed.Max > 0 {
				failed = "**" + failed + "**"
			}
			ratio := fstat(ph.P99Ratio, "")
			if ph.Name != "steady" {
				ratio = "**" + ratio + "**"
			}
			p("| %s | %s | %s | %s | %s | %s |\n", ph.Name, fstat(ph.ChangeS, ""), fstat(ph.Requests, ""), failed, fstat(ph.P99, ""), ratio)
		}
		p("\n| round | phase | change s | wrk s | requests | req/s | p50 ms | p99 ms | p99 / steady | non-2xx/3xx | socket errors | failed | status |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|\n")
		for _, x := range c.Runs {
			ratio := "-"
			if x.P99Ratio != nil {
				ratio = f2(*x.P99Ratio)
			}
			status := x.Status
			if status != "ok" {
				status = "**" + status + "**"
			}
			p("| %d | %s | %.2f | %.2f | %d | %.0f | %.2f | %.2f | %s | %d | %s | %d | %s |\n", x.Round, x.Phase, x.ChangeS, x.Duration, x.Requests, x.RPS, x.P50, x.P99, ratio, x.Non2xx, x.SockErr, x.Failed, status)
		}
		if c.Failing > 0 {
			p("\n**%d run(s) had failed requests.**\n\n### Diagnostics\n%s", c.Failing, c.Diagnose)
		}
	}
	backupMarkdown(r.Backup, p)
	wordpressMarkdown(r.WordPress, p)
	return b.String()
}

// msSys formats CPU milliseconds per request with their system share.
func msSys(total, sys *Stat) string {
	if total == nil {
		return "-"
	}
	if sys == nil || sys.Median == 0 {
		return fmt.Sprintf("%.3f", total.Median)
	}
	return fmt.Sprintf("%.3f (%.3f)", total.Median, sys.Median)
}

func med(s *Stat) string {
	if s == nil {
		return "-"
	}
	return f2(s.Median)
}
