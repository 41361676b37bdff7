package local

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// TestJournalRecordsTogether: workers that record at once share writes,
// and each record returns only once its object is on disk, where a new
// reading of the journal finds it.
func TestJournalRecordsTogether(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	j, err := loadJournal(path, "shop")
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	errs := make(chan error, n)
	for i := range n {
		go func() {
			o := Object{Kind: KindNetns, Name: fmt.Sprintf("bh-shop-app-%d", i)}
			if err := j.record(o); err != nil {
				errs <- err
				return
			}
			// The same object again: already noted, and on disk.
			if err := j.record(o); err != nil {
				errs <- err
				return
			}
			on, err := loadJournal(path, "shop")
			switch {
			case err != nil:
				errs <- err
			case !on.has(o):
				errs <- fmt.Errorf("record %v returned before the journal on disk had it", o)
			default:
				errs <- nil
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	on, err := loadJournal(path, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(on.list(KindNetns)); got != n {
		t.Errorf("the journal on disk has %d objects, want %d", got, n)
	}
}

// TestJournalReplace: replace forgets and notes in one write, keeping the
// order of what stays; a replace that changes nothing writes nothing.
func TestJournalReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	j, err := loadJournal(path, "shop")
	if err != nil {
		t.Fatal(err)
	}
	o := func(name string) Object { return Object{Kind: KindKeeper, Name: name} }
	if err := j.record(o("a"), o("b"), o("c")); err != nil {
		t.Fatal(err)
	}
	before := j.changes
	if err := j.replace([]Object{o("b")}, o("d"), o("a")); err != nil {
		t.Fatal(err)
	}
	if got := j.changes - before; got != 1 {
		t.Errorf("replace made %d writes; want 1", got)
	}
	on, err := loadJournal(path, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Object{o("a"), o("c"), o("d")}; !slices.Equal(on.Objects, want) {
		t.Errorf("on disk after replace: %v; want %v", on.Objects, want)
	}
	before = j.changes
	if err := j.replace([]Object{o("b")}, o("a")); err != nil {
		t.Fatal(err)
	}
	if j.changes != before {
		t.Errorf("a replace that changes nothing wrote the journal")
	}
}
