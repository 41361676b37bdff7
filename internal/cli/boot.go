package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/bulkhead/bulkhead/internal/driver/local"
)

func bootCommand() *command {
	return &command{
		name:    "boot",
		summary: "bring every stack on this host back after a reboot",
		help: `
Boot brings back every stack on this host as its last up left it: each
stack's saved plan is applied again, with the site directory it was applied
with. It is what the boot unit runs after a reboot; run it by hand on a
host without systemd. A stack taken down with 'bulkhead down' stays down.
Boot installs no package: a boot does not reach the network.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			root := driverRoot
			fs.StringVar(&root, "root", root, "the driver's state `DIR`")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("boot takes no arguments, got %q", args[0])
				}
				d := &local.Driver{
					Root:     root,
					Log:      slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: slog.LevelWarn})),
					Progress: s.err,
				}
				up, err := d.Boot(ctx)
				if len(up) > 0 {
					fmt.Fprintf(s.out, "back up: %s\n", strings.Join(up, ", "))
				} else if err == nil {
					fmt.Fprintln(s.out, "no stack to bring back")
				}
				return err
			}
		},
	}
}
