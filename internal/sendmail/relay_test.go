package sendmail

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
)

// With the relay down, the message is kept whole in the log, with why.
func TestRelayDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	var log strings.Builder
	msg := "From: a@example.com\r\nTo: b@example.com\r\nSubject: down\r\n\r\nbody\r\n"
	if err := Relay(context.Background(), addr, strings.NewReader(msg), &log, []string{"-t", "-i"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"sendmail: kept, not sent (the relay at " + addr + " did not take it: ", "connection refused", `subject "down"`, "sendmail| body\n", "sendmail: end of message\n"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
}

func TestEnvelope(t *testing.T) {
	msg := "From: Site <site@example.com>\r\nTo: A <a@example.com>, b@example.com\r\nBcc: hidden@example.com,\r\n\tcontinued@example.com\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
	for _, c := range []struct {
		name     string
		args     []string
		from     string
		rcpts    []string
		errMatch string
	}{
		{"headers", []string{"-t", "-i"}, "site@example.com", []string{"a@example.com", "b@example.com", "hidden@example.com", "continued@example.com"}, ""},
		{"flags", []string{"-fbounce@example.com", "x@example.com"}, "bounce@example.com", []string{"x@example.com"}, ""},
		{"none", []string{"-i"}, "", nil, "no recipient"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := parse([]byte(msg), int64(len(msg)))
			from, rcpts, err := m.envelope(c.args)
			if c.errMatch != "" {
				if err == nil || !strings.Contains(err.Error(), c.errMatch) {
					t.Fatalf("err %v, want %q", err, c.errMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if from != c.from || !slices.Equal(rcpts, c.rcpts) {
				t.Errorf("envelope %q %q, want %q %q", from, rcpts, c.from, c.rcpts)
			}
		})
	}
	got := string(withoutBcc([]byte(msg)))
	want := "From: Site <site@example.com>\r\nTo: A <a@example.com>, b@example.com\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
	if got != want {
		t.Errorf("withoutBcc:\n%q\nwant\n%q", got, want)
	}
}
