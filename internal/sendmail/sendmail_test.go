package sendmail

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSink(t *testing.T) {
	msg := "From: WordPress <wordpress@127.0.0.1>\r\nTo: admin@example.com\r\nSubject: =?UTF-8?Q?[Site]_New_WordPress_Site?=\r\n\r\nYour new site.\r\nsendmail: forged summary\r\n"
	for _, c := range []struct {
		name, in string
		args     []string
		want     []string
	}{
		{"headers", msg, []string{"-t", "-i"}, []string{
			`sendmail: kept, not sent (no mail tier): from "WordPress <wordpress@127.0.0.1>" to "admin@example.com" subject "[Site] New WordPress Site", ` + "154 bytes\n",
			"sendmail| Subject: =?UTF-8?Q?[Site]_New_WordPress_Site?=\n",
			"sendmail| Your new site.\n",
			"sendmail| sendmail: forged summary\n",
			"sendmail: end of message\n",
		}},
		{"envelope", msg, []string{"-t", "-i", "-fbounce@example.com", "--", "x@example.com"}, []string{
			`from "bounce@example.com" to "x@example.com, admin@example.com"`,
		}},
		{"no headers", "just a body\n", nil, []string{
			"subject \"(a message without headers that parse",
			"sendmail| just a body\n",
		}},
		{"too long", "Subject: big\n\n" + strings.Repeat("x", MaxMessage), nil, []string{
			"sendmail| (14 more bytes not kept)\n",
			"sendmail: end of message\n",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log strings.Builder
			if err := Sink(strings.NewReader(c.in), &log, c.args); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(log.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, log.String())
				}
			}
			if n := strings.Count(log.String(), "\nsendmail: ") + 1; n != 2 {
				t.Errorf("%d summary lines, want 2 (kept, end):\n%s", n, log.String())
			}
		})
	}
}

// A reader that fails half way still leaves what came in the log.
func TestSinkReadError(t *testing.T) {
	var log strings.Builder
	r := io.MultiReader(strings.NewReader("Subject: cut\n\nhalf"), errReader{})
	if err := Sink(r, &log, nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"reading the message: broken pipe", "sendmail| half\n", `subject "cut"`} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken pipe") }
