package cli

import (
	"context"
	"flag"
	"os"
	"strings"

	"github.com/bulkhead/bulkhead/internal/sendmail"
)

func sendmailCommand() *command {
	return &command{
		name:    "sendmail",
		args:    "[--relay=ADDR:PORT] [SENDMAIL FLAGS] [RECIPIENT...]",
		summary: "hand a message from PHP's mail() to the mail tier, or keep it in the node's log (inside app nodes; not for direct use)",
		help: `
Sendmail is PHP's sendmail_path in app nodes. It reads one message on standard
input. With --relay (the stack has a mail tier) it hands the message to the
relay over SMTP and logs one line; without one, or when the relay does not take
it, it writes the whole message to standard error, which php-fpm keeps in its
log ('bulkhead logs NODE --service php-fpm'). It takes sendmail's flags as PHP
passes them (-t -i -fSENDER) and always succeeds, so that mail() never fails
the request that called it.`,
		raw: true,
		bind: func(*flag.FlagSet) func(context.Context, stdio, []string) error {
			return func(ctx context.Context, s stdio, args []string) error {
				// Nothing to report to the caller: PHP reads only the
				// exit status, and a failed mail must not fail the page.
				if len(args) > 0 {
					if relay, ok := strings.CutPrefix(args[0], "--relay="); ok {
						sendmail.Relay(ctx, relay, os.Stdin, s.err, args[1:])
						return nil
					}
				}
				sendmail.Sink(os.Stdin, s.err, args)
				return nil
			}
		},
	}
}
