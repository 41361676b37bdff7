package cli

import (
	"context"
	"flag"
	"os"

	"github.com/bulkhead/bulkhead/internal/sendmail"
)

func sendmailCommand() *command {
	return &command{
		name:    "sendmail",
		args:    "[SENDMAIL FLAGS] [RECIPIENT...]",
		summary: "keep a message from PHP's mail() in the node's log (inside app nodes; not for direct use)",
		help: `
Sendmail is PHP's sendmail_path in app nodes when the stack has no mail tier.
It reads one message on standard input and writes it to standard error, which
php-fpm keeps in its log ('bulkhead logs NODE --service php-fpm'). It takes
sendmail's flags as PHP passes them (-t -i -fSENDER) and always succeeds, so
that mail() never fails the request that called it.`,
		raw: true,
		bind: func(*flag.FlagSet) func(context.Context, stdio, []string) error {
			return func(_ context.Context, s stdio, args []string) error {
				// Nothing to report to the caller: PHP reads only the
				// exit status, and a failed mail must not fail the page.
				sendmail.Sink(os.Stdin, s.err, args)
				return nil
			}
		},
	}
}
