package cli

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
)

type execOptions struct {
	stackFlags
}

func execCommand() *command {
	return &command{
		name:    "exec",
		args:    "NODE " + stackSynopsis + " [--] COMMAND [ARG...]",
		summary: "run a command inside a node, with the node's isolation",
		command: 1,
		help: `
Exec runs COMMAND inside NODE's container: in its namespaces, behind its
firewall, with its capabilities and its view of the filesystem, as its agent
sees them. Its exit status is the command's.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o execOptions
			o.stackFlags.bind(fs)
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) < 2 {
					return usageErrorf("exec needs a node and a command: exec NODE -- COMMAND")
				}
				name, err := o.name()
				if err != nil {
					return err
				}
				err = newDriver(s).Exec(ctx, name, args[0], args[1:], os.Stdin, s.out, s.err)
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exitCode(ee.ExitCode())
				}
				return err
			}
		},
	}
}

// exitCode passes a command's exit status through bulkhead's.
type exitCode int

func (e exitCode) Error() string { return "" }
