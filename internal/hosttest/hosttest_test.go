package hosttest

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// recorder is a testing.TB that records how a helper ended the test.
type recorder struct {
	testing.TB
	ended string // "fatal: msg" or "skip: msg"
}

// stop ends the helper as FailNow and SkipNow would, by leaving the
// goroutine's current call; run catches it.
type stop struct{}

func (r *recorder) Helper()                      {}
func (r *recorder) Fatal(args ...any)            { r.end("fatal", args...) }
func (r *recorder) Fatalf(f string, args ...any) { r.end("fatal", fmt.Sprintf(f, args...)) }
func (r *recorder) Skip(args ...any)             { r.end("skip", args...) }
func (r *recorder) end(how string, args ...any) {
	r.ended = how + ": " + fmt.Sprint(args...)
	panic(stop{})
}

func run(f func(t testing.TB)) (ended string) {
	r := &recorder{}
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(stop); !ok {
				panic(v)
			}
		}
		ended = r.ended
	}()
	f(r)
	return ""
}

func TestRequire(t *testing.T) {
	for _, c := range []struct {
		ci, ok bool
		want   string
	}{
		{ci: false, ok: true, want: ""},
		{ci: true, ok: true, want: ""},
		{ci: false, ok: false, want: "skip: needs php (apt-get install php-cli)"},
		{ci: true, ok: false, want: "fatal: needs php (apt-get install php-cli); CI must provide it (see .ci/run)"},
	} {
		ci := ""
		if c.ci {
			ci = "true"
		}
		t.Setenv("CI", ci)
		got := run(func(tb testing.TB) { Require(tb, c.ok, "php (%s)", "apt-get install php-cli") })
		if got != c.want {
			t.Errorf("CI=%q ok=%v: %q; want %q", ci, c.ok, got, c.want)
		}
	}
}

func TestEventually(t *testing.T) {
	n := 0
	if got := run(func(tb testing.TB) { Eventually(tb, time.Minute, "third call", func() bool { n++; return n == 3 }) }); got != "" || n != 3 {
		t.Errorf("bool cond: ended %q after %d calls; want none after 3", got, n)
	}
	got := run(func(tb testing.TB) { Eventually(tb, 0, "never", func() bool { return false }) })
	if want := "fatal: never: not within 0s"; got != want {
		t.Errorf("bool cond: %q; want %q", got, want)
	}
	got = run(func(tb testing.TB) {
		Eventually(tb, 0, "never", func() error { return errors.New("connection refused") })
	})
	if want := "fatal: never: not within 0s; last: connection refused"; got != want {
		t.Errorf("error cond: %q; want %q", got, want)
	}
}
