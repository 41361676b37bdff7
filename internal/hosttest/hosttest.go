// Package hosttest holds helpers for tests that need the real host: root,
// the kernel's namespaces and real daemons rather than fakes. Only tests
// import it.
package hosttest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Require lets a test go on when ok holds. Otherwise it fails the test on
// CI (the CI environment variable is set), where .ci/run provides root,
// the packages and the kernel features, and skips it elsewhere: a test
// that skips on CI has not run, and a check must not quietly stop running.
// The message says what is missing and how to get it, e.g.
//
//	hosttest.Require(t, err == nil, "php (apt-get install php-cli): %v", err)
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := "needs " + fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI must provide it (see .ci/run)")
	}
	t.Skip(msg)
}

// RequireRoot is Require for root: CI runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "root (run the tests with sudo)")
}

// Cond is what Eventually polls: a func() bool that reports whether the
// awaited state holds, or a func() error that returns nil once it does and
// otherwise says why not.
type Cond interface {
	func() bool | func() error
}

// Eventually calls cond until it holds, failing the test with what (and
// cond's last error) once limit has passed. limit bounds a wait on
// something that takes its own time, such as a daemon starting; it is
// generous, and a test never depends on how fast the machine is. cond
// runs on the test's goroutine, so it may itself call t.Fatal to give up
// early, for example when the process it waits for has exited.
func Eventually[C Cond](t testing.TB, limit time.Duration, what string, cond C) {
	t.Helper()
	check := func() error {
		switch c := any(cond).(type) {
		case func() bool:
			if c() {
				return nil
			}
			return errNotYet
		case func() error:
			return c()
		}
		panic("unreachable")
	}
	deadline := time.Now().Add(limit)
	// Start with short pauses, as most waits are brief, and back off so
	// that a slow cond (a command, a request) is not run in a tight loop.
	pause := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				t.Fatalf("%s: not within %v", what, limit)
			}
			t.Fatalf("%s: not within %v; last: %v", what, limit, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

// Buffer holds a child process's output while the test reads it, waiting
// for a log line or reporting a failure: exec copies into it from goroutines
// of its own, so a bytes.Buffer alone would race.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}
