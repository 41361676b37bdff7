package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/bulkhead/bulkhead/internal/dashboard"
)

type dashboardOptions struct {
	stackFlags
	Listen, TokenFile, Backups string
}

func dashboardCommand() *command {
	return &command{
		name:    "dashboard",
		args:    stackSynopsis + " [--listen ADDR] [--token-file FILE] [--backups DIR]",
		summary: "serve a web page of the stack: topology, health, verify, graphs, releases",
		help: `
Dashboard serves one page of the running stack on --listen (127.0.0.1:8090
by default): its nodes by network with the plan's flows between them, each
coloured by its health now; the last verify's result with a button that
runs verify again; per-node graphs of CPU and memory over the last 15
minutes from the monitor tier (without one, no graphs); the releases; and,
with --backups DIR, the stack's archives in DIR. The page and its script
are in the binary; it loads nothing from elsewhere.

On any address but the loopback's, every request must carry a token: the
one in --token-file, or one made up and printed once at start. Open the
printed address (with ?token=) once; a cookie carries it after that.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := dashboardOptions{Listen: "127.0.0.1:8090"}
			o.stackFlags.bind(fs)
			fs.StringVar(&o.Listen, "listen", o.Listen, "serve on `ADDR` (HOST:PORT); off the loopback a token is required")
			fs.StringVar(&o.TokenFile, "token-file", "", "require the token in `FILE` on every request")
			fs.StringVar(&o.Backups, "backups", "", "list the stack's backup archives in `DIR`")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("dashboard takes no arguments, got %q", args[0])
				}
				return runDashboard(ctx, s, o)
			}
		},
	}
}

func runDashboard(ctx context.Context, s stdio, o dashboardOptions) error {
	needs, err := dashboard.NeedsToken(o.Listen)
	if err != nil {
		return usageErrorf("%v", err)
	}
	token, made := "", false
	if o.TokenFile != "" {
		data, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(data))
		if len(token) < 16 {
			return usageErrorf("--token-file %s holds %d characters; a token needs 16 or more", o.TokenFile, len(token))
		}
	} else if needs {
		token, made = dashboard.NewToken(), true
	}
	if o.Backups != "" {
		if fi, err := os.Stat(o.Backups); err != nil {
			return err
		} else if !fi.IsDir() {
			return usageErrorf("--backups %s is not a directory", o.Backups)
		}
	}
	name, err := o.name()
	if err != nil {
		return err
	}
	d := newDriver(s)
	p, err := d.SavedPlan(name)
	if err != nil {
		return err
	}
	srv := &dashboard.Server{
		Stack: name, Plan: p, Status: d, Ranges: d, Verifier: d, Releases: d,
		BackupDir: o.Backups, Token: token,
	}
	return srv.ListenAndServe(ctx, o.Listen, func(a net.Addr) {
		where := "http://" + a.String() + "/"
		if made {
			where += "?token=" + token
		}
		fmt.Fprintf(s.out, "dashboard of stack %s on %s\n", name, where)
	})
}
