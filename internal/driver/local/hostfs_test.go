package local

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestGoBuildID reads the build ID of this test's own binary as the go
// command does, and none from a binary that is not Go's.
func TestGoBuildID(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	got, err := goBuildID(self)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", self).Output()
	if err != nil {
		t.Fatalf("go tool buildid: %v", err)
	}
	if want := strings.TrimSpace(string(out)); got != want {
		t.Errorf("goBuildID = %q, want %q (go tool buildid)", got, want)
	}
	// coreutils, in C: an ELF note of GNU's, none of Go's.
	if id, err := goBuildID("/bin/true"); err != nil || id != "" {
		t.Errorf("goBuildID(/bin/true) = %q, %v; want none", id, err)
	}
	if _, err := goBuildID("/etc/hostname"); err == nil {
		t.Error("goBuildID of a file that is not ELF: no error")
	}
}

// TestInstallBinary installs this binary: over a copy of the same build
// it writes nothing; over a copy cut short or grown, another binary or
// another file, it puts this one in place.
func TestInstallBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mine, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "bin", "bulkhead")
	inode := func() uint64 {
		t.Helper()
		fi, err := os.Stat(dst)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	installed := func(when string) {
		t.Helper()
		if data, err := os.ReadFile(dst); err != nil || !bytes.Equal(data, mine) {
			t.Errorf("%s: %s is not this binary (%v)", when, dst, err)
		}
	}
	if err := installBinary(dst); err != nil {
		t.Fatal(err)
	}
	installed("first install")
	first := inode()
	if err := installBinary(dst); err != nil {
		t.Fatal(err)
	}
	if inode() != first {
		t.Error("the same build was installed again")
	}
	// This binary cut short (ELF's section headers, which lead to the
	// build ID, are at the end), and this binary with bytes added: its
	// build ID still reads.
	for what, data := range map[string][]byte{
		"cut short":        mine[:len(mine)/2],
		"with bytes added": append(slices.Clip(mine), "more"...),
	} {
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := installBinary(dst); err != nil {
			t.Fatal(err)
		}
		installed("over this binary " + what)
	}
	if err := os.WriteFile(dst, append(slices.Clip(mine), "more"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if id, err := goBuildID(dst); err != nil || id == "" {
		t.Errorf("this binary with bytes added: build ID %q, %v; want it read, so that only its size tells", id, err)
	}
	for _, other := range []string{"/bin/true", "/etc/hostname"} {
		data, err := os.ReadFile(other)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := installBinary(dst); err != nil {
			t.Fatal(err)
		}
		installed("over " + other)
	}
}
