// Package release keeps a stack's site code as immutable releases on the
// host: one read-only directory per release, named by the hash of its
// content, and an index of the releases, which one is live, and which
// release each node runs.
//
// A release holds the site's code only. Each writable path (uploads) is
// a symbolic link to the same path under the shared directory, which
// every release shares; web servers serve those paths from there without
// following the link, and PHP code that writes beneath its own tree
// follows it.
package release

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/durable"
)

// States of a release.
const (
	Built    = "built"    // made, never live
	Live     = "live"     // what the stack serves
	Previous = "previous" // was live
	Failed   = "failed"   // failed its health check or gate, rolled back
)

// Keep is how many releases a store keeps by default, besides any a node
// still runs.
const Keep = 5

// Release is one release of the site.
type Release struct {
	ID      string    `json:"id"`   // the first 12 hex digits of Hash
	Hash    string    `json:"hash"` // sha256 of the site's code
	Created time.Time `json:"created"`
	Files   int       `json:"files"`
	Bytes   int64     `json:"bytes"`
	State   string    `json:"state"`
	// Error is why a failed release was rolled back.
	Error string `json:"error,omitempty"`
}

// Index is what a store records about its releases.
type Index struct {
	Releases []Release `json:"releases"` // oldest first
	// Live is the release the stack serves when no rollout runs.
	Live string `json:"live,omitempty"`
	// Source is the release last built from the operator's site
	// directory: an up deploys only when the site differs from it, so a
	// rollback holds until the site changes.
	Source string `json:"source,omitempty"`
	// Nodes maps each app and static node to the release it runs. During
	// a rollout they differ.
	Nodes map[string]string `json:"nodes,omitempty"`
}

// Store is a stack's releases on the host. Dir belongs to the host and is
// bound read-only into nodes; nothing in it is a node's to write. Meta
// holds the index and each release's manifest, which no node reads.
type Store struct {
	Dir  string
	Meta string
	// Shared is where a node finds the writable paths (the release's
	// links point there), e.g. /srv/shared.
	Shared string
	// Writable are the site's writable paths, relative to its root.
	Writable []string
}

func (s *Store) indexPath() string { return filepath.Join(s.Meta, "releases.json") }

// Path is the host directory of release id.
func (s *Store) Path(id string) string { return filepath.Join(s.Dir, id) }

func (s *Store) manifestPath(id string) string {
	return filepath.Join(s.Meta, "manifests", id+".json")
}

// Load reads the index; a store never written has an empty one.
func (s *Store) Load() (*Index, error) {
	idx := &Index{}
	data, err := os.ReadFile(s.indexPath())
	if errors.Is(err, os.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, idx); err != nil {
		return nil, fmt.Errorf("%s: %w", s.indexPath(), err)
	}
	return idx, nil
}

// Save writes the index durably.
func (s *Store) Save(idx *Index) error {
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return durable.Write(s.indexPath(), data, 0o644)
}

// Find returns the release whose id is id, or starts with it.
func (idx *Index) Find(id string) (*Release, error) {
	var found *Release
	for i := range idx.Releases {
		r := &idx.Releases[i]
		if r.ID == id || (len(id) >= 4 && strings.HasPrefix(r.ID, id)) {
			if found != nil {
				return nil, fmt.Errorf("release %q is ambiguous: %s and %s", id, found.ID, r.ID)
			}
			found = r
		}
	}
	if found == nil {
		var known []string
		for i := len(idx.Releases) - 1; i >= 0; i-- {
			known = append(known, idx.Releases[i].ID+" ("+idx.Releases[i].State+")")
		}
		if len(known) == 0 {
			return nil, fmt.Errorf("no release %q: the stack has no releases yet", id)
		}
		return nil, fmt.Errorf("no release %q; known releases, newest first: %s", id, strings.Join(known, ", "))
	}
	return found, nil
}

// SetState records r's new state; a release that becomes live makes the
// one live before it previous.
func (idx *Index) SetState(id, state, reason string) {
	for i := range idx.Releases {
		r := &idx.Releases[i]
		switch {
		case r.ID == id:
			r.State, r.Error = state, reason
		case state == Live && r.State == Live:
			r.State = Previous
		}
	}
	if state == Live {
		idx.Live = id
	}
}

// Manifest is the hash of every file of a release, by path relative to
// its root.
type Manifest map[string]string

