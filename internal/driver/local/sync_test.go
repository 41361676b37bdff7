package local

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSyncSite(t *testing.T) {
	hosttest.RequireRoot(t)
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "site")
	write(t, filepath.Join(src, "index.php"), "<?php echo 1;")
	write(t, filepath.Join(src, "lib/db.php"), "<?php")
	write(t, filepath.Join(src, "assets/style.css"), "body{}")
	os.MkdirAll(filepath.Join(src, "uploads"), 0o755)

	copied, removed, err := syncSite(src, dst, []string{"uploads"})
	if err != nil || copied != 3 || removed != 0 {
		t.Fatalf("first sync: copied %d removed %d err %v", copied, removed, err)
	}
	// An upload arrives on storage; the site changes; a file is deleted.
	write(t, filepath.Join(dst, "uploads/cat.png"), "png")
	write(t, filepath.Join(src, "index.php"), "<?php echo 2;")
	os.RemoveAll(filepath.Join(src, "lib"))

	copied, removed, err = syncSite(src, dst, []string{"uploads"})
	if err != nil || copied != 1 || removed != 1 {
		t.Fatalf("second sync: copied %d removed %d err %v", copied, removed, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "index.php")); string(b) != "<?php echo 2;" {
		t.Errorf("index.php not updated: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dst, "lib")); !os.IsNotExist(err) {
		t.Errorf("lib/ survived its removal from the site: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "uploads/cat.png")); err != nil || string(b) != "png" {
		t.Errorf("an upload was lost: %q %v", b, err)
	}
	if c, r, _ := syncSite(src, dst, []string{"uploads"}); c != 0 || r != 0 {
		t.Errorf("an unchanged site copied %d and removed %d", c, r)
	}
	// Ownership: root's and 0644/0755, except the upload directory.
	for path, want := range map[string]int{"index.php": 0, "assets": 0, "uploads": siteOwner} {
		info, err := os.Stat(filepath.Join(dst, path))
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != want || int(st.Gid) != want {
			t.Errorf("%s owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, want, want)
		}
	}
	info, _ := os.Stat(filepath.Join(dst, "index.php"))
	if info.Mode().Perm() != 0o644 {
		t.Errorf("index.php mode %v, want 0644", info.Mode().Perm())
	}
}

// TestMirrorKeepsDir: mirror updates a directory in place, so that a bind
// mount of it sees the new content.
func TestMirrorKeepsDir(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	write(t, filepath.Join(src, "passwd"), "new")
	write(t, filepath.Join(src, "php/conf.d/a.ini"), "a")
	os.Symlink("usr/share/zoneinfo/UTC", filepath.Join(src, "localtime"))
	write(t, filepath.Join(dst, "passwd"), "old")
	write(t, filepath.Join(dst, "stale/file"), "x")
	before, _ := os.Stat(dst)
	if err := mirror(src, dst); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(dst)
	if !os.SameFile(before, after) {
		t.Fatal("mirror replaced the directory itself")
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "passwd")); string(b) != "new" {
		t.Errorf("passwd = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "php/conf.d/a.ini")); string(b) != "a" {
		t.Errorf("a.ini = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "localtime")); l != "usr/share/zoneinfo/UTC" {
		t.Errorf("localtime -> %q", l)
	}
	if _, err := os.Stat(filepath.Join(dst, "stale")); !os.IsNotExist(err) {
		t.Errorf("stale entry survived: %v", err)
	}
}
