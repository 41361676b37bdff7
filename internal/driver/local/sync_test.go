package local

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

// siteTo is a sync of src into data as up makes it.
func siteTo(src, data string) siteSync {
	return siteSync{
		Node: "storage", Src: src, Data: data,
		Writable: []string{"uploads"}, Root: ids{0, 0}, Writer: ids{siteOwner, siteOwner},
	}
}

func syncTo(src, data string) error {
	_, err := syncSite(siteTo(src, data))
	return err
}

// treeState is everything a sync could change in dir: each entry's path,
// mode, owner, inode and mtime, and a file's bytes. The same state before
// and after means nothing was written, replaced or removed.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&b, "%s %v %d:%d ino %d mtime %d", rel, info.Mode(), st.Uid, st.Gid, st.Ino, info.ModTime().UnixNano())
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// listTree is the paths in dir, relative to it, in lexical order.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkOwners checks the owner and mode of each path beneath dir.
func checkOwners(t *testing.T, dir string, want map[string]ids, mode map[string]fs.FileMode) {
	t.Helper()
	for path, o := range want {
		info, err := os.Lstat(filepath.Join(dir, path))
		if err != nil {
			t.Error(err)
			continue
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != o.UID || int(st.Gid) != o.GID {
			t.Errorf("%s owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, o.UID, o.GID)
		}
		if m, ok := mode[path]; ok && info.Mode() != m {
			t.Errorf("%s mode %v, want %v", path, info.Mode(), m)
		}
	}
}

// TestSyncSite: storage holds the writable path and nothing else. What the
// site ships in it is put there once and is the site's from then on; the
// code stays with the operator, whatever changes in it.
func TestSyncSite(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data := t.TempDir(), filepath.Join(t.TempDir(), "data")
	dst := filepath.Join(data, "site")
	write(t, filepath.Join(src, "index.php"), "<?php echo 1;")
	write(t, filepath.Join(src, "lib/db.php"), "<?php")
	write(t, filepath.Join(src, "assets/style.css"), "body{}")
	write(t, filepath.Join(src, "uploads/logo.png"), "logo")
	os.MkdirAll(filepath.Join(src, "uploads/2024"), 0o755)

	res, err := syncSite(siteTo(src, data))
	if err != nil || !slices.Equal(res.Put, []string{"uploads/logo.png"}) || len(res.Removed) != 0 {
		t.Fatalf("first sync: %+v err %v; want uploads/logo.png put and nothing removed", res, err)
	}
	if got, want := listTree(t, dst), []string{".", "uploads", "uploads/2024", "uploads/logo.png"}; !slices.Equal(got, want) {
		t.Errorf("storage holds %q, want %q: the writable path and what the site ships in it, no code", got, want)
	}
	root, writer := ids{0, 0}, ids{siteOwner, siteOwner}
	checkOwners(t, dst,
		map[string]ids{".": root, "uploads": writer, "uploads/2024": writer, "uploads/logo.png": writer},
		map[string]fs.FileMode{".": fs.ModeDir | 0o755, "uploads": fs.ModeDir | 0o755, "uploads/2024": fs.ModeDir | 0o755, "uploads/logo.png": 0o644})

	before := treeState(t, dst)
	if res, err := syncSite(siteTo(src, data)); err != nil || len(res.Put)+len(res.Removed) != 0 {
		t.Errorf("an unchanged site: %+v %v, want nothing put or removed", res, err)
	}
	if after := treeState(t, dst); after != before {
		t.Errorf("a second sync of an unchanged site changed storage:\nbefore:\n%safter:\n%s", before, after)
	}

	// An upload arrives on storage and the site changes its logo there;
	// the operator changes the code, its logo, and deletes a directory.
	write(t, filepath.Join(dst, "uploads/cat.png"), "cat")
	write(t, filepath.Join(dst, "uploads/logo.png"), "the site's logo")
	write(t, filepath.Join(src, "index.php"), "<?php echo 2;")
	write(t, filepath.Join(src, "uploads/logo.png"), "the operator's new logo")
	os.RemoveAll(filepath.Join(src, "lib"))
	before = treeState(t, dst)
	res, err = syncSite(siteTo(src, data))
	if err != nil || len(res.Put)+len(res.Removed) != 0 {
		t.Errorf("sync after changes: %+v %v, want nothing put or removed", res, err)
	}
	if after := treeState(t, dst); after != before {
		t.Errorf("the sync changed storage, where only uploads live:\nbefore:\n%safter:\n%s", before, after)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "uploads/cat.png")); err != nil || string(b) != "cat" {
		t.Errorf("an upload was lost: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "uploads/logo.png")); string(b) != "the site's logo" {
		t.Errorf("uploads/logo.png = %q, want the site's, which the operator's copy must not overwrite", b)
	}
}

// TestSyncSiteOwners: the owners are the caller's, as a user namespace
// shifts them, and the parents of a writable path are root's.
func TestSyncSiteOwners(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data := t.TempDir(), filepath.Join(t.TempDir(), "data")
	dst := filepath.Join(data, "site")
	write(t, filepath.Join(src, "index.php"), "<?php")
	write(t, filepath.Join(src, "uploads/logo.png"), "png") // not writable here
	write(t, filepath.Join(src, "media/uploads/a.png"), "png")
	s := siteTo(src, data)
	s.Writable = []string{"media/uploads"}
	s.Root, s.Writer = ids{100000, 100001}, ids{100033, 100034}
	if _, err := syncSite(s); err != nil {
		t.Fatal(err)
	}
	if got, want := listTree(t, dst), []string{".", "media", "media/uploads", "media/uploads/a.png"}; !slices.Equal(got, want) {
		t.Errorf("storage holds %q, want %q", got, want)
	}
	checkOwners(t, dst,
		map[string]ids{".": s.Root, "media": s.Root, "media/uploads": s.Writer, "media/uploads/a.png": s.Writer},
		map[string]fs.FileMode{"media": fs.ModeDir | 0o755, "media/uploads": fs.ModeDir | 0o755, "media/uploads/a.png": 0o644})
}

// TestSyncSiteRemovesOldCode: a stack made before releases kept its code
// on storage, beside the uploads, and a node may have added to it. The
// first sync removes each entry that is neither a writable path nor a
// parent of one, as itself, names it, and keeps every upload as it was.
func TestSyncSiteRemovesOldCode(t *testing.T) {
	hosttest.RequireRoot(t)
	src, data := t.TempDir(), filepath.Join(t.TempDir(), "data")
	dst := filepath.Join(data, "site")
	write(t, filepath.Join(src, "index.php"), "<?php echo 2;")
	for _, f := range []string{"index.php", ".htaccess", "lib/db.php", "lib/vendor/x.php", "assets/style.css", "backdoor.php", "media/thumb.php"} {
		write(t, filepath.Join(dst, f), "old "+f)
	}
	for _, f := range []string{"uploads/cat.png", "uploads/2024/dog.png", "media/uploads/a.png"} {
		write(t, filepath.Join(dst, f), "upload "+f)
	}
	for _, w := range []string{"uploads", "media/uploads"} {
		if err := os.Chown(filepath.Join(dst, w), siteOwner, siteOwner); err != nil {
			t.Fatal(err)
		}
	}
	uploads := treeState(t, filepath.Join(dst, "uploads")) + treeState(t, filepath.Join(dst, "media/uploads"))
	s := siteTo(src, data)
	s.Writable = []string{"uploads", "media/uploads"}

	res, err := syncSite(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".htaccess", "assets", "backdoor.php", "index.php", "lib", "media/thumb.php"}; !slices.Equal(res.Removed, want) {
		t.Errorf("removed %q, want %q", res.Removed, want)
	}
	if got, want := listTree(t, dst), []string{".", "media", "media/uploads", "media/uploads/a.png", "uploads", "uploads/2024", "uploads/2024/dog.png", "uploads/cat.png"}; !slices.Equal(got, want) {
		t.Errorf("storage holds %q, want %q", got, want)
	}
	if after := treeState(t, filepath.Join(dst, "uploads")) + treeState(t, filepath.Join(dst, "media/uploads")); after != uploads {
		t.Errorf("the uploads changed:\nbefore:\n%safter:\n%s", uploads, after)
	}
	if res, err := syncSite(s); err != nil || len(res.Put)+len(res.Removed) != 0 {
		t.Errorf("a second sync: %+v %v, want nothing put or removed", res, err)
	}
}

// TestSyncSitePlantedLinks: root in the storage node can plant links in
// its data directory, where the writable paths live: at the paths where an
// older stack kept its code, at a writable path or its parent, or where
// the site ships a file. A sync must never follow one: the outside stays
// as it was, and a link is removed or replaced as itself, or, inside a
// writable path, where it is the site's, left alone.
func TestSyncSitePlantedLinks(t *testing.T) {
	hosttest.RequireRoot(t)
	for _, tc := range []struct {
		name    string
		plant   string   // beneath the site on storage
		target  string   // relative targets climb from data/site/<plant>
		removed []string // what the sync reports removed
		put     []string // what the sync reports put
		kept    bool     // the link is the site's and stays
	}{
		{"remove a link at old code's file", "index.php", "../../outside/secret", []string{"index.php"}, nil, false},
		{"remove a link at old code's directory", "lib", "OUT/dir", []string{"lib"}, nil, false},
		{"remove a link beside a writable path, in its parent", "media/lib", "OUT/dir", []string{"media/lib"}, nil, false},
		{"replace a link at the writable path, chown and chmod not through it", "uploads", "../../outside/dir", nil, []string{"uploads/logo.png"}, false},
		{"replace a link at a writable path's parent, mkdir not through it", "media", "OUT/dir", nil, nil, false},
		{"put a shipped upload not through a link in its place", "uploads/logo.png", "OUT/secret", nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			src, data, outside := filepath.Join(base, "src"), filepath.Join(base, "data"), filepath.Join(base, "outside")
			dst := filepath.Join(data, "site")
			write(t, filepath.Join(src, "index.php"), "<?php echo 1;")
			write(t, filepath.Join(src, "lib/db.php"), "<?php")
			write(t, filepath.Join(src, "uploads/logo.png"), "logo")
			write(t, filepath.Join(outside, "secret"), "secret")
			write(t, filepath.Join(outside, "dir/file"), "file")
			os.Chmod(filepath.Join(outside, "dir"), 0o700)
			s := siteTo(src, data)
			s.Writable = []string{"uploads", "media/uploads"}
			if _, err := syncSite(s); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dst, "uploads/cat.png"), "cat")
			// The node plants its link.
			at := filepath.Join(dst, tc.plant)
			os.RemoveAll(at)
			target := strings.Replace(tc.target, "OUT", outside, 1)
			if err := os.Symlink(target, at); err != nil {
				t.Fatal(err)
			}
			before := treeState(t, outside)
			res, err := syncSite(s)
			if after := treeState(t, outside); after != before {
				t.Errorf("the sync changed the outside through %s -> %s (err %v):\nbefore:\n%safter:\n%s", tc.plant, target, err, before, after)
			}
			if err != nil {
				t.Fatalf("sync: %v", err)
			}
			if !slices.Equal(res.Removed, tc.removed) || !slices.Equal(res.Put, tc.put) {
				t.Errorf("removed %q and put %q, want %q and %q", res.Removed, res.Put, tc.removed, tc.put)
			}
			filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.Type()&fs.ModeSymlink != 0 && !(tc.kept && path == at) {
					t.Errorf("a planted link survived the sync: %s", path)
				}
				return nil
			})
			if info, err := os.Lstat(at); tc.kept && (err != nil || info.Mode()&fs.ModeSymlink == 0) {
				t.Errorf("the site's own link at %s was replaced: %v %v", tc.plant, info, err)
			}
			checkOwners(t, dst,
				map[string]ids{".": s.Root, "media": s.Root, "uploads": s.Writer, "media/uploads": s.Writer},
				map[string]fs.FileMode{".": fs.ModeDir | 0o755, "media": fs.ModeDir | 0o755, "uploads": fs.ModeDir | 0o755, "media/uploads": fs.ModeDir | 0o755})
			// A link at the writable path is the node deleting its own
			// uploads; anywhere else they are kept.
			if b, err := os.ReadFile(filepath.Join(dst, "uploads/cat.png")); tc.plant != "uploads" && (err != nil || string(b) != "cat") {
				t.Errorf("an upload was lost: %q %v", b, err)
			}
		})
	}
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
	before := treeState(t, outside)
	err := syncTo(src, data)
	if err == nil || !strings.Contains(err.Error(), "node storage") || !strings.Contains(err.Error(), "site/uploads/2024") || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("want a refusal naming the node, the path and the link, got %v", err)
	}
	if after := treeState(t, outside); after != before {
		t.Errorf("the outside changed:\nbefore:\n%safter:\n%s", before, after)
	}
	if _, err := os.Lstat(filepath.Join(data, "site/uploads/2024")); err != nil {
		t.Errorf("the site's own link was removed: %v", err)
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
