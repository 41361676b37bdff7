package render_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// TestMonitorPrometheus: the monitor scrapes every other node's agent on
// the plan's metrics address, naming each by labels it sets itself, and
// Prometheus's own checker accepts the config and the alert rules.
func TestMonitorPrometheus(t *testing.T) {
	p, n, l := renderRole(t, "alt", spec.RoleMonitor)
	promtool := requireTool(t, "promtool")

	var conf struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(fileOf(t, n, "prometheus.yml").Data, &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.ScrapeConfigs) != 1 || conf.ScrapeConfigs[0].JobName != render.MonitorJob {
		t.Fatalf("scrape configs = %+v; want the one job %q", conf.ScrapeConfigs, render.MonitorJob)
	}
	var got, want []string
	for _, sc := range conf.ScrapeConfigs[0].StaticConfigs {
		got = append(got, strings.Join(sc.Targets, ",")+" "+sc.Labels["node"]+" "+sc.Labels["tier"]+" "+sc.Labels["role"])
	}
	for _, m := range p.Nodes {
		if m.Role != spec.RoleMonitor {
			want = append(want, m.Metrics.String()+" "+m.Name+" "+m.Tier+" "+m.Role)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("targets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// In this stack the edge is on the DMZ, not the private network.
	if e := p.Role(spec.RoleEdge)[0]; e.Metrics.Addr() != e.Addr("dmz") {
		t.Errorf("edge metrics on %v; want its DMZ address %v", e.Metrics, e.Addr("dmz"))
	}

	// promtool reads the rule files the config names; they are where the
	// test layout put them.
	if want := filepath.Join(l.Conf, "rules.yml"); !slices.Equal(conf.RuleFiles, []string{want}) {
		t.Errorf("rule files = %q; want %q", conf.RuleFiles, want)
	}
	for _, args := range [][]string{
		{"check", "config", filepath.Join(l.Conf, "prometheus.yml")},
		{"check", "rules", filepath.Join(l.Conf, "rules.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules, _ := os.ReadFile(filepath.Join(l.Conf, "rules.yml"))
	for _, alert := range []string{"NodeDown", "ServiceDown", "CrashLoop", "DiskFull"} {
		if !strings.Contains(string(rules), "alert: "+alert+"\n") {
			t.Errorf("rules.yml has no %s alert", alert)
		}
	}

	// The daemon listens only where the host reaches it.
	argv := n.Services[0].Argv
	if d := p.Dashboard; !slices.Contains(argv, "--web.listen-address="+d.Target.String()) || d.Target.Addr() != p.Role(spec.RoleMonitor)[0].Addr("private") {
		t.Errorf("prometheus %q; want it on the dashboard's target %v, the monitor's private address", argv, d.Target)
	}
	if got := n.Services[0].Ready; !slices.Equal(got, []string{p.Dashboard.Target.String()}) {
		t.Errorf("ready = %q; want the dashboard's target alone", got)
	}
}
