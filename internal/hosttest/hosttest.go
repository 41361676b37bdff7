// Package hosttest holds helpers for tests that need the real host: root,
// the kernel's namespaces and real daemons rather than fakes.
package hosttest

import (
	"bytes"
	"os"
	"sync"
	"testing"
)

// RequireRoot skips a test that needs root, except on CI (the CI environment
// variable is set), which runs as root: there a missing privilege is a
// failure, not a skip, so that a check cannot quietly stop running.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("needs root, and CI must run as root")
	}
	t.Skip("needs root")
}

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
