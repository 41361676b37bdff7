package local

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestBootUnit checks the boot unit with systemd's own verifier: it must
// load, and run the installed binary's boot on the driver's root.
func TestBootUnit(t *testing.T) {
	_, err := exec.LookPath("systemd-analyze")
	hosttest.Require(t, err == nil, "systemd-analyze (apt-get install systemd): %v", err)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bulkhead")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := bootUnit(bin, "/var/lib/bulkhead")
	if !strings.Contains(unit, "\nExecStart="+bin+" boot --root /var/lib/bulkhead\n") || !strings.Contains(unit, "\nWantedBy=multi-user.target\n") {
		t.Errorf("the boot unit does not run %s boot at startup:\n%s", bin, unit)
	}
	path := filepath.Join(dir, bootUnitName)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
