package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedJournal: a journal that cannot be read stops up with a
// message that says what it is for and what to do: down finds the stack's
// objects without it (see down-with-a-damaged-journal in TestUpOnFakeHost).
func TestDamagedJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadJournal(path, "shop")
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "bh-shop-*") || !strings.Contains(err.Error(), "run 'bulkhead down --stack shop'") {
		t.Errorf("an empty journal: %v", err)
	}
}
