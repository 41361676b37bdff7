package sendmail

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"
)

// MaxRelayed is the largest message Relay hands to the relay: Postfix's
// default message_size_limit. A larger one is kept in the log, cut.
const MaxRelayed = 10240000

// RelayTimeout bounds one hand-over to the relay, from connecting to its
// answer to the message's end.
const RelayTimeout = 30 * time.Second

// Relay reads one message from r as Sink does and hands it to the SMTP
// relay at addr (host:port). The envelope is sendmail's: -f or the From
// header names the sender, and the recipients are the command line's and,
// with -t, those of the To, Cc and Bcc headers; Bcc lines are taken out of
// the message. Relay writes one summary line to log when the relay took
// the message. When it did not (the relay is down, refused a recipient,
// or the message cannot be relayed), it keeps the whole message in log
// as Sink does, with the reason. It fails only when it cannot write to
// log.
func Relay(ctx context.Context, addr string, r io.Reader, log io.Writer, args []string) error {
	m := read(r, MaxRelayed+1, log)
	m.withEnvelope(args)
	err := m.relay(ctx, addr, args)
	if err == nil {
		_, err := fmt.Fprintf(log, "%shanded to the relay at %s: %s, %d bytes\n", SummaryPrefix, addr, m.summary(), m.size)
		return err
	}
	if len(m.data) > MaxMessage {
		m.data = m.data[:MaxMessage]
	}
	return m.keep(log, fmt.Sprintf("the relay at %s did not take it: %v", addr, err))
}

// relay sends m to addr over SMTP.
func (m *message) relay(ctx context.Context, addr string, args []string) error {
	if m.size > MaxRelayed {
		return fmt.Errorf("the message is %d bytes, over the relay's limit of %d", m.size, MaxRelayed)
	}
	if m.header == nil {
		return fmt.Errorf("its headers do not parse")
	}
	from, rcpts, err := m.envelope(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, RelayTimeout)
	defer cancel()
	conn, err := new(net.Dialer).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, rc := range rcpts {
		if err := c.Rcpt(rc); err != nil {
			return fmt.Errorf("recipient %s: %w", rc, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(withoutBcc(m.data)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// envelope is the SMTP sender and recipients of m, as sendmail would
// take them from args and, with -t, from the headers.
func (m *message) envelope(args []string) (from string, rcpts []string, err error) {
	fromArg, toArgs := envelope(args)
	from = fromArg
	if from == "" {
		if a, err := m.header.AddressList("From"); err == nil && len(a) > 0 {
			from = a[0].Address
		}
	} else if a, err := mail.ParseAddress(from); err == nil {
		from = a.Address
	}
	for _, t := range toArgs {
		as, err := mail.ParseAddressList(t)
		if err != nil {
			return "", nil, fmt.Errorf("recipient %q: %w", t, err)
		}
		for _, a := range as {
			rcpts = append(rcpts, a.Address)
		}
	}
	if hasFlag(args, "-t") {
		for _, k := range []string{"To", "Cc", "Bcc"} {
			if m.header.Get(k) == "" {
				continue
			}
			as, err := m.header.AddressList(k)
			if err != nil {
				return "", nil, fmt.Errorf("header %s: %w", k, err)
			}
			for _, a := range as {
				rcpts = append(rcpts, a.Address)
			}
		}
	}
	if len(rcpts) == 0 {
		return "", nil, fmt.Errorf("it names no recipient")
	}
	return from, rcpts, nil
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == flag {
			return true
		}
	}
	return false
}

// withoutBcc returns the message without its Bcc header, which sendmail
// -t never passes on: the other recipients must not see it.
func withoutBcc(data []byte) []byte {
	var out bytes.Buffer
	sc := bufio.NewReader(bytes.NewReader(data))
	inHeader, skipping := true, false
	for {
		line, err := sc.ReadBytes('\n')
		if len(line) > 0 {
			if inHeader {
				trimmed := strings.TrimRight(string(line), "\r\n")
				switch {
				case trimmed == "":
					inHeader, skipping = false, false
				case line[0] == ' ' || line[0] == '\t':
					// A continuation line of the header before.
				default:
					name, _, _ := strings.Cut(trimmed, ":")
					skipping = strings.EqualFold(strings.TrimSpace(name), "Bcc")
				}
			}
			if !(inHeader && skipping) {
				out.Write(line)
			}
		}
		if err != nil {
			break
		}
	}
	return out.Bytes()
}
