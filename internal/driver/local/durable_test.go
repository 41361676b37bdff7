package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteDurable replaces a file whole, with its mode, and leaves no
// temporary file beside it.
func TestWriteDurable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, data := range []string{"first", "second, longer"} {
		if err := writeDurable(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Fatalf("read back %q, %v; want %q", got, err, data)
		}
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", info.Mode().Perm(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Errorf("the directory holds %v (%v); want only state.json", entries, err)
	}
}

// TestDamagedJournal: a journal that cannot be read stops up and down with
// a message that says what it is for and what to do.
func TestDamagedJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadJournal(path, "shop")
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "bh-shop-*") {
		t.Errorf("an empty journal: %v", err)
	}
}
