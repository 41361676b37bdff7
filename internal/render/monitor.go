package render

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
)

// ScrapeInterval is how often the monitor reads every node's metrics. The
// dashboard's graphs and top show rates over a few of these.
const ScrapeInterval = "5s"

// MonitorJob is the scrape job of the nodes' agents; their series carry
// node, tier and role labels that the monitor sets, not the node.
const MonitorJob = "node"

// ExporterJob is the scrape job of the role exporters (the edge's nginx
// exporter), labelled like MonitorJob's.
const ExporterJob = "exporter"

// prometheusConf is prometheus.yml: one job, one target per node with
// the labels that name it.
type prometheusConf struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string       `yaml:"rule_files"`
	ScrapeConfigs []scrapeConfig `yaml:"scrape_configs"`
}

type scrapeConfig struct {
	JobName       string         `yaml:"job_name"`
	ScrapeTimeout string         `yaml:"scrape_timeout,omitempty"`
	StaticConfigs []staticConfig `yaml:"static_configs"`
}

type staticConfig struct {
	Targets []string          `yaml:"targets"`
	Labels  map[string]string `yaml:"labels"`
}

// monitorPrometheus runs Prometheus on the monitor's private address,
// scraping every node's agent over the plan's flows, with the alert rules
// in rules.yml. Its time series live on the node's own disk, bounded to
// three quarters of it.
func monitorPrometheus(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	d := p.Dashboard
	if d == nil || d.Node != n.Name {
		return nil, nil, fmt.Errorf("the plan gives the host no way to %s's API", n.Name)
	}
	var c prometheusConf
	c.Global.ScrapeInterval = ScrapeInterval
	c.Global.EvaluationInterval = ScrapeInterval
	c.RuleFiles = []string{in.Layout.conf("rules.yml")}
	job := scrapeConfig{JobName: MonitorJob, ScrapeTimeout: "4s"}
	exporters := scrapeConfig{JobName: ExporterJob, ScrapeTimeout: "4s"}
	for _, peer := range p.Peers(n) {
		m := peer.Node
		into, target := &job, m.Metrics.String()
		switch {
		case m.Metrics.IsValid() && peer.Flow.Port.Number == int(m.Metrics.Port()):
		case m.Exporter != nil && peer.Flow.Port.Number == int(m.Exporter.Addr.Port()):
			into, target = &exporters, m.Exporter.Addr.String()
		default:
			continue
		}
		labels := map[string]string{"node": m.Name, "tier": m.Tier, "role": m.Role}
		if in.Cluster != nil {
			// A tier's pods share its Service: each scrape reaches one
			// of them.
			target = hostPort(in.peer(m, peer.Flow.Network), peer.Flow.Port.Number)
			labels["node"] = m.Tier
			if slices.ContainsFunc(into.StaticConfigs, func(s staticConfig) bool { return s.Targets[0] == target }) {
				continue
			}
		}
		into.StaticConfigs = append(into.StaticConfigs, staticConfig{Targets: []string{target}, Labels: labels})
	}
	c.ScrapeConfigs = []scrapeConfig{job}
	if len(exporters.StaticConfigs) > 0 {
		c.ScrapeConfigs = append(c.ScrapeConfigs, exporters)
	}
	conf, err := yaml.Marshal(&c)
	if err != nil {
		return nil, nil, err
	}
	tsdb := path.Join(in.Layout.Data, "prometheus")
	listen := d.Target
	if in.Cluster != nil {
		listen = netip.AddrPortFrom(in.bind(n, ""), d.Target.Port())
	}
	svc := service.Service{
		Name: "prometheus",
		Argv: []string{"setpriv", "--reuid=prometheus", "--regid=prometheus", "--init-groups", "--",
			"prometheus",
			"--config.file=" + in.Layout.conf("prometheus.yml"),
			"--storage.tsdb.path=" + tsdb,
			"--storage.tsdb.retention.size=" + strconv.FormatInt(max(n.Disk*3/4>>20, 32), 10) + "MB",
			"--web.listen-address=" + listen.String(),
			"--log.level=warn",
		},
		Setup:   []string{"install", "-d", "-o", "prometheus", "-g", "prometheus", "-m", "0750", tsdb},
		Creates: tsdb,
		// Prometheus re-reads its config and rules on SIGHUP.
		Reload: &service.Reload{Signal: "HUP"},
	}
	return []File{
		{Path: "prometheus.yml", Mode: 0o644, Data: conf, OnChange: Reload},
		{Path: "rules.yml", Mode: 0o644, Data: []byte(monitorRules), OnChange: Reload},
	}, []service.Service{svc}, nil
}

// monitorRules are the alerts the monitor ships with, over the agents'
// metrics (job "node", MonitorJob). Each names the node in its labels, for
// status to show. The edge's 5xx ratio and p99 latency come from its
// agent, which reads them from the access log: nginx's stub_status, all
// the nginx exporter has, counts no statuses and times nothing. Both
// alerts need a minute of at least one request every two seconds, so
// that one slow or failed request on an idle site does not page anyone.
// testdata/rules_test.yml tests them with promtool test rules.
const monitorRules = `groups:
  - name: bulkhead
    rules:
      - alert: NodeDown
        expr: up{job="node"} == 0
        for: 30s
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.node }}'s agent does not answer the monitor"
      - alert: ServiceDown
        expr: bulkhead_service_up{job="node"} == 0
        for: 30s
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.service }} on {{ $labels.node }} is not running"
      - alert: CrashLoop
        expr: increase(bulkhead_service_restarts_total{job="node"}[5m]) >= 3
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.service }} on {{ $labels.node }} restarted {{ $value | printf \"%.0f\" }} times in 5 minutes"
      - alert: DiskFull
        expr: bulkhead_node_disk_used_bytes{job="node"} / bulkhead_node_disk_size_bytes{job="node"} > 0.8
        for: 1m
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.node }}'s disk is {{ $value | humanizePercentage }} full"
      - alert: HighErrorRate
        expr: |
          sum by (node) (rate(bulkhead_http_responses_total{job="node",code="5xx"}[1m]))
            / sum by (node) (rate(bulkhead_http_responses_total{job="node"}[1m])) > 0.05
          and sum by (node) (rate(bulkhead_http_responses_total{job="node"}[1m])) > 0.5
        for: 1m
        labels: {severity: critical}
        annotations:
          summary: "{{ $value | humanizePercentage }} of {{ $labels.node }}'s responses are 5xx"
      - alert: SlowResponses
        expr: |
          histogram_quantile(0.99, sum by (node, le) (rate(bulkhead_http_request_duration_seconds_bucket{job="node"}[1m]))) > 1
          and sum by (node) (rate(bulkhead_http_request_duration_seconds_count{job="node"}[1m])) > 0.5
        for: 1m
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.node }}'s p99 response time is {{ $value | humanizeDuration }}"
`
