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
	// Two jobs: the agents, and the role exporters, each target with
	// its node's labels.
	if len(conf.ScrapeConfigs) != 2 || conf.ScrapeConfigs[0].JobName != render.MonitorJob || conf.ScrapeConfigs[1].JobName != render.ExporterJob {
		t.Fatalf("scrape configs = %+v; want the jobs %q and %q", conf.ScrapeConfigs, render.MonitorJob, render.ExporterJob)
	}
	for i, sc := range conf.ScrapeConfigs {
		var got, want []string
		for _, sc := range sc.StaticConfigs {
			got = append(got, strings.Join(sc.Targets, ",")+" "+sc.Labels["node"]+" "+sc.Labels["tier"]+" "+sc.Labels["role"])
		}
		for _, m := range p.Nodes {
			switch {
			case m.Role == spec.RoleMonitor:
			case i == 0:
				want = append(want, m.Metrics.String()+" "+m.Name+" "+m.Tier+" "+m.Role)
			case m.Exporter != nil:
				want = append(want, m.Exporter.Addr.String()+" "+m.Name+" "+m.Tier+" "+m.Role)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("job %s targets:\n%s\nwant:\n%s", sc.JobName, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
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

// TestMonitorRules runs promtool's unit tests of the alerts on the edge's
// requests (testdata/promtool/rules_test.yml) against the rules.yml the
// monitor gets.
func TestMonitorRules(t *testing.T) {
	_, _, l := renderRole(t, "alt", spec.RoleMonitor)
	promtool := requireTool(t, "promtool")
	tests, err := os.ReadFile(filepath.Join("testdata", "promtool", "rules_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(l.Conf, "rules_test.yml")
	if err := os.WriteFile(file, tests, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
	rules, _ := os.ReadFile(filepath.Join(l.Conf, "rules.yml"))
	for _, alert := range []string{"HighErrorRate", "SlowResponses"} {
		if !strings.Contains(string(rules), "alert: "+alert+"\n") {
			t.Errorf("rules.yml has no %s alert", alert)
		}
	}
}

// TestEdgeNginxExporter: with a monitor, the edge serves stub_status on its
// loopback alone, at the plan's status address, and runs Debian's nginx
// exporter on the plan's exporter address, reading that page; nginx's own
// checker accepts the config. Without a monitor there is neither.
func TestEdgeNginxExporter(t *testing.T) {
	nginx := requireTool(t, "nginx")
	p := planFrom(t, []byte("name: mon\ntiers:\n  edge: {}\n  app: {}\n  monitor: {}\n"))
	edge := p.Role(spec.RoleEdge)[0]
	e := edge.Exporter
	if e == nil || e.Package != "prometheus-nginx-exporter" || !e.Status.Addr().IsLoopback() || e.Addr.Addr() != edge.Metrics.Addr() {
		t.Fatalf("edge exporter = %+v; want the nginx exporter beside the agent (%v), reading a loopback status page", e, edge.Metrics)
	}
	n, l := writeNode(t, p, edge.Name, tlsSecrets(t, p))
	confPath := filepath.Join(l.Conf, "nginx.conf")
	if msg := runCheckBinding(t, nginx, "-t", "-c", confPath, "-e", "stderr"); strings.Contains(msg, "[warn]") {
		t.Errorf("nginx -t warns:\n%s", msg)
	}
	conf := string(fileOf(t, n, "nginx.conf").Data)
	if !strings.Contains(conf, "listen "+e.Status.String()+";") || !strings.Contains(conf, "stub_status;") {
		t.Errorf("nginx.conf serves no stub_status on %v:\n%s", e.Status, conf)
	}
	if len(n.Services) != 2 || n.Services[0].Name != "nginx-exporter" {
		t.Fatalf("services = %+v; want the exporter, then nginx", n.Services)
	}
	argv := n.Services[0].Argv
	for _, a := range []string{"prometheus-nginx-exporter", "-nginx.scrape-uri=http://" + e.Status.String() + "/stub_status", "-web.listen-address=" + e.Addr.String()} {
		if !slices.Contains(argv, a) {
			t.Errorf("exporter argv %q lacks %q", argv, a)
		}
	}
	if got := n.Services[1].AccessLog; got != filepath.Join(l.Log, "access.log") {
		t.Errorf("nginx's access log for the agent = %q; want %q", got, filepath.Join(l.Log, "access.log"))
	}
	if !slices.Contains(p.Packages(edge), "prometheus-nginx-exporter") {
		t.Errorf("the edge's packages %q lack the exporter", p.Packages(edge))
	}

	// The monitor scrapes it in a job of its own, with the node's labels.
	m := p.Role(spec.RoleMonitor)[0]
	mn, _ := writeNode(t, p, m.Name, testSecrets(p))
	var conf2 struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(fileOf(t, mn, "prometheus.yml").Data, &conf2); err != nil {
		t.Fatal(err)
	}
	sc := conf2.ScrapeConfigs
	if len(sc) != 2 || sc[1].JobName != render.ExporterJob || len(sc[1].StaticConfigs) != 2 ||
		!slices.Equal(sc[1].StaticConfigs[0].Targets, []string{e.Addr.String()}) || sc[1].StaticConfigs[0].Labels["node"] != edge.Name {
		t.Errorf("scrape configs = %+v; want job %q with the edge's exporter %v first, then the app's", sc, render.ExporterJob, e.Addr)
	}

	// Without a monitor, no exporter and no status page.
	p = planFrom(t, []byte("name: mon\ntiers:\n  edge: {}\n  app: {}\n"))
	edge = p.Role(spec.RoleEdge)[0]
	if edge.Exporter != nil {
		t.Errorf("edge exporter without a monitor: %+v", edge.Exporter)
	}
	n, _ = writeNode(t, p, edge.Name, tlsSecrets(t, p))
	if strings.Contains(string(fileOf(t, n, "nginx.conf").Data), "stub_status") || len(n.Services) != 1 {
		t.Errorf("without a monitor the edge serves stub_status or runs more than nginx: %+v", n.Services)
	}
}
