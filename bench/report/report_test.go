package main

import (
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStat(t *testing.T) {
	for _, tc := range []struct {
		in            []float64
		med, min, max float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 2, 3}, 2.5, 1, 4},
	} {
		s := stat(tc.in)
		if s.Median != tc.med || s.Min != tc.min || s.Max != tc.max || s.N != len(tc.in) {
			t.Errorf("stat(%v) = %+v", tc.in, s)
		}
	}
	if stat(nil) != nil {
		t.Error("stat(nil) is not nil")
	}
}

// TestRun feeds run a small data directory and checks what it computes and
// that every plot is well-formed XML.
func TestRun(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("dataplane.tsv", "round\tsetup\tworkload\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\tstatus\tcpu\n"+
		"1\tsplit\tsmall\t900\t1\t2\t0\t0\t900\tok\tedge 50 | 190 of 200 | 10\n"+
		"1\tmono\tsmall\t1000\t1\t2\t0\t0\t1000\tok\tmono:apache2 90 | 190 of 200 | 10\n"+
		"1\tsplit:keepalive=off\tsmall\t450\t1\t2\t0\t0\t450\tok\t-\n"+
		"1\tnosandbox\tsmall\t1000\t1\t2\t0\t0\t1000\tok\tbenchns:edge 50 | 190 of 200 | 10\n"+
		"2\tsplit\tsmall\t1200\t1\t2\t0\t0\t1200\tok\t-\n"+
		"2\tmono\tsmall\t1000\t1\t2\t0\t0\t1000\tok\t-\n"+
		"2\tsplit:keepalive=off\tsmall\t600\t1\t2\t0\t0\t600\tok\t-\n"+
		"2\tnosandbox\tsmall\t1200\t1\t2\t0\t0\t1200\tok\t-\n"+
		"2\tnosandbox\tcached\t300\t1\t2\t0\t0\t300\tok\t-\n"+
		"2\tsplit\tcached\t291\t1\t2\t0\t0\t291\tok\t-\n"+
		"3\tsplit\tsmall\t-\t-\t-\t-\t-\t0\twrk failed (exit 1)\t-\n")
	write("dataplane-meta.tsv", "key\tvalue\nworkload.small\tGET /s.css\nnosandbox_stack\tbenchns\nlever.keepalive\tupstream keepalive\nlever.keepalive.default\ton\nlever.keepalive.workloads\tsmall\n")
	write("controlplane.tsv", "apps\top\tseconds\texit\n1\tup-cold\t5\t0\n10\tup-cold\t15\t0\n1\tverify\t-\tnot available\n"+
		"100\tup-cold\t29.5\t0\n100\tverify\t5.01\t0\n100\tup-add10\t12\t1\n")
	write("settle.tsv", "apps\top\twaited_s\tidle_pct\n1\tup-cold\t1.0\t97\n100\tup-add10\t60.2\t71\n")
	write("memory.tsv", "apps\tnode\tprocesses\trss_kb\tpss_kb\tsshfs_rss_kb\tsshfs_pss_kb\n1\tapp-1\t7\t80000\t15000\t11000\t2000\n")
	write("hostmem.tsv", "apps\tused_kb\n0\t1000\n1\t31000\n10\t301000\n")
	if err := run(data, out); err != nil {
		t.Fatal(err)
	}
	r, err := load(data)
	if err != nil {
		t.Fatal(err)
	}
	w := r.Dataplane.Workloads[0]
	if w.Ratio.Median != 1.05 || w.Ratio.Min != 0.9 || w.Ratio.Max != 1.2 || *w.Met != true {
		t.Errorf("split/mono small = %+v, met %v", w.Ratio, *w.Met)
	}
	// Round 1: 900/1000, round 2: 1200/1200; round 3's split failed.
	if w.Sandbox == nil || w.Sandbox.Median != 0.95 || w.Sandbox.Min != 0.9 || w.Sandbox.Max != 1 || w.Sandbox.N != 2 || *w.SandboxExpected {
		t.Errorf("sandboxed/unsandboxed small = %+v, within %v; want median 0.95 (0.9-1) of 2, not within 3%%", w.Sandbox, w.SandboxExpected)
	}
	if c := r.Dataplane.Workloads[1]; c.Name != "cached" || c.Sandbox == nil || c.Sandbox.Median != 0.97 || !*c.SandboxExpected || c.Ratio != nil {
		t.Errorf("cached: %+v; want sandboxed/unsandboxed 0.97, within 3%%, and no split/mono", c)
	}
	if r.Dataplane.BadRuns != 1 {
		t.Errorf("bad runs = %d, want 1", r.Dataplane.BadRuns)
	}
	if e := r.Dataplane.Levers[0].Effect["small"]; e == nil || e.Median != 2 {
		t.Errorf("keepalive on/off = %+v, want 2", e)
	}
	if r.Controlplane.HostSlope != 30000 {
		t.Errorf("host slope = %v, want 30000", r.Controlplane.HostSlope)
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	// up-add10 failed at 100: not measured, rather than met or not.
	for _, want := range []string{"| up-cold | 100 | ≤ 30 s | 29.50 s | yes |", "| up-add10 | 100 | ≤ 10 s | not measured | - |", "| verify | 100 | ≤ 5 s | 5.01 s | **no** |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md has no goal row %q", want)
		}
	}
	// The one op that started on a busy host is named.
	if want := "it waited 30.6 (1–60.2) s (the median, and the range when the waits differ). Timed on a host that had not settled within the wait: up-add10 at 100 app nodes (71% idle)."; !strings.Contains(string(md), want) {
		t.Errorf("results.md does not say how long the ops waited to settle, %q", want)
	}
	if !strings.Contains(string(md), "n/a") {
		t.Error("results.md does not say verify was not available")
	}
	for _, want := range []string{"| small | 1050 (900–1200) | 1100 (1000–1200) | **0.95 (0.90–1)** | **no** |", "| cached | 291 | 300 | **0.97** | yes |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md has no sandbox row %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "sandbox.svg")); err != nil {
		t.Errorf("no sandbox plot: %v", err)
	}
	// The plots run wrote, not r.Plots: load alone draws none.
	plots, err := filepath.Glob(filepath.Join(out, "*.svg"))
	if err != nil || len(plots) != 6 {
		t.Errorf("plots written: %v (%v), want 6", plots, err)
	}
	for _, name := range plots {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(f)
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Errorf("%s: %v", name, err)
				break
			}
		}
		f.Close()
	}
}

