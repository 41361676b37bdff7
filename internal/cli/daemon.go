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
	Stack, Root       string
	Paired, Restarted bool
}

func superviseCommand() *command {
	return &command{
		name:    "supervise",
		args:    "--stack NAME [--paired [--restarted]]",
		summary: "keep a running stack converged (started by up; not for direct use)",
		help: `
Supervise runs in the background while a stack is up. It keeps the site
mounts of static and app nodes alive, and restarts a node whose container
died; it listens on no port (the kernel publishes the stack's). Up starts it, with its keeper, and down stops it.
--paired says it was started with its keeper, linked to it by the pipes on
descriptors 3 and 4: each starts the other again when it dies.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := superviseOptions{Root: local.DefaultRoot}
			fs.StringVar(&o.Stack, "stack", "", "the stack's `NAME`")
			fs.StringVar(&o.Root, "root", o.Root, "the driver's state `DIR`")
			fs.BoolVar(&o.Paired, "paired", false, "linked to a keeper on descriptors 3 and 4")
			fs.BoolVar(&o.Restarted, "restarted", false, "replaces a supervisor that died: keep its restart counts")
			return func(ctx context.Context, s stdio, args []string) error {
				if o.Stack == "" {
					return usageErrorf("supervise needs --stack")
				}
				var so local.SuperviseOptions
				if o.Paired {
					l, err := local.InheritPair()
					if err != nil {
						return err
					}
					so = local.SuperviseOptions{Pair: l, Restarted: o.Restarted}
				}
				return daemonDriver(s, o.Root).Supervise(ctx, o.Stack, so)
			}
		},
	}
}

type keepOptions struct {
	Stack, Root string
}

func keepCommand() *command {
	return &command{
		name:    "keep",
		args:    "--stack NAME",
		summary: "keep a stack's supervisor running (started by up; not for direct use)",
		help: `
Keep runs beside a stack's supervisor, linked to it by the pipes on
descriptors 3 and 4, and starts a new supervisor whenever that one dies; the
supervisor does the same for it. It ends when the supervisor stops on
purpose, or when it is stopped (SIGTERM): down stops it first.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := keepOptions{Root: local.DefaultRoot}
			fs.StringVar(&o.Stack, "stack", "", "the stack's `NAME`")
			fs.StringVar(&o.Root, "root", o.Root, "the driver's state `DIR`")
			return func(ctx context.Context, s stdio, args []string) error {
				if o.Stack == "" {
					return usageErrorf("keep needs --stack")
				}
				l, err := local.InheritPair()
				if err != nil {
					return err
				}
				return daemonDriver(s, o.Root).Keep(ctx, o.Stack, l)
			}
		},
	}
}

// daemonDriver is the driver of a background process: it logs to stderr,
// which is the stack's supervisor.log.
func daemonDriver(s stdio, root string) *local.Driver {
	return &local.Driver{Root: root, Log: slog.New(slog.NewTextHandler(s.err, nil))}
}
