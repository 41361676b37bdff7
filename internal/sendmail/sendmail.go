// Package sendmail is where PHP's mail() leaves a message when the stack has
// no way to send it: a sink that writes each message into the node's log
// instead of delivering it, and never fails the request that sent it.
//
// php-fpm runs it as its sendmail_path (see render/app.go): the message
// arrives on standard input, and what the sink writes to standard error
// goes, through php-fpm's catch_workers_output, to php-fpm's log, which
// "bulkhead logs" shows.
package sendmail

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strconv"
	"strings"
)

// MaxMessage is the most of one message that the log keeps; the rest is
// read and counted, so that the sender never blocks on a full pipe.
const MaxMessage = 256 << 10

// Prefixes of the log lines: a summary, then every line of the message
// behind a prefix of its own, so that nothing in a message can pass for a
// summary line.
const (
	SummaryPrefix = "sendmail: "
	LinePrefix    = "sendmail| "
)

// Sink reads one message from r, as sendmail's callers send it (headers, a
// blank line, the body; args are sendmail's flags, like -t -i -fsender),
// and writes it to log: a summary line with the sender, the recipients
// and the subject, the message's lines, and an end line. A message that
// does not parse is still kept, with a summary that says so. Sink fails
// only when it cannot write to log.
func Sink(r io.Reader, log io.Writer, args []string) error {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, MaxMessage))
	if err == nil {
		var rest int64
		rest, err = io.Copy(io.Discard, r)
		n += rest
	}
	if err != nil {
		// What arrived is kept all the same.
		fmt.Fprintf(log, "%sreading the message: %v\n", SummaryPrefix, err)
	}

	from, to := envelope(args)
	subject := ""
	if m, err := mail.ReadMessage(bytes.NewReader(buf.Bytes())); err != nil {
		subject = "(a message without headers that parse: " + err.Error() + ")"
	} else {
		h := m.Header
		if from == "" {
			from = h.Get("From")
		}
		for _, k := range []string{"To", "Cc", "Bcc"} {
			if v := h.Get(k); v != "" {
				to = append(to, v)
			}
		}
		subject = h.Get("Subject")
		if d, err := new(mime.WordDecoder).DecodeHeader(subject); err == nil {
			subject = d
		}
	}

	var out bytes.Buffer
	fmt.Fprintf(&out, "%skept, not sent (no mail tier): from %s to %s subject %s, %d bytes\n",
		SummaryPrefix, strconv.Quote(from), strconv.Quote(strings.Join(to, ", ")), strconv.Quote(subject), n)
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	sc.Buffer(make([]byte, 0, 64<<10), MaxMessage)
	for sc.Scan() {
		fmt.Fprintf(&out, "%s%s\n", LinePrefix, strings.TrimSuffix(sc.Text(), "\r"))
	}
	if int64(buf.Len()) < n {
		fmt.Fprintf(&out, "%s(%d more bytes not kept)\n", LinePrefix, n-int64(buf.Len()))
	}
	fmt.Fprintf(&out, "%send of message\n", SummaryPrefix)
	_, err = log.Write(out.Bytes())
	return err
}

// envelope reads the sender (-f) and the recipients (arguments that are
// not flags) from sendmail's command line. Flags it does not know take no
// value, as -t, -i and -oi do.
func envelope(args []string) (from string, to []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-f" || a == "-r":
			if i+1 < len(args) {
				from = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "-f") || strings.HasPrefix(a, "-r"):
			from = a[2:]
		case a == "--":
			to = append(to, args[i+1:]...)
			return from, to
		case !strings.HasPrefix(a, "-"):
			to = append(to, a)
		}
	}
	return from, to
}
