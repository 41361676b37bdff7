package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/render"
)

// nodeChange is what a node's new files need from its running container,
// as the renderer marks each file (render.File.OnChange).
type nodeChange struct {
	Fresh   bool     // no configs before: the node starts with these
	Restart []string // changed files only a restart applies
	Reload  []string // changed files its services reload
	Live    []string // changed files read afresh on use
}

// none reports whether nothing changed.
func (c nodeChange) none() bool {
	return !c.Fresh && len(c.Restart)+len(c.Reload)+len(c.Live) == 0
}

// restarts reports whether the node's container has to (re)start.
func (c nodeChange) restarts() bool { return c.Fresh || len(c.Restart) > 0 }

// String says it in a line, for progress and --dry-run.
func (c nodeChange) String() string {
	switch {
	case c.Fresh:
		return "new"
	case c.none():
		return "unchanged"
	}
	var parts []string
	for _, x := range []struct {
		what  string
		files []string
	}{{"restart for", c.Restart}, {"reload for", c.Reload}, {"live", c.Live}} {
		if len(x.files) > 0 {
			parts = append(parts, x.what+" "+strings.Join(x.files, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

// classify compares the files in dir with files and says what applying
// them takes. It only reads.
func classify(dir string, files []render.File) (nodeChange, error) {
	var c nodeChange
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nodeChange{Fresh: true}, nil
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.Path] = true
		path := filepath.Join(dir, f.Path)
		data, err := os.ReadFile(path)
		info, serr := os.Stat(path)
		if err == nil && serr == nil && string(data) == string(f.Data) && info.Mode().Perm() == os.FileMode(f.Mode).Perm() {
			continue
		}
		switch {
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return nodeChange{}, err
		case err != nil:
			// A new file nobody reads yet is not a reason to restart,
			// unless only a restart makes the daemon read it.
			c.Restart = append(c.Restart, f.Path)
		case f.OnChange == render.Live:
			c.Live = append(c.Live, f.Path)
		case f.OnChange == render.Reload:
			c.Reload = append(c.Reload, f.Path)
		default:
			c.Restart = append(c.Restart, f.Path)
		}
	}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !want[rel] {
			c.Restart = append(c.Restart, rel+" (removed)")
		}
		return nil
	})
	slices.Sort(c.Restart)
	return c, err
}

// writeInPlace replaces each changed file inside dir itself, each by a
// rename within its directory, so that a running container, which has dir
// bound, sees every file whole: old or new, never half written.
func (d *Driver) writeInPlace(dir string, files []render.File, paths []string, owner func(render.File) (int, int)) error {
	for _, f := range files {
		if !slices.Contains(paths, f.Path) {
			continue
		}
		path := filepath.Join(dir, f.Path)
		if !strings.HasPrefix(path, dir+string(filepath.Separator)) {
			return fmt.Errorf("rendered path %q leaves its directory", f.Path)
		}
		tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
		if err := os.WriteFile(tmp, f.Data, os.FileMode(f.Mode)); err != nil {
			return err
		}
		if err := os.Chmod(tmp, os.FileMode(f.Mode)); err != nil {
			return err
		}
		uid, gid := owner(f)
		if err := d.sys().chown(tmp, uid, gid); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}