// LoadManifest reads the manifest of release id; none is an empty one.
func (s *Store) LoadManifest(id string) (Manifest, error) {
	m := Manifest{}
	if id == "" {
		return m, nil
	}
	data, err := os.ReadFile(s.manifestPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	return m, json.Unmarshal(data, &m)
}

// file is one regular file of the site.
type file struct {
	rel  string
	sum  string
	size int64
}

// scan lists the site's code: its regular files outside the writable
// paths, in path order, with their hashes, and the hash of it all. Links
// and devices are not part of a site.
func (s *Store) scan(site string) ([]file, []string, string, error) {
	var files []file
	var dirs []string
	err := filepath.WalkDir(site, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(site, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if s.writable(rel) {
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		switch {
		case e.IsDir():
			dirs = append(dirs, rel)
		case e.Type().IsRegular():
			sum, size, err := HashFile(p)
			if err != nil {
				return err
			}
			files = append(files, file{rel: rel, sum: sum, size: size})
		}
		return nil
	})
	if err != nil {
		return nil, nil, "", err
	}
	h := sha256.New()
	for _, d := range dirs {
		fmt.Fprintf(h, "d %s\n", d)
	}
	for _, f := range files {
		fmt.Fprintf(h, "f %s %s\n", f.rel, f.sum)
	}
	for _, w := range s.Writable {
		fmt.Fprintf(h, "w %s %s\n", w, path.Join(s.Shared, w))
	}
	return files, dirs, hex.EncodeToString(h.Sum(nil)), nil
}

func (s *Store) writable(rel string) bool {
	for _, w := range s.Writable {
		if rel == w || strings.HasPrefix(rel, w+"/") {
			return true
		}
	}
	return false
}

// Plan says, without making anything, which release the code in site
// is, and which of its files differ from those of release base (by path:
// new, changed or gone).
func (s *Store) Plan(site, base string) (id string, changed []string, err error) {
	files, _, sum, err := s.scan(site)
	if err != nil {
		return "", nil, fmt.Errorf("site %s: %w", site, err)
	}
	old, err := s.LoadManifest(base)
	if err != nil {
		return "", nil, err
	}
	seen := map[string]bool{}
	for _, f := range files {
		seen[f.rel] = true
		if old[f.rel] != f.sum {
			changed = append(changed, f.rel)
		}
	}
	for rel := range old {
		if !seen[rel] {
			changed = append(changed, rel)
		}
	}
	slices.Sort(changed)
	return sum[:12], changed, nil
}

// Build makes the release of the code in site, or finds it made: the same
// code is the same release. fresh says whether it was made now. The
// release is read-only, owned by the host's root, and complete before it
// appears under its id.
func (s *Store) Build(site string, now time.Time) (r Release, fresh bool, err error) {
	if fi, err := os.Stat(site); err != nil {
		return r, false, fmt.Errorf("site %s: %w", site, err)
	} else if !fi.IsDir() {
		return r, false, fmt.Errorf("site %s: not a directory", site)
	}
	files, dirs, sum, err := s.scan(site)
	if err != nil {
		return r, false, fmt.Errorf("site %s: %w", site, err)
	}
	r = Release{ID: sum[:12], Hash: sum, Created: now.UTC(), Files: len(files), State: Built}
	for _, f := range files {
		r.Bytes += f.size
	}
	idx, err := s.Load()
	if err != nil {
		return r, false, err
	}
	if old, err := idx.Find(r.ID); err == nil {
		if _, err := os.Stat(s.Path(r.ID)); err == nil {
			return *old, false, nil
		}
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return r, false, err
	}
	if err := os.MkdirAll(filepath.Dir(s.manifestPath(r.ID)), 0o700); err != nil {
		return r, false, err
	}
	tmp := filepath.Join(s.Dir, ".build-"+r.ID)
	if err := os.RemoveAll(tmp); err != nil {
		return r, false, err
	}
	if err := s.write(site, tmp, files, dirs); err != nil {
		os.RemoveAll(tmp)
		return r, false, fmt.Errorf("build release %s: %w", r.ID, err)
	}
	m := Manifest{}
	for _, f := range files {
		m[f.rel] = f.sum
	}
	data, _ := json.Marshal(m)
	if err := durable.Write(s.manifestPath(r.ID), data, 0o644); err != nil {
		return r, false, err
	}
	final := s.Path(r.ID)
	if err := os.RemoveAll(final); err != nil { // a build the index lost
		return r, false, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return r, false, err
	}
	if err := syncDir(s.Dir); err != nil {
		return r, false, err
	}
	idx.Releases = slices.DeleteFunc(idx.Releases, func(o Release) bool { return o.ID == r.ID })
	idx.Releases = append(idx.Releases, r)
	return r, true, s.Save(idx)
}

// write copies the code into dir, makes each writable path a link into
// the shared directory, seals everything read-only and syncs it to disk.
func (s *Store) write(site, dir string, files []file, dirs []string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := copyFile(filepath.Join(site, f.rel), filepath.Join(dir, f.rel), f.sum); err != nil {
			return err
		}
	}
	for _, w := range s.Writable {
		link := filepath.Join(dir, w)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(path.Join(s.Shared, w), link); err != nil {
			return err
		}
	}
	// Seal, deepest first, so that the walk can still enter each
	// directory before it is sealed.
	var all []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type()&fs.ModeSymlink == 0 {
			all = append(all, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(all)))
	for _, p := range all {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o444)
		if fi.IsDir() {
			mode = 0o555
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// copyFile copies src to dst and checks that what it copied hashes to
// sum: a site file changed during the build fails it.
func copyFile(src, dst, sum string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != sum {
		return fmt.Errorf("%s changed while the release was built; run again", src)
	}
	return nil
}

// Prune removes all but the newest keep releases, sparing the live one
// and any a node runs. It returns the ids removed.
func (s *Store) Prune(idx *Index, keep int) ([]string, error) {
	inUse := map[string]bool{idx.Live: true, idx.Source: true}
	for _, id := range idx.Nodes {
		inUse[id] = true
	}
	var kept []Release
	var removed []string
	for i := len(idx.Releases) - 1; i >= 0; i-- {
		r := idx.Releases[i]
		if inUse[r.ID] || len(kept) < keep {
			kept = append(kept, r)
			continue
		}
		if err := removeSealed(s.Path(r.ID)); err != nil {
			return removed, err
		}
		os.Remove(s.manifestPath(r.ID))
		removed = append(removed, r.ID)
	}
	slices.Reverse(kept)
	idx.Releases = kept
	return removed, s.Save(idx)
}

// removeSealed removes a release directory, unsealing it first.
func removeSealed(dir string) error {
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// HashFile is the hex sha256 of a file's bytes, as manifests record it,
// and its size.
func HashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
