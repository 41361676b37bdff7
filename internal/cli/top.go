package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
)

type topOptions struct {
	stackFlags
	Output   string
	Interval time.Duration
	Once     bool
}

func topCommand() *command {
	return &command{
		name:    "top",
		args:    stackSynopsis + " [--once] [--interval D] [--output text|json]",
		summary: "show each node's CPU, memory, pids, restarts and requests, live, from the monitor",
		help: `
Top asks the stack's monitor (the monitor tier's Prometheus) for each node's
use of CPU (in cores, over the last 30 seconds), memory against its limit,
tasks and its daemons' restarts, and, where its agent reads an access log
(the edge's), its responses and 5xx responses a second, and prints a
table. On a terminal it
redraws the table every --interval until interrupted; otherwise, or with
--once, it prints it once. The stack needs a monitor tier.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := topOptions{Output: "text", Interval: 2 * time.Second}
			o.stackFlags.bind(fs)
			fs.Var(choice{&o.Output, []string{"text", "json"}}, "output", "print as `text|json` (json implies --once)")
			fs.DurationVar(&o.Interval, "interval", o.Interval, "how often a terminal's table is redrawn")
			fs.BoolVar(&o.Once, "once", false, "print the table once and exit")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("top takes no arguments, got %q", args[0])
				}
				if o.Interval < 500*time.Millisecond {
					return usageErrorf("--interval %v is too short: use 500ms or more", o.Interval)
				}
				name, err := o.name()
				if err != nil {
					return err
				}
				d := newDriver(s)
				live := !o.Once && o.Output == "text" && isTerminal(s.out)
				for {
					qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					us, err := d.Usage(qctx, name)
					cancel()
					if err != nil {
						return err
					}
					if o.Output == "json" {
						enc := json.NewEncoder(s.out)
						enc.SetIndent("", "  ")
						return enc.Encode(us)
					}
					if live {
						fmt.Fprint(s.out, "\x1b[H\x1b[2J") // home, clear
						fmt.Fprintf(s.out, "stack %s at %s (every %v; ^C to stop)\n", name, time.Now().Format(time.TimeOnly), o.Interval)
					}
					printNodeUsage(s, us)
					if !live {
						return nil
					}
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(o.Interval):
					}
				}
			}
		},
	}
}

func printNodeUsage(s stdio, us []driver.NodeUsage) {
	w := table(s.out)
	fmt.Fprintln(w, "NODE\tUP\tCPU\tMEMORY\tLIMIT\tMEM%\tPIDS\tRESTARTS\tREQ/S\tERR/S")
	for _, u := range us {
		up := "up"
		if !u.Up {
			up = "DOWN"
		}
		pct := "-"
		if u.MemoryLimit > 0 {
			pct = fmt.Sprintf("%.1f%%", 100*float64(u.Memory)/float64(u.MemoryLimit))
		}
		req, errs := "-", "-"
		if u.Requests != nil {
			req, errs = fmt.Sprintf("%.1f", *u.Requests), fmt.Sprintf("%.1f", *u.Errors)
		}
		fmt.Fprintf(w, "%s\t%s\t%.2f\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", u.Node, up, u.CPU, mib(u.Memory), mib(u.MemoryLimit), pct, u.Pids, u.Restarts, req, errs)
	}
	w.Flush()
}

// mib prints a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1fM", float64(n)/(1<<20)) }
