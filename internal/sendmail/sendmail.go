// Package sendmail is where PHP's mail() leaves a message. With a mail
// tier, Relay hands it to the stack's relay over SMTP; without one, or when
// the relay does not take it, a sink writes it into the node's log instead.
// Neither ever fails the request that sent it.
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
	m := read(r, MaxMessage, log)
	m.withEnvelope(args)
	return m.keep(log, "no mail tier")
}

// message is one message as read from sendmail's caller.
type message struct {
	data    []byte // what was kept of it
	size    int64  // how many bytes came, kept or not
	from    string
	to      []string // as the caller and the headers wrote them
	subject string
	header  mail.Header // nil when the headers do not parse
}

// read reads one message, keeping up to limit bytes of it and counting
// the rest, so that the sender never blocks on a full pipe. A read error
// goes to log; what arrived is kept all the same.
func read(r io.Reader, limit int64, log io.Writer) *message {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, limit))
	if err == nil {
		var rest int64
		rest, err = io.Copy(io.Discard, r)
		n += rest
	}
	if err != nil {
		fmt.Fprintf(log, "%sreading the message: %v\n", SummaryPrefix, err)
	}
	return parse(buf.Bytes(), n)
}

// parse reads the summary of a message from its headers.
func parse(data []byte, size int64) *message {
	m := &message{data: data, size: size}
	pm, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		m.subject = "(a message without headers that parse: " + err.Error() + ")"
		return m
	}
	h := pm.Header
	m.header = h
	m.from = h.Get("From")
	for _, k := range []string{"To", "Cc", "Bcc"} {
		if v := h.Get(k); v != "" {
			m.to = append(m.to, v)
		}
	}
	m.subject = h.Get("Subject")
	if d, err := new(mime.WordDecoder).DecodeHeader(m.subject); err == nil {
		m.subject = d
	}
	return m
}

// keep writes m to log, with why it was not sent.
func (m *message) keep(log io.Writer, why string) error {
	var out bytes.Buffer
	fmt.Fprintf(&out, "%skept, not sent (%s): %s, %d bytes\n", SummaryPrefix, why, m.summary(), m.size)
	sc := bufio.NewScanner(bytes.NewReader(m.data))
	sc.Buffer(make([]byte, 0, 64<<10), MaxMessage)
	for sc.Scan() {
		fmt.Fprintf(&out, "%s%s\n", LinePrefix, strings.TrimSuffix(sc.Text(), "\r"))
	}
	if int64(len(m.data)) < m.size {
		fmt.Fprintf(&out, "%s(%d more bytes not kept)\n", LinePrefix, m.size-int64(len(m.data)))
	}
	fmt.Fprintf(&out, "%send of message\n", SummaryPrefix)
	_, err := log.Write(out.Bytes())
	return err
}

func (m *message) summary() string {
	return fmt.Sprintf("from %s to %s subject %s", strconv.Quote(m.from), strconv.Quote(strings.Join(m.to, ", ")), strconv.Quote(m.subject))
}

// withEnvelope applies sendmail's command line to m: -f names the sender,
// and recipients on the line come before the headers'.
func (m *message) withEnvelope(args []string) {
	from, to := envelope(args)
	if from != "" {
		m.from = from
	}
	m.to = append(to, m.to...)
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
