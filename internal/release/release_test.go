package release

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeSite(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBuild: a release holds the code, read-only, with the writable paths
// as links into the shared directory; the same code is the same release,
// and other code another.
func TestBuild(t *testing.T) {
	site := t.TempDir()
	writeSite(t, site, map[string]string{
		"index.php":            "<?php echo 1;",
		"assets/app.css":       "body{}",
		"uploads/keep.txt":     "shipped upload",
		"wp/uploads-not/a.txt": "code",
	})
	if err := os.Symlink("/etc/passwd", filepath.Join(site, "link.php")); err != nil {
		t.Fatal(err)
	}
	s := &Store{Dir: filepath.Join(t.TempDir(), "releases"), Meta: t.TempDir(), Shared: "/srv/shared", Writable: []string{"uploads"}}
	r, fresh, err := s.Build(site, time.Unix(100, 0))
	if err != nil || !fresh {
		t.Fatalf("build: %v, fresh %v", err, fresh)
	}
	if len(r.ID) != 12 || !strings.HasPrefix(r.Hash, r.ID) || r.Files != 3 || r.State != Built {
		t.Errorf("release %+v", r)
	}
	dir := s.Path(r.ID)
	if got, err := os.ReadFile(filepath.Join(dir, "index.php")); err != nil || string(got) != "<?php echo 1;" {
		t.Errorf("index.php: %q, %v", got, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "uploads")); err != nil || target != "/srv/shared/uploads" {
		t.Errorf("uploads is %q, %v; want a link to /srv/shared/uploads", target, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "link.php")); !os.IsNotExist(err) {
		t.Errorf("the site's own link was copied: %v", err)
	}
	for rel, want := range map[string]os.FileMode{"index.php": 0o444, "assets": 0o555, "assets/app.css": 0o444, ".": 0o555} {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", rel, fi.Mode().Perm(), err, want)
		}
	}
	again, fresh, err := s.Build(site, time.Unix(200, 0))
	if err != nil || fresh || again.ID != r.ID || !again.Created.Equal(r.Created) {
		t.Errorf("the same code built again: %+v fresh %v, %v; want release %s found", again, fresh, err, r.ID)
	}
	// An upload is not code: changing one is the same release.
	writeSite(t, site, map[string]string{"uploads/new.jpg": "x"})
	if same, _, err := s.Build(site, time.Unix(300, 0)); err != nil || same.ID != r.ID {
		t.Errorf("an upload changed the release: %s, %v", same.ID, err)
	}
	writeSite(t, site, map[string]string{"index.php": "<?php echo 2;"})
	next, fresh, err := s.Build(site, time.Unix(400, 0))
	if err != nil || !fresh || next.ID == r.ID {
		t.Fatalf("changed code: %+v fresh %v, %v", next, fresh, err)
	}
	idx, err := s.Load()
	if err != nil || len(idx.Releases) != 2 || idx.Releases[0].ID != r.ID || idx.Releases[1].ID != next.ID {
		t.Errorf("index %+v, %v", idx, err)
	}
	if m, err := s.LoadManifest(next.ID); err != nil || len(m) != 3 || m["index.php"] == "" {
		t.Errorf("manifest %v, %v", m, err)
	}
	// Plan names the release without making it, and what changed.
	os.Remove(filepath.Join(site, "assets/app.css"))
	writeSite(t, site, map[string]string{"new.php": "<?php"})
	id, changed, err := s.Plan(site, next.ID)
	if err != nil || id == next.ID || strings.Join(changed, ",") != "assets/app.css,new.php" {
		t.Errorf("plan: %s %v, %v; want a new id, assets/app.css and new.php", id, changed, err)
	}
	if _, err := os.Stat(s.Path(id)); !os.IsNotExist(err) {
		t.Errorf("plan made release %s", id)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, ".build-"+next.ID)); !os.IsNotExist(err) {
		t.Errorf("a build directory was left: %v", err)
	}
	// Nodes see Dir: only the releases are there, no index or manifest.
	entries, _ := os.ReadDir(s.Dir)
	if len(entries) != 2 {
		t.Errorf("%s holds %v; want the two releases only", s.Dir, entries)
	}
}

// TestBuildBadSite: a missing site or a file instead of one is an error
// that names it, and nothing is made.
func TestBuildBadSite(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "releases"), Meta: t.TempDir(), Shared: "/srv/shared"}
	file := filepath.Join(t.TempDir(), "site")
	os.WriteFile(file, nil, 0o644)
	for _, site := range []string{"/nonexistent/site", file} {
		if _, _, err := s.Build(site, time.Now()); err == nil || !strings.Contains(err.Error(), site) {
			t.Errorf("site %s: %v; want an error naming it", site, err)
		}
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("a failed build made %s", s.Dir)
	}
}

// TestFindAndStates: ids are found by prefix, an unknown id lists the
// known ones, and a release that goes live makes the last live previous.
func TestFindAndStates(t *testing.T) {
	idx := &Index{Releases: []Release{{ID: "aaaa11112222", State: Live}, {ID: "bbbb11112222", State: Built}}, Live: "aaaa11112222"}
	if r, err := idx.Find("bbbb"); err != nil || r.ID != "bbbb11112222" {
		t.Errorf("find by prefix: %v, %v", r, err)
	}
	_, err := idx.Find("cccc")
	if err == nil || !strings.Contains(err.Error(), "bbbb11112222 (built), aaaa11112222 (live)") {
		t.Errorf("unknown id: %v", err)
	}
	idx.SetState("bbbb11112222", Live, "")
	if idx.Live != "bbbb11112222" || idx.Releases[0].State != Previous || idx.Releases[1].State != Live {
		t.Errorf("after going live: %+v", idx)
	}
	idx.SetState("aaaa11112222", Failed, "health check: 500")
	if idx.Releases[0].State != Failed || idx.Releases[0].Error == "" || idx.Live != "bbbb11112222" {
		t.Errorf("after failing: %+v", idx)
	}
}

// TestPrune keeps the newest releases and every one still in use.
func TestPrune(t *testing.T) {
	site := t.TempDir()
	s := &Store{Dir: filepath.Join(t.TempDir(), "releases"), Meta: t.TempDir(), Shared: "/srv/shared"}
	var ids []string
	for i := range 8 {
		writeSite(t, site, map[string]string{"index.php": strings.Repeat("x", i+1)})
		r, _, err := s.Build(site, time.Unix(int64(i), 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	idx, _ := s.Load()
	idx.Live = ids[0] // rolled back to the oldest
	idx.Nodes = map[string]string{"app-1": ids[1]}
	removed, err := s.Prune(idx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != strings.Join([]string{ids[4], ids[3], ids[2]}, ",") {
		t.Errorf("removed %v; want %v", removed, ids[2:5])
	}
	for i, id := range ids {
		_, err := os.Stat(s.Path(id))
		if gone := i >= 2 && i <= 4; gone != os.IsNotExist(err) {
			t.Errorf("release %d: stat %v", i, err)
		}
	}
	idx, _ = s.Load()
	if len(idx.Releases) != 5 || idx.Releases[0].ID != ids[0] {
		t.Errorf("index after prune: %+v", idx.Releases)
	}
}
