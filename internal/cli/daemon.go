package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/bulkhead/bulkhead/internal/agent"
	"github.com/bulkhead/bulkhead/internal/driver/local"
)

type agentOptions struct {
	Node, Services, Socket, Logs string
}

func agentCommand() *command {
	return &command{
		name:    "agent",
		args:    "--services FILE --socket PATH [--node NAME] [--logs DIR]",
		summary: "run a node's daemons (PID 1 inside each node; not for direct use)",
		help: `
Agent is the first process of every node's container. It runs the node's
daemons in the foreground, restarts them with backoff when they die, keeps
their recent log lines, and answers the host on a unix socket.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o agentOptions
			fs.StringVar(&o.Node, "node", "", "the node's `NAME`")
			fs.StringVar(&o.Services, "services", "", "the node's services.json `FILE`")
			fs.StringVar(&o.Socket, "socket", "", "unix socket `PATH` to answer on")
			fs.StringVar(&o.Logs, "logs", "", "`DIR` for the daemons' log files")
			return func(ctx context.Context, s stdio, args []string) error {
				if o.Services == "" || o.Socket == "" {
					return usageErrorf("agent needs --services and --socket")
				}
				svcs, err := agent.LoadServices(o.Services)
				if err != nil {
					return err
				}
				return agent.Run(ctx, agent.Config{
					Node: o.Node, Services: svcs, Socket: o.Socket, LogDir: o.Logs,
					Logger: slog.New(slog.NewTextHandler(s.err, nil)),
				})
			}
		},
	}
}

type superviseOptions struct {
	Stack, Root string
}

func superviseCommand() *command {
	return &command{
		name:    "supervise",
		args:    "--stack NAME",
		summary: "keep a running stack converged (started by up; not for direct use)",
		help: `
Supervise runs in the background while a stack is up. It serves the published
ports, keeps the site mounts of static and app nodes alive, and restarts a
node whose container died. Up starts it and down stops it.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := superviseOptions{Root: local.DefaultRoot}
			fs.StringVar(&o.Stack, "stack", "", "the stack's `NAME`")
			fs.StringVar(&o.Root, "root", o.Root, "the driver's state `DIR`")
			return func(ctx context.Context, s stdio, args []string) error {
				if o.Stack == "" {
					return usageErrorf("supervise needs --stack")
				}
				d := &local.Driver{Root: o.Root, Log: slog.New(slog.NewTextHandler(s.err, nil))}
				return d.Supervise(ctx, o.Stack)
			}
		},
	}
}
