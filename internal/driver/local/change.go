package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/secrets"
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

// Changes says what Up would do to run p, reading and changing nothing on
// the host but what it reads: which nodes it would create, drain and
// remove, restart, reload, or only write files for.
func (d *Driver) Changes(ctx context.Context, p *plan.Plan, site string) ([]Change, error) {
	ps := d.paths(p.Stack)
	var out []Change
	store := d.releaseStore(p)
	idx, err := store.Load()
	if err != nil {
		return nil, err
	}
	id, changed, err := store.Plan(site, idx.Source)
	if err != nil {
		return nil, err
	}
	switch {
	case idx.Live == "":
		out = append(out, Change{Node: "site", Action: "release", Files: []string{"release " + id}})
	case id != idx.Source:
		out = append(out, Change{Node: "site", Action: "deploy", Files: append([]string{"release " + id}, changed...)})
	}
	for _, n := range leaving(d.runningPlans(p.Stack), p) {
		out = append(out, Change{Node: n.Name, Action: "remove"})
	}
	sec, err := d.loadSecrets(p.Stack)
	if err != nil {
		return nil, err
	}
	if sec == nil {
		if sec, err = secrets.Generate(p); err != nil {
			return nil, err
		}
	}
	// New nodes' keys, in memory only.
	if _, err := sec.Complete(p); err != nil {
		return nil, err
	}
	rs := sec.For(p)
	if err := userCertificate(p, &rs); err != nil {
		return nil, err
	}
	if err := userMail(p, &rs); err != nil {
		return nil, err
	}
	rendered, err := renderAll(p, rs, idx, nil)
	if err != nil {
		return nil, err
	}
	for i, r := range rendered {
		n := &p.Nodes[i]
		files, err := nodeFiles(r)
		if err != nil {
			return nil, err
		}
		c, err := classify(ps.node(n.Name).conf(), files)
		if err != nil {
			return nil, err
		}
		ch := Change{Node: n.Name}
		switch {
		case c.Fresh:
			ch.Action = "create"
		case len(c.Restart) > 0:
			ch.Action = "restart"
		case len(c.Reload) > 0:
			ch.Action = "reload"
		case len(c.Live) > 0:
			ch.Action = "live"
		default:
			ch.Action = "none"
			if st, err := d.sys().containerState(ctx, n.Container); err != nil || st.Status != "running" {
				ch.Action = "start"
			}
		}
		for _, x := range []struct {
			what  string
			files []string
		}{{"restart", c.Restart}, {"reload", c.Reload}, {"live", c.Live}} {
			for _, f := range x.files {
				ch.Files = append(ch.Files, f+" ("+x.what+")")
			}
		}
		out = append(out, ch)
	}
	return out, nil
}
