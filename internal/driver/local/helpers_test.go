package local

import (
	"os"
	"testing"
)

// requireRoot skips a test that needs root, except on CI, which runs as
// root: there a missing privilege is a failure, not a skip.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run as root")
		}
		t.Skip("needs root")
	}
}