// TestChange feeds run the raw results of bench/change.sh: each change
// phase's p99 is divided by its own round's steady p99, failed requests
// count as figures, and a run wrk could not measure counts as none.
func TestChange(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	tsv := "round\tphase\tchange_s\tduration_s\trequests\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\tfailed\tstatus\n" +
		"1\tsteady\t5.00\t8.10\t8000\t990\t6\t20\t0\t0\t0\tok\n" +
		"1\tscale-up\t20.00\t23.30\t12000\t515\t6\t1000\t158\tconnect 0, read 15, write 100, timeout 0\t273\tfailed requests\n" +
		"1\tscale-down\t15.00\t18.20\t9000\t495\t6\t400\t0\t0\t0\tok\n" +
		"2\tsteady\t5.00\t8.00\t8100\t1010\t6\t40\t0\t0\t0\tok\n" +
		"2\tscale-up\t21.00\t24.10\t13000\t540\t6\t1200\t0\t0\t0\tok\n" +
		"2\tscale-down\t-\t-\t0\t-\t-\t-\t-\t-\t-\twrk failed (exit 1)\n"
	if err := os.WriteFile(filepath.Join(data, "change.tsv"), []byte(tsv), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(data, out); err != nil {
		t.Fatal(err)
	}
	r, err := load(data)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Change
	if len(c.Phases) != 3 || c.Failing != 1 {
		t.Fatalf("phases %+v, %d runs failing; want 3 phases, 1 run failing", c.Phases, c.Failing)
	}
	// Round 1: 1000/20, round 2: 1200/40.
	if up := c.Phases[1]; up.Name != "scale-up" || up.P99Ratio.Median != 40 || up.P99Ratio.Min != 30 || up.P99Ratio.Max != 50 || up.Failed.Max != 273 {
		t.Errorf("scale-up: %+v, p99 ratio %+v, failed %+v; want ratio 40 (30-50), failed up to 273", up, up.P99Ratio, up.Failed)
	}
	if down := c.Phases[2]; down.P99Ratio.N != 1 || down.P99Ratio.Median != 20 {
		t.Errorf("scale-down p99 ratio %+v, want 20 from round 1 only", down.P99Ratio)
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	for _, want := range []string{"| scale-up | 20.5 (20–21) | 12500 (12000–13000) | **136 (0–273)** | 1100 (1000–1200) | **40 (30–50)** |", "**1 run(s) had failed requests.**"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "change.svg")); err != nil {
		t.Errorf("no change plot: %v", err)
	}
}

// TestBackup feeds run the raw results of bench/backup.sh: MB/s from the
// data's bytes, bulkhead's times over the raw tools' (dump + tar, load +
// untar), the goals judged at 100 MB only, and a failed op leaving its
// figures out.
func TestBackup(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	tsv := "size_mb\top\tseconds\tdata_bytes\tout_bytes\texit\n" +
		"10\traw-dump\t0.50\t-\t5000000\t0\n" +
		"10\traw-tar\t0.50\t-\t5000000\t0\n" +
		"10\tbackup\t2.00\t10000000\t8000000\t0\n" +
		"10\trestore\t20.00\t10000000\t-\t0\n" +
		"10\traw-load\t1.00\t10000000\t-\t0\n" +
		"10\traw-untar\t1.00\t10000000\t-\t0\n" +
		"100\traw-dump\t3.00\t-\t50000000\t0\n" +
		"100\traw-tar\t2.00\t-\t50000000\t0\n" +
		"100\tbackup\t12.50\t100000000\t80000000\t0\n" +
		"100\trestore\t25.00\t100000000\t-\t0\n" +
		"100\traw-load\t9.00\t100000000\t-\t1\n" +
		"100\traw-untar\t1.00\t100000000\t-\t0\n"
	os.WriteFile(filepath.Join(data, "backup.tsv"), []byte(tsv), 0o644)
	os.WriteFile(filepath.Join(data, "backup-meta.tsv"), []byte("key\tvalue\nrows\tbase64 rows\nfiles\t1 MB files\n"), 0o644)
	if err := run(data, out); err != nil {
		t.Fatal(err)
	}
	r, err := load(data)
	if err != nil {
		t.Fatal(err)
	}
	b := r.Backup
	if len(b.Sizes) != 2 {
		t.Fatalf("sizes %+v, want 2", b.Sizes)
	}
	s10, s100 := b.Sizes[0], b.Sizes[1]
	if *s10.BackupMBps != 5 || *s10.RawBackupMBps != 10 || *s10.BackupRatio != 2 || *s10.RestoreRatio != 10 || s10.BackupMet != nil {
		t.Errorf("10 MB: %+v; want backup 5 MB/s against 10, ratios 2 and 10, no goal judged", s10)
	}
	if *s100.BackupRatio != 2.5 || *s100.BackupMet || !*s100.RestoreMet || s100.RawRestS != nil || s100.RestoreRatio != nil {
		t.Errorf("100 MB: %+v; want backup/raw 2.5, the backup goal missed, the restore goal met, and no raw restore (its load failed)", s100)
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	for _, want := range []string{"| 100 MB | 100.0 | 80.0 | **12.50 (goal missed)** | 8.00 | 5.00 | 20.00 | 2.50 | 25.00 (goal met) | 4.00 | - | - | - |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
}

// TestAttribution checks CPU per request by part from dataplane-cgroups.tsv
// and the sshfs clients' share of the CPU column: the idle twin's groups
// and runs that failed count for nothing.
func TestAttribution(t *testing.T) {
	data := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("run.tsv", "key\tvalue\n")
	write("dataplane.tsv", "round\tsetup\tworkload\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\tstatus\tcpu\n"+
		"1\tsplit\tcached\t1000\t1\t2\t0\t0\t2000\tok\tapp-1 60, app-1:sshfs 10, benchns:app-1:sshfs 5 | 190 of 200 | 10\n"+
		"1\tmono\tcached\t1000\t1\t2\t0\t0\t2000\tok\tmono:php-fpm8.2 90 | 190 of 200 | 10\n"+
		"2\tsplit\tcached\t-\t-\t-\t-\t-\t0\twrk failed (exit 1)\t-\n")
	write("dataplane-cgroups.tsv", "round\tsetup\tworkload\trequests\tgroup\tusage_us\tuser_us\tsys_us\n"+
		"1\tsplit\tcached\t2000\tapp-1\t1000000\t600000\t400000\n"+
		"1\tsplit\tcached\t2000\tapp-2\t1000000\t600000\t400000\n"+
		"1\tsplit\tcached\t2000\tbenchns:app-1\t9000000\t0\t0\n"+
		"1\tsplit\tcached\t2000\tedge\t500000\t200000\t300000\n"+
		"1\tmono\tcached\t2000\tmono:apache2\t400000\t200000\t200000\n"+
		"1\tmono\tcached\t2000\tmono:php-fpm\t1200000\t1000000\t200000\n"+
		"1\tmono\tcached\t2000\twrk\t200000\t-\t-\n"+
		"2\tsplit\tcached\t0\tapp-1\t1000000\t0\t0\n")
	r, err := load(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Dataplane.Attribution) != 1 {
		t.Fatalf("attribution for %d workloads, want 1 (cached)", len(r.Dataplane.Attribution))
	}
	want := map[string][2]float64{ // part: split, mono ms/request; -1 for none
		"edge":                      {0.25, -1},
		"app: web server + php-fpm": {1, 0.8},
		"sshfs clients (host side)": {0.1, -1},
		"all of the above":          {1.35, 0.8},
		"wrk":                       {-1, 0.1},
	}
	for _, row := range r.Dataplane.Attribution[0].Rows {
		w, ok := want[row.Part]
		if !ok {
			continue
		}
		for i, got := range []*Stat{row.SplitMs, row.MonoMs} {
			switch {
			case w[i] < 0 && got != nil:
				t.Errorf("%s: side %d has %v ms, want none", row.Part, i, got.Median)
			case w[i] >= 0 && (got == nil || math.Abs(got.Median-w[i]) > 1e-9):
				t.Errorf("%s: side %d has %+v, want %v ms", row.Part, i, got, w[i])
			}
		}
	}
	if got := r.Dataplane.Attribution[0].CPURatio; got == nil || math.Abs(*got-0.8/1.35) > 1e-9 {
		t.Errorf("mono/split CPU per request = %v, want %v", got, 0.8/1.35)
	}
	if md := markdown(r); !strings.Contains(md, "| app: web server + php-fpm | 1.000 (0.400) | 0.800 (0.200) | +0.200 |") {
		t.Errorf("results.md lacks the app row:\n%s", md)
	}
}

// TestLeverCPU checks a lever's CPU per request off over on, round by
// round, for a lever on by default and one off by default.
func TestLeverCPU(t *testing.T) {
	data := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(data, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("run.tsv", "key\tvalue\n")
	write("dataplane-meta.tsv", "key\tvalue\n"+
		"lever.keepalive\tkept connections\nlever.keepalive.default\ton\nlever.keepalive.workloads\tcached\n"+
		"lever.edge-log\tthe log\nlever.edge-log.default\ton\nlever.edge-log.workloads\tcached\n"+
		"lever.edge-workers\tone worker\nlever.edge-workers.default\toff\nlever.edge-workers.workloads\tcached\n")
	write("dataplane.tsv", "round\tsetup\tworkload\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\tstatus\tcpu\n"+
		"1\tsplit\tcached\t1000\t1\t2\t0\t0\t1000\tok\t-\n"+
		"1\tsplit:keepalive=off\tcached\t500\t1\t2\t0\t0\t1000\tok\t-\n"+
		"1\tsplit:edge-workers=on\tcached\t500\t1\t2\t0\t0\t1000\tok\t-\n"+
		"1\tsplit:edge-log=off\tcached\t-\t-\t-\t-\t-\t0\twrk failed (exit 1)\t-\n")
	write("dataplane-cgroups.tsv", "round\tsetup\tworkload\trequests\tgroup\tusage_us\tuser_us\tsys_us\n"+
		"1\tsplit\tcached\t1000\tedge\t500000\t0\t0\n"+
		"1\tsplit\tcached\t1000\tapp-1\t1500000\t0\t0\n"+
		"1\tsplit\tcached\t1000\twrk\t9000000\t-\t-\n"+
		"1\tsplit:keepalive=off\tcached\t1000\tedge\t1000000\t0\t0\n"+
		"1\tsplit:keepalive=off\tcached\t1000\tapp-1\t2000000\t0\t0\n"+
		"1\tsplit:edge-workers=on\tcached\t1000\tedge\t400000\t0\t0\n"+
		"1\tsplit:edge-workers=on\tcached\t1000\tapp-1\t1200000\t0\t0\n"+
		"1\tsplit:edge-log=off\tcached\t1000\tedge\t100000\t0\t0\n")
	r, err := load(data)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"keepalive": 3.0 / 2, "edge-workers": 2 / 1.6, "edge-log": -1}
	for _, l := range r.Dataplane.Levers {
		w, ok := want[l.Name]
		if !ok {
			t.Fatalf("unexpected lever %s", l.Name)
		}
		got := l.CPUEffect["cached"]
		switch {
		case w < 0 && got != nil:
			t.Errorf("%s: CPU off/on %+v from a failed run, want none", l.Name, got)
		case w >= 0 && (got == nil || math.Abs(got.Median-w) > 1e-9):
			t.Errorf("%s: CPU off/on %+v, want %v", l.Name, got, w)
		}
		delete(want, l.Name)
	}
	if len(want) != 0 {
		t.Errorf("levers missing: %v", want)
	}
	if md := markdown(r); !strings.Contains(md, "| keepalive | kept connections | on | cached 2 | cached 1.50 |") {
		t.Errorf("results.md lacks the keepalive row:\n%s", md)
	}
}

// TestWordPress feeds run the raw results of bench/wordpress.sh: split/mono
// round by round against the goal, CPU per request by part, and a run with
// errors counted for nothing.
func TestWordPress(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	runs := "round\tsetup\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\tstatus\n" +
		"1\tsplit\t40\t100\t300\t0\t0\t400\tok\n" +
		"1\tmono\t50\t80\t200\t0\t0\t500\tok\n" +
		"2\tmono\t40\t90\t210\t0\t0\t400\tok\n" +
		"2\tsplit\t38\t110\t310\t0\t0\t380\tok\n" +
		"3\tsplit\t10\t900\t3000\t12\t0\t100\terrors\n" +
		"3\tmono\t45\t85\t205\t0\t0\t450\tok\n"
	cg := "round\tsetup\trequests\tgroup\tusage_us\tuser_us\tsys_us\n" +
		"1\tsplit\t400\tedge\t400000\t200000\t200000\n" +
		"1\tsplit\t400\tapp-1\t4000000\t3000000\t1000000\n" +
		"1\tsplit\t400\tapp-2\t4000000\t3000000\t1000000\n" +
		"1\tsplit\t400\tsshfs\t0\t0\t0\n" +
		"1\tmono\t500\tmono:php-fpm\t9000000\t8000000\t1000000\n" +
		"1\tmono\t500\tmono:apache2\t1000000\t500000\t500000\n" +
		"3\tsplit\t100\tedge\t99000000\t0\t0\n"
	os.WriteFile(filepath.Join(data, "wordpress.tsv"), []byte(runs), 0o644)
	os.WriteFile(filepath.Join(data, "wordpress-cgroups.tsv"), []byte(cg), 0o644)
	os.WriteFile(filepath.Join(data, "wordpress-meta.tsv"), []byte("key\tvalue\nload_start\t3.1 2 1\n"), 0o644)
	if err := run(data, out); err != nil {
		t.Fatal(err)
	}
	r, err := load(data)
	if err != nil {
		t.Fatal(err)
	}
	w := r.WordPress
	if w.Ratio == nil || w.Ratio.N != 2 || w.Ratio.Median != (0.8+0.95)/2 || w.Met == nil || *w.Met || w.BadRuns != 1 {
		t.Errorf("ratio %+v met %v bad runs %d; want the median of 0.8 and 0.95 over 2 rounds, the goal missed, 1 bad run", w.Ratio, w.Met, w.BadRuns)
	}
	parts := map[string]AttrRow{}
	for _, row := range w.CPU {
		parts[row.Part] = row
	}
	if e := parts["edge"]; e.SplitMs == nil || e.SplitMs.Median != 1 || e.SplitMs.N != 1 || e.MonoMs != nil {
		t.Errorf("edge %+v; want 1 ms a request from round 1 only, none on mono", e)
	}
	if a := parts["app: apache2 + php-fpm"]; a.SplitMs == nil || a.SplitMs.Median != 20 || a.MonoMs == nil || a.MonoMs.Median != 20 {
		t.Errorf("app %+v; want 20 ms a request on both", a)
	}
	if w.CPURatio == nil || *w.CPURatio != 20.0/21 {
		t.Errorf("cpu ratio %v, want 20/21", w.CPURatio)
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	for _, want := range []string{"## WordPress's front page", "**0.88 (0.80–0.95)** | **missed**", "load average 3.1 2 1 at the first WordPress run"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
}
