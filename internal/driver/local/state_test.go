package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
