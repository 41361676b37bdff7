package local

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// TestSyncSitePlantedLinks: root in the storage node can plant links in
// its data directory, where the site lives. A sync must never follow one:
// the outside stays as it was, and the links are replaced or removed as
// links.
func TestSyncSitePlantedLinks(t *testing.T) {
	hosttest.RequireRoot(t)
	for _, tc := range []struct {
		name   string
		plant  string // beneath the site on storage
		target string // relative targets climb from data/site/<plant>
	}{
		{"copy through the temp name", "index.php.tmp", "OUT/secret"},
		{"copy over a link to a file", "index.php", "../../outside/secret"},
		{"mkdir, chmod and copy through a directory link", "lib", "OUT/dir"},
		{"chown through a writable path's link", "uploads", "../../outside/dir"},
		{"copy into a linked directory by a relative path", "assets", "../../outside/dir"},
		{"remove an extra link", "extra", "OUT/dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			src, data, outside := filepath.Join(base, "src"), filepath.Join(base, "data"), filepath.Join(base, "outside")
			write(t, filepath.Join(src, "index.php"), "<?php echo 1;")
			write(t, filepath.Join(src, "lib/db.php"), "<?php")
			write(t, filepath.Join(src, "assets/style.css"), "body{}")
			write(t, filepath.Join(outside, "secret"), "secret")
			write(t, filepath.Join(outside, "dir/file"), "file")
			os.Chmod(filepath.Join(outside, "dir"), 0o700)
			os.MkdirAll(filepath.Join(src, "uploads"), 0o755)
			os.MkdirAll(data, 0o755)
			if err := syncTo(src, data); err != nil {
				t.Fatal(err)
			}
			// The node plants its link.
			at := filepath.Join(data, "site", tc.plant)
			os.RemoveAll(at)
			target := strings.Replace(tc.target, "OUT", outside, 1)
			if err := os.Symlink(target, at); err != nil {
				t.Fatal(err)
			}
			// A changed site makes the sync write.
			write(t, filepath.Join(src, "index.php"), "<?php echo 2;")
			write(t, filepath.Join(src, "lib/db.php"), "<?php // 2")
			write(t, filepath.Join(src, "assets/style.css"), "body{color:red}")
			before := outsideState(t, outside)
			err := syncTo(src, data)
			if after := outsideState(t, outside); after != before {
				t.Errorf("the sync changed the outside through %s -> %s (err %v):\nbefore:\n%safter:\n%s", tc.plant, target, err, before, after)
			}
			if err != nil {
				t.Fatalf("sync: %v", err)
			}
			filepath.WalkDir(filepath.Join(data, "site"), func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.Type()&fs.ModeSymlink != 0 {
					t.Errorf("a planted link survived the sync: %s", path)
				}
				return nil
			})
			if b, _ := os.ReadFile(filepath.Join(data, "site/lib/db.php")); string(b) != "<?php // 2" {
				t.Errorf("lib/db.php on storage = %q", b)
			}
		})
	}
}

// outsideState is everything a sync could change outside storage.
func outsideState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := os.Lstat(path)
		st := info.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d", path, info.Mode(), st.Uid, st.Gid)
		if info.Mode().IsRegular() {
			data, _ := os.ReadFile(path)
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteByte('\n')
		return nil
	})
	return b.String()
}

func syncTo(src, data string) error {
	_, _, err := syncSite(src, filepath.Join(data, "site"), []string{"uploads"})
	return err
}
