package cli

import (
	"context"
	"flag"
	"fmt"
)

type downOptions struct {
	stackFlags
	Purge bool
}

func downCommand() *command {
	return &command{
		name:    "down",
		args:    stackSynopsis + " [--purge]",
		summary: "remove the stack from this host, keeping its data unless --purge",
		help: `
Down removes exactly what up made for the stack: its containers, mounts,
network namespaces, links, bridges and nftables table, and its supervisor.
It keeps the stack's data (database, uploads) and secrets, so that the next up
finds them. --purge deletes those too.

When the stack's journal of what up made cannot be read, down finds the
stack's objects by their names instead (network namespaces and containers
bh-NAME-*, links NAME-* that carry the stack's alias, its nftables tables,
mounts under its directory, its supervisor and keeper), removes those that
are the stack's beyond doubt, says what it left alone, and keeps the damaged
journal as state.json.damaged.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o downOptions
			o.stackFlags.bind(fs)
			fs.BoolVar(&o.Purge, "purge", false, "also delete the stack's data and secrets")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("down takes no arguments, got %q", args[0])
				}
				name, err := o.name()
				if err != nil {
					return err
				}
				if err := newDriver(s).Down(ctx, name, o.Purge); err != nil {
					return err
				}
				what := "data kept; 'bulkhead down --purge' deletes it"
				if o.Purge {
					what = "data deleted"
				}
				fmt.Fprintf(s.out, "stack %s is down (%s)\n", name, what)
				return nil
			}
		},
	}
}
