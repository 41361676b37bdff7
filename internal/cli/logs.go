package cli

import (
	"context"
	"flag"
)

type logsOptions struct {
	stackFlags
	Follow  bool
	Lines   int
	Service string
}

func logsCommand() *command {
	return &command{
		name:    "logs",
		args:    "NODE " + stackSynopsis + " [--follow] [-n LINES] [--service NAME]",
		summary: "print a node's daemon logs",
		help: `
Logs prints the last lines of each of NODE's daemon logs, or of one with
--service. With --follow it keeps printing the lines they add until
interrupted. Unlike docker's, -f is not follow: as on every verb that works
on a stack, -f names the stack file.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := logsOptions{Lines: 50}
			o.stackFlags.bind(fs)
			fs.BoolVar(&o.Follow, "follow", false, "keep printing new lines")
			fs.IntVar(&o.Lines, "n", o.Lines, "print the last `LINES` lines of each log")
			fs.StringVar(&o.Service, "service", "", "only this `NAME`d daemon")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) != 1 {
					return usageErrorf("logs takes one node name")
				}
				name, err := o.name()
				if err != nil {
					return err
				}
				return newDriver(s).Logs(ctx, name, args[0], o.Service, o.Lines, o.Follow, s.out)
			}
		},
	}
}
