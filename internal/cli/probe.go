package cli

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"time"

	"github.com/bulkhead/bulkhead/internal/kube"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/verify"
)

type probeOptions struct {
	Source, Plan, Pods string
	Timeout            time.Duration
}

func probeCommand() *command {
	return &command{
		name:    "probe",
		args:    "--source NODE --plan FILE --pods FILE [--timeout D]",
		summary: "probe every node's pod from this pod (a cluster's probe Job; not for direct use)",
		help: `
Probe runs in the probe Jobs that 'bulkhead export kubernetes' writes. From
its own pod, which carries the labels of NODE's tier, it tries every port of
the plan's matrix on every node's pod, and prints what it saw as JSON for
'bulkhead verify --import'. The plan is the export's plan.json; the pods are
'kubectl get pods -o json' of the stack's namespace.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o probeOptions
			fs.StringVar(&o.Source, "source", "", "the `NODE` whose row this pod probes")
			fs.StringVar(&o.Plan, "plan", "", "the export's plan.json `FILE`")
			fs.StringVar(&o.Pods, "pods", "", "the stack's pods as 'kubectl get pods -o json' printed them, in `FILE`")
			fs.DurationVar(&o.Timeout, "timeout", verify.DefaultTimeout, "how long an unanswered probe waits before it counts as filtered")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 || o.Source == "" || o.Plan == "" || o.Pods == "" {
					return usageErrorf("probe needs --source, --plan and --pods, and no arguments")
				}
				return runProbe(ctx, s, o)
			}
		},
	}
}

func runProbe(ctx context.Context, s stdio, o probeOptions) error {
	data, err := os.ReadFile(o.Plan)
	if err != nil {
		return err
	}
	p, err := plan.Decode(data)
	if err != nil {
		return err
	}
	if data, err = os.ReadFile(o.Pods); err != nil {
		return err
	}
	kp, err := kube.ParsePods(p.Stack, data)
	if err != nil {
		return err
	}
	pods := make([]verify.Pod, len(kp))
	for i, pod := range kp {
		pods[i] = verify.Pod{Name: pod.Name, Tier: pod.Tier, Addr: pod.Addr}
	}
	res, err := verify.ProbeCluster(ctx, p, o.Source, pods, o.Timeout)
	if err != nil {
		return err
	}
	res.Pod, _ = os.Hostname()
	enc := json.NewEncoder(s.out)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}
