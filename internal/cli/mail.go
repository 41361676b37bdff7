package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

type mailOptions struct {
	stackFlags
	Output string
}

func mailCommand() *command {
	return &command{
		name:    "mail",
		args:    stackSynopsis + " [--output text|json] [list | show ID | flush | delete ID]",
		summary: "show and manage the mail tier's queue",
		help: `
Mail works on the queue of the stack's mail relay (the mail tier), which
holds what the app nodes' mail() sent and the relay has not delivered: all
of it when the stack has no smarthost (mail.smarthost), and what the
smarthost has not yet taken when it has one.

  list       every queued message: its id, queue (hold, deferred, active,
             incoming), arrival, size, sender, recipients and, for a
             deferred one, why (the default)
  show ID    the message, headers and body
  flush      release held mail and try every message now; with no
             smarthost there is nowhere to send it, and flush says so
  delete ID  remove one message from the queue`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := mailOptions{Output: "text"}
			o.stackFlags.bind(fs)
			fs.Var(choice{&o.Output, []string{"text", "json"}}, "output", "print the list as `text|json`")
			return func(ctx context.Context, s stdio, args []string) error {
				verb := "list"
				if len(args) > 0 {
					verb, args = args[0], args[1:]
				}
				want := map[string]int{"list": 0, "show": 1, "flush": 0, "delete": 1}
				n, ok := want[verb]
				if !ok {
					return usageErrorf("unknown mail command %q; use list, show ID, flush or delete ID", verb)
				}
				if len(args) != n {
					return usageErrorf("mail %s takes %d argument(s), got %d", verb, n, len(args))
				}
				if n == 1 && !queueIDRE.MatchString(args[0]) {
					return usageErrorf("%q is not a queue id; 'bulkhead mail list' shows them", args[0])
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
				if p.Mail == nil {
					return fmt.Errorf("stack %s has no mail tier: mail() keeps messages in the app nodes' php-fpm log ('bulkhead logs app-1 --service php-fpm'); add \"mail:\" under tiers in the stack file and run 'bulkhead up' for a relay", name)
				}
				q := mailQueue{d: d, stack: name, p: p, l: render.DefaultLayout()}
				switch verb {
				case "show":
					return q.run(ctx, s.out, "postcat", "-c", q.l.Conf, "-bh", "-q", args[0])
				case "delete":
					return q.run(ctx, s.out, render.PostsuperArgv(q.l, "-d", args[0])...)
				case "flush":
					if p.Mail.Hold() {
						return fmt.Errorf("stack %s's relay has no smarthost, so there is nowhere to send its mail; set mail.smarthost in the stack file, run 'bulkhead up', then flush", name)
					}
					if err := q.run(ctx, io.Discard, render.PostsuperArgv(q.l, "-H", "ALL")...); err != nil {
						return err
					}
					return q.run(ctx, s.out, render.FlushArgv(q.l)...)
				}
				msgs, err := q.list(ctx)
				if err != nil {
					return err
				}
				if o.Output == "json" {
					data, err := json.MarshalIndent(msgs, "", "  ")
					if err != nil {
						return err
					}
					_, err = s.out.Write(append(data, '\n'))
					return err
				}
				return printQueue(s.out, p, msgs)
			}
		},
	}
}

// queueIDRE is a Postfix queue id, short or long form.
var queueIDRE = regexp.MustCompile(`^[0-9A-Za-z]{6,32}$`)

type mailQueue struct {
	d     driver.Backend
	stack string
	p     *plan.Plan
	l     render.Layout
}

func (q mailQueue) run(ctx context.Context, out io.Writer, argv ...string) error {
	var stderr tail
	if err := q.d.Exec(ctx, q.stack, q.p.Mail.Node, argv, strings.NewReader(""), out, &stderr); err != nil {
		return fmt.Errorf("%s in %s: %w: %s", argv[0], q.p.Mail.Node, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// QueuedMail is one message in the relay's queue, as postqueue -j
// describes it.
type QueuedMail struct {
	Queue      string      `json:"queue_name"`
	ID         string      `json:"queue_id"`
	Arrival    int64       `json:"arrival_time"`
	Size       int64       `json:"message_size"`
	Sender     string      `json:"sender"`
	Recipients []Recipient `json:"recipients"`
}

// Recipient is one recipient of a queued message; DelayReason says why
// a deferred one is not delivered yet.
type Recipient struct {
	Address     string `json:"address"`
	DelayReason string `json:"delay_reason,omitempty"`
}

// maxQueueListing is the most of postqueue's answer mail list reads: the
// mail node gives it, into the operator's memory. At about 200 bytes a
// message, it is some 300 000 messages.
const maxQueueListing = 64 << 20

// errQueueListing says postqueue's answer passed maxQueueListing.
var errQueueListing = fmt.Errorf("larger than %d MiB", maxQueueListing>>20)

// capped holds what is written to it up to max bytes; a write past that
// fails, and stops the program that writes. Its buffer is a field, not
// embedded: io.Copy would use an embedded Buffer's ReadFrom, and
// io.WriteString its WriteString, both past the cap.
type capped struct {
	b    bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if c.b.Len()+len(p) > c.max {
		c.over = true
		return 0, errQueueListing
	}
	return c.b.Write(p)
}

func (q mailQueue) list(ctx context.Context) ([]QueuedMail, error) {
	out := &capped{max: maxQueueListing}
	err := q.run(ctx, out, render.PostqueueArgv(q.l)...)
	if out.over {
		return nil, fmt.Errorf("postqueue's answer in %s is %w: list the queue in the node (bulkhead exec %s %s postqueue -p)", q.p.Mail.Node, errQueueListing, q.stack, q.p.Mail.Node)
	}
	if err != nil {
		return nil, err
	}
	msgs := []QueuedMail{}
	sc := bufio.NewScanner(&out.b)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m QueuedMail
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("postqueue in %s: %w", q.p.Mail.Node, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, sc.Err()
}

func printQueue(w io.Writer, p *plan.Plan, msgs []QueuedMail) error {
	var b bytes.Buffer
	where := "held: the stack has no smarthost"
	if !p.Mail.Hold() {
		where = "relaying to " + p.Mail.Smarthost.String()
	}
	fmt.Fprintf(&b, "mail relay %s (%s): %d queued\n", p.Mail.Node, where, len(msgs))
	if len(msgs) > 0 {
		tw := table(&b)
		fmt.Fprint(tw, "ID\tQUEUE\tARRIVED\tSIZE\tFROM\tTO\n")
		for _, m := range msgs {
			var to []string
			for _, r := range m.Recipients {
				a := r.Address
				if r.DelayReason != "" {
					a += " (" + r.DelayReason + ")"
				}
				to = append(to, a)
			}
			from := m.Sender
			if from == "" {
				from = "<>"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.Queue, time.Unix(m.Arrival, 0).UTC().Format(time.RFC3339), m.Size, from, strings.Join(to, ", "))
		}
		tw.Flush()
	}
	_, err := w.Write(b.Bytes())
	return err
}
