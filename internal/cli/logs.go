package cli

import (
	"context"
	"flag"
)

type logsOptions struct {
	File, Stack string
	Follow      bool
	Lines       int
	Service     string
}

func logsCommand() *command {
	return &command{
		name:    "logs",
		args:    "NODE [--follow|-f] [-n LINES] [--service NAME] [--file FILE | --stack NAME]",
		summary: "print a node's daemon logs",
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := logsOptions{Lines: 50}
			fs.BoolVar(&o.Follow, "f", false, "keep printing new lines")
			fs.BoolVar(&o.Follow, "follow", false, "keep printing new lines")
			fs.IntVar(&o.Lines, "n", o.Lines, "print the last `LINES` lines of each log")
			fs.StringVar(&o.Service, "service", "", "only this `NAME`d daemon")
			fs.StringVar(&o.File, "file", "", "take the stack name from `FILE` instead of ./"+defaultFile)
			fs.StringVar(&o.Stack, "stack", "", "the stack's `NAME`, instead of reading a file")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) != 1 {
					return usageErrorf("logs takes one node name")
				}
				name, err := stackName(o.File, o.Stack)
				if err != nil {
					return err
				}
				return newDriver(s).Logs(ctx, name, args[0], o.Service, o.Lines, o.Follow, s.out)
			}
		},
	}
}
