package local

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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

// siteTo is a sync of src into data as up makes it, with the manifest
// beside data, as the host keeps it outside the node's directories.
func siteTo(src, data string) siteSync {
	return siteSync{
		Node: "storage", Src: src, Data: data, Manifest: data + ".manifest.json",
		Writable: []string{"uploads"}, Root: ids{0, 0}, Writer: ids{siteOwner, siteOwner},
	}
}

func TestSyncSite(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data := t.TempDir(), filepath.Join(t.TempDir(), "data")
	dst := filepath.Join(data, "site")
	write(t, filepath.Join(src, "index.php"), "<?php echo 1;")
	write(t, filepath.Join(src, "lib/db.php"), "<?php")
	write(t, filepath.Join(src, "assets/style.css"), "body{}")
	os.MkdirAll(filepath.Join(src, "uploads"), 0o755)

	res, err := syncSite(siteTo(src, data))
	if err != nil || len(res.Copied) != 3 || len(res.Removed) != 0 {
		t.Fatalf("first sync: %+v err %v", res, err)
	}
	// An upload arrives on storage; the site changes; a file is deleted.
	write(t, filepath.Join(dst, "uploads/cat.png"), "png")
	write(t, filepath.Join(src, "index.php"), "<?php echo 2;")
	os.RemoveAll(filepath.Join(src, "lib"))

	res, err = syncSite(siteTo(src, data))
	if err != nil || !slices.Equal(res.Copied, []string{"index.php"}) || !slices.Equal(res.Removed, []string{"lib"}) || len(res.Restored) != 0 {
		t.Fatalf("second sync: %+v err %v", res, err)
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
	if res, err := syncSite(siteTo(src, data)); err != nil || len(res.Copied)+len(res.Removed)+len(res.Restored) != 0 {
		t.Errorf("an unchanged site changed storage: %+v %v", res, err)
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

// TestSyncSiteOwners: the owners are the caller's, as a user namespace
// shifts them.
func TestSyncSiteOwners(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data := t.TempDir(), filepath.Join(t.TempDir(), "data")
	write(t, filepath.Join(src, "index.php"), "<?php")
	write(t, filepath.Join(src, "uploads/logo.png"), "png")
	s := siteTo(src, data)
	s.Writable = []string{"media/uploads"}
	os.MkdirAll(filepath.Join(src, "media"), 0o755)
	s.Root, s.Writer = ids{100000, 100001}, ids{100033, 100034}
	if _, err := syncSite(s); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]ids{
		".": s.Root, "index.php": s.Root, "uploads": s.Root, "uploads/logo.png": s.Root,
		"media": s.Root, "media/uploads": s.Writer,
	} {
		info, err := os.Lstat(filepath.Join(data, "site", path))
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != want.UID || int(st.Gid) != want.GID {
			t.Errorf("%s owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, want.UID, want.GID)
		}
	}
}

// TestSyncSiteRestoresTampered: root in the storage node changes the code
// that other nodes run. The next sync finds every change by content hash,
// puts the operator's copy back, and names what it restored, apart from
// what the operator changed.
func TestSyncSiteRestoresTampered(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data, outside := t.TempDir(), filepath.Join(t.TempDir(), "data"), t.TempDir()
	dst := filepath.Join(data, "site")
	for _, f := range []string{"index.php", "lib/db.php", "lib/auth.php", "assets/style.css", "assets/app.js", "about.html", "news.html"} {
		write(t, filepath.Join(src, f), "original "+f)
	}
	os.MkdirAll(filepath.Join(src, "uploads"), 0o755)
	if _, err := syncSite(siteTo(src, data)); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(outside, "evil.php"), "evil")
	// The node's doing, each hidden from a size or mtime check where it can be.
	os.WriteFile(filepath.Join(dst, "index.php"), []byte("ORIGINAL index.php"), 0o644) // same size
	ts := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dst, "index.php"), ts, ts)
	os.Chmod(filepath.Join(dst, "lib/db.php"), 0o666)
	os.Chown(filepath.Join(dst, "lib/auth.php"), 1000, 1000)
	os.Remove(filepath.Join(dst, "assets/style.css"))
	os.Symlink(filepath.Join(outside, "evil.php"), filepath.Join(dst, "assets/style.css"))
	os.Remove(filepath.Join(dst, "assets/app.js"))
	os.MkdirAll(filepath.Join(dst, "assets/app.js/x"), 0o755)
	os.Remove(filepath.Join(dst, "about.html"))
	write(t, filepath.Join(dst, "backdoor.php"), "<?php system($_GET[1]);")
	write(t, filepath.Join(dst, "uploads/cat.png"), "png")
	// The operator's doing.
	write(t, filepath.Join(src, "news.html"), "news of the day")

	res, err := syncSite(siteTo(src, data))
	if err != nil {
		t.Fatal(err)
	}
	wantRestored := []string{"about.html", "assets/app.js", "assets/style.css", "index.php", "lib/auth.php", "lib/db.php"}
	if !slices.Equal(res.Restored, wantRestored) {
		t.Errorf("restored %q, want %q", res.Restored, wantRestored)
	}
	if !slices.Equal(res.Copied, []string{"news.html"}) {
		t.Errorf("copied %q, want the operator's change only", res.Copied)
	}
	if !slices.Equal(res.Removed, []string{"backdoor.php"}) {
		t.Errorf("removed %q, want the extra file only", res.Removed)
	}
	if err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if !bytes.Equal(got, want) || info.Mode() != 0o644 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s on storage: %v %d:%d %q; want the operator's copy", rel, info.Mode(), st.Uid, st.Gid, got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "uploads/cat.png")); string(b) != "png" {
		t.Errorf("an upload was lost: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "evil.php")); string(b) != "evil" {
		t.Errorf("the link's target changed: %q", b)
	}
	if res, err := syncSite(siteTo(src, data)); err != nil || len(res.Copied)+len(res.Removed)+len(res.Restored) != 0 {
		t.Errorf("a restored site changed again: %+v %v", res, err)
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
	before, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := mirror(src, dst); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
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
	_, err := syncSite(siteTo(src, data))
	return err
}

// TestSyncSiteRefusesLinkInUploads: inside a writable path the content is
// the site's, so a link there is neither followed nor removed: the sync
// refuses and says where.
func TestSyncSiteRefusesLinkInUploads(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data, outside := t.TempDir(), filepath.Join(t.TempDir(), "data"), t.TempDir()
	write(t, filepath.Join(src, "uploads/2024/logo.png"), "png")
	write(t, filepath.Join(outside, "file"), "file")
	os.MkdirAll(filepath.Join(data, "site/uploads"), 0o755)
	os.Symlink(outside, filepath.Join(data, "site/uploads/2024"))
	before := outsideState(t, outside)
	err := syncTo(src, data)
	if err == nil || !strings.Contains(err.Error(), "node storage") || !strings.Contains(err.Error(), "site/uploads/2024") || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("want a refusal naming the node, the path and the link, got %v", err)
	}
	if after := outsideState(t, outside); after != before {
		t.Errorf("the outside changed:\nbefore:\n%safter:\n%s", before, after)
	}
	if _, err := os.Lstat(filepath.Join(data, "site/uploads/2024")); err != nil {
		t.Errorf("the site's own link was removed: %v", err)
	}
}
