package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
)

type statusOptions struct {
	stackFlags
	Output string
}

func statusCommand() *command {
	return &command{
		name:    "status",
		args:    stackSynopsis + " [--output text|json]",
		summary: "show each node's state, address, health and restarts",
		help: `
Status asks runc and every node's agent how the stack is: each node's
container state, addresses, health, daemons and restarts, and whether the
stack's supervisor runs. It exits 1 when a node is not healthy or the
supervisor is not running.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := statusOptions{Output: "text"}
			o.stackFlags.bind(fs)
			fs.Var(choice{&o.Output, []string{"text", "json"}}, "output", "print as `text|json`")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("status takes no arguments, got %q", args[0])
				}
				name, err := o.name()
				if err != nil {
					return err
				}
				st, err := newDriver(s).Status(ctx, name)
				if err != nil {
					return err
				}
				if o.Output == "json" {
					enc := json.NewEncoder(s.out)
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				printStatus(s, st)
				if !st.Healthy() {
					return errUnhealthy
				}
				return nil
			}
		},
	}
}

var errUnhealthy = fmt.Errorf("some nodes are not healthy; 'bulkhead logs NODE' shows why")

func printStatus(s stdio, st *driver.Status) {
	switch {
	case st.Supervisor && st.Keeper:
		fmt.Fprintf(s.out, "stack %s: supervisor running\n", st.Stack)
	case st.Supervisor:
		// A stack brought up by a bulkhead without keepers, or one
		// whose keeper was stopped by hand.
		fmt.Fprintf(s.out, "stack %s: supervisor running, but NOT ITS KEEPER: if the supervisor dies, nothing starts it again; run 'bulkhead up'\n", st.Stack)
	default:
		// Without it the site mounts and the restarts of dead nodes are
		// gone; up starts it again.
		fmt.Fprintf(s.out, "stack %s: supervisor NOT RUNNING: the site mounts are down and dead nodes stay dead; run 'bulkhead up' (or 'bulkhead boot' after a reboot)\n", st.Stack)
	}
	if !st.CertExpires.IsZero() {
		days := int(math.Round(time.Until(st.CertExpires).Hours() / 24))
		fmt.Fprintf(s.out, "edge certificate: valid until %s (%d days; up renews the stack's own 30 days before)\n", st.CertExpires.Format(time.DateOnly), days)
	}
	w := table(s.out)
	fmt.Fprintln(w, "NODE\tSTATE\tADDRESS\tHEALTH\tRESTARTS\tSERVICES")
	for _, n := range st.Nodes {
		health := "healthy"
		if !n.Healthy {
			health = "UNHEALTHY"
		}
		var svcs []string
		for _, sv := range n.Services {
			svcs = append(svcs, sv.Name+":"+string(sv.State))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", n.Name, n.State, strings.Join(n.Addresses, ","), health, n.Restarts, strings.Join(svcs, " "))
	}
	w.Flush()
}
