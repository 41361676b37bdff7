package backup

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestRotate(t *testing.T) {
	dir := t.TempDir()
	var names []string
	for i := range 5 {
		n := Name("shop", created.Add(time.Duration(i)*time.Hour))
		names = append(names, n)
	}
	others := []string{
		Name("shop-eu", created), // another stack, whose name starts with this one's
		Name("shop", created.Add(9*time.Hour)) + ".partial",
		"shop-notes.txt",
	}
	// Written out of order, so that only the names can tell the order.
	for _, n := range append([]string{names[3], names[0], names[4], names[1], names[2]}, others...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := Rotate(dir, "shop", 2)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range []string{names[2], names[1], names[0]} {
		want = append(want, filepath.Join(dir, n))
	}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	wantLeft := append([]string{names[3], names[4]}, others...)
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Errorf("left %q, want %q", left, wantLeft)
	}
	if removed, err := Rotate(dir, "shop", 2); err != nil || len(removed) != 0 {
		t.Errorf("again: %q, %v", removed, err)
	}
	if _, err := Rotate(dir, "shop", 0); err == nil {
		t.Error("keep 0 removed everything")
	}
}
