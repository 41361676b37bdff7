package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	if err := writeFile(dir, "edge", "secrets/tls.key", []byte("one"), 0o400); err != nil {
		t.Fatal(err)
	}
	// A second render replaces a read-only file and takes the new mode.
	if err := writeFile(dir, "edge", "secrets/tls.key", []byte("two"), 0o440); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "edge", "secrets", "tls.key")
	data, err := os.ReadFile(p)
	if err != nil || string(data) != "two" {
		t.Errorf("read back %q, %v; want \"two\"", data, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v, %v; want 0440", fi.Mode(), err)
	}
	for _, bad := range []string{"../escape", "/etc/passwd", "a/../../b"} {
		if err := writeFile(dir, "edge", bad, nil, 0o644); err == nil {
			t.Errorf("writeFile(%q) wrote outside the node's directory", bad)
		}
	}
}
