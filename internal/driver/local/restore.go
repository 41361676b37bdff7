package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/beneath"
	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/durable"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/secrets"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// RestoreOptions and RestoreResult are the backend's.
type (
	RestoreOptions = driver.RestoreOptions
	RestoreResult  = driver.RestoreResult
)

// restoreStage is where a restore extracts an archive before it puts
// each part in place: the host's, inside the stack's directory.
func (p paths) restoreStage() string { return filepath.Join(p.stack, "restore") }

// Restore puts the backup archive at path back as the stack p, in these
// steps:
//
//  1. The stack must be down or new, and hold no data (its db and storage
//     nodes' disks) unless o.Force. Nothing is written before the whole
//     archive has been checked: its manifest through the trailer, its dump
//     against p's database (catalog AcceptsDump, and LoadsVersion with the
//     host's server; when that is not installed yet, right after up
//     installs it), every member against the manifest, and its secrets
//     against o.Identities. Only then does
//     backup.Extract write it, to a directory of the host's in the
//     stack's.
//  2. With o.Force the db and storage nodes' disks go. The archive's
//     secrets become the stack's when o.Identities opened them.
//  3. The archive's code becomes a release. Written to the site
//     directory when that is empty or absent, it goes live; a site
//     directory that holds other code wins, as it would at an up, and the
//     archive's release stays in the store for a rollback.
//  4. Up brings the stack up.
//  5. The uploads go onto the storage node, owned as syncSite makes them
//     and reached beneath its data directory; the dump loads in the db
//     node with the catalog's Restore argv; the cache nodes restart, so
//     that no page cached before the dump was loaded is served.
//
// A stack that did not exist before is removed again when a step after
// the check fails.
func (d *Driver) Restore(ctx context.Context, p *plan.Plan, path string, o RestoreOptions) (*RestoreResult, error) {
	ps := d.paths(p.Stack)
	_, statErr := os.Stat(ps.stack)
	existed := statErr == nil
	_, statErr = os.Stat(d.root())
	rootExisted := statErr == nil
	if err := d.restorable(p, o.Force); err != nil {
		return nil, err
	}
	db, desc := restoreDB(p)
	here, err := d.serverVersion(ctx, desc)
	if err != nil {
		return nil, err
	}
	stage := ps.restoreStage()
	dest := backup.Dest{
		DB:      filepath.Join(stage, "db"),
		Uploads: filepath.Join(stage, "uploads"),
		Release: filepath.Join(stage, "release"),
	}
	x, err := backup.Extract(path, dest, backup.ExtractOptions{
		// The stage is the host's and this restore's: a leftover of an
		// interrupted one is replaced.
		Overwrite:  true,
		Check:      func(m *backup.Manifest) error { return restoreCheck(p, db, desc, m, here, len(o.Identities) > 0) },
		Identities: o.Identities,
		Progress:   o.Progress,
	})
	if err != nil {
		// An archive that failed its checks wrote nothing; one that
		// failed while it was written (a full disk) left the stage's
		// parents, empty, which a new stack did not have.
		if !existed {
			os.Remove(stage)
			os.Remove(ps.stack)
		}
		if !rootExisted {
			os.Remove(d.root())
		}
		return nil, err
	}
	defer removeStage(stage)
	res, err := d.restore(ctx, p, x, stage, here, o)
	if err != nil && !existed {
		d.progress("restore failed; removing the stack %s it made", p.Stack)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		removeStage(stage)
		if derr := d.Down(cctx, p.Stack, true); derr != nil {
			return nil, errors.Join(err, fmt.Errorf("remove the restored stack (run 'bulkhead down --purge' to finish): %w", derr))
		}
	}
	return res, err
}

// restore is Restore's steps 2 to 5, once the archive is extracted to
// stage. here is the version of the database's server on this host, or ""
// when it was not installed before up.
func (d *Driver) restore(ctx context.Context, p *plan.Plan, x *backup.Extracted, stage, here string, o RestoreOptions) (*RestoreResult, error) {
	ps := d.paths(p.Stack)
	res := &RestoreResult{Manifest: x.Manifest}
	// Extract made the stack's directory as any directory; it holds the
	// stack's secrets.
	if err := os.Chmod(ps.stack, 0o700); err != nil {
		return nil, err
	}
	unlock, err := d.lockChange(ctx, p.Stack, "restore")
	if err != nil {
		return nil, err
	}
	// Checked again under the lock: an up may have run since.
	if err := d.restorable(p, o.Force); err != nil {
		unlock()
		return nil, err
	}
	if o.Force {
		if res.Replaced, err = d.dropData(p); err != nil {
			unlock()
			return nil, err
		}
	}
	if x.Secrets != nil {
		if err := d.restoreSecrets(p, x.Secrets); err != nil {
			unlock()
			return nil, err
		}
		res.Secrets = true
	}
	if res.Archived, res.Release, res.SiteWritten, err = d.restoreRelease(ctx, p, filepath.Join(stage, "release"), o.SiteDir); err != nil {
		unlock()
		return nil, err
	}
	unlock()

	if res.Up, err = d.Up(ctx, p, o.UpOptions); err != nil {
		return nil, err
	}
	unlock, err = d.lockChange(ctx, p.Stack, "restore")
	if err != nil {
		return nil, err
	}
	defer unlock()
	j, err := loadJournal(ps.journal(), p.Stack)
	if err != nil {
		return nil, err
	}
	if db, desc := restoreDB(p); db != nil && x.Manifest.DB != nil && here == "" {
		// Up installed the server: the check restoreCheck could not
		// make, before anything goes onto the new stack.
		if here, err = d.serverVersion(ctx, desc); err == nil && here == "" {
			err = fmt.Errorf("%s is not installed on this host after up", desc.Backup.Version[0])
		}
		if err == nil {
			err = desc.LoadsVersion(x.Manifest.DB.Version, here)
		}
		if err != nil {
			return nil, fmt.Errorf("stack %s cannot load the archive's dump: %w", p.Stack, err)
		}
	}
	if err := d.restoreStorage(p, j, filepath.Join(stage, "uploads"), res); err != nil {
		return nil, err
	}
	if db, desc := restoreDB(p); db != nil && x.Manifest.DB != nil {
		dump := filepath.Join(stage, "db", x.Manifest.DB.DumpFile)
		if res.DumpBytes, err = d.loadDump(ctx, p, db, desc, dump); err != nil {
			return nil, err
		}
		if err := d.restartCaches(ctx, p, j, o.Wait); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// restoreDB is p's database node and its descriptor, or nils.
func restoreDB(p *plan.Plan) (*plan.Node, *catalog.Descriptor) {
	dbs := p.Role(spec.RoleDB)
	if len(dbs) == 0 {
		return nil, nil
	}
	desc, err := catalog.Lookup(dbs[0].Role, dbs[0].Software)
	if err != nil || desc.Backup == nil {
		return nil, nil
	}
	return dbs[0], desc
}

// serverVersion is the version of desc's server on this host, which the
// db node will run, or "" when desc is nil or the server is not installed
// yet (up installs it).
func (d *Driver) serverVersion(ctx context.Context, desc *catalog.Descriptor) (string, error) {
	if desc == nil {
		return "", nil
	}
	out, err := d.sys().serverVersion(ctx, desc.Backup.Version)
	if errors.Is(err, exec.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("this host's %s version: %w", desc.Software, err)
	}
	v, err := desc.Backup.ParseVersion(out)
	if err != nil {
		return "", fmt.Errorf("this host's %s version: %w", desc.Software, err)
	}
	return v, nil
}

// restoreCheck refuses, from its manifest, an archive the stack p cannot
// take: a dump its database cannot load (another format, or a newer
// release than here, the host's server, when that is installed), or
// secrets to open that it does not hold.
func restoreCheck(p *plan.Plan, db *plan.Node, desc *catalog.Descriptor, m *backup.Manifest, here string, identities bool) error {
	var errs []error
	if m.DB != nil {
		if db == nil {
			errs = append(errs, fmt.Errorf("the archive holds a %s dump, but stack %s has no database to load it into", m.DB.Software, p.Stack))
		} else if err := desc.AcceptsDump(m.DB.DumpFormat); err != nil {
			errs = append(errs, fmt.Errorf("stack %s cannot load the archive's dump: %w", p.Stack, err))
		} else if here != "" {
			if err := desc.LoadsVersion(m.DB.Version, here); err != nil {
				errs = append(errs, fmt.Errorf("stack %s cannot load the archive's dump: %w", p.Stack, err))
			}
		}
	}
	if identities && !m.HasSecrets() {
		errs = append(errs, errors.New("the archive holds no secrets (it was made without --include-secrets), so there is nothing to decrypt; restore it without a passphrase or identity"))
	}
	return errors.Join(errs...)
}

// dataNodes are the nodes whose disks hold the stack's data: the database
// and the uploads.
func dataNodes(p *plan.Plan) []*plan.Node {
	return append(p.Role(spec.RoleDB), p.Role(spec.RoleStorage)...)
}

// restorable refuses a stack that is up, and without force one that holds
// data. It only reads.
func (d *Driver) restorable(p *plan.Plan, force bool) error {
	ps := d.paths(p.Stack)
	j, err := loadJournal(ps.journal(), p.Stack)
	if err != nil {
		return err
	}
	if len(j.Objects) > 0 {
		return fmt.Errorf("stack %s is up on this host: restore puts an archive back only into a stack that is down or new; take it down first ('bulkhead down' keeps its data, which restore --force then replaces), or restore into another stack with -f FILE", p.Stack)
	}
	if force {
		return nil
	}
	var held []string
	for _, n := range dataNodes(p) {
		np := ps.node(n.Name)
		for _, path := range []string{np.image(), np.legacyData()} {
			if _, err := os.Lstat(path); err == nil {
				held = append(held, fmt.Sprintf("%s's disk %s", n.Name, path))
			}
		}
	}
	if len(held) > 0 {
		return fmt.Errorf("stack %s holds data that the restore would replace: %s; 'bulkhead down --purge' deletes it first, or restore --force replaces it", p.Stack, strings.Join(held, ", "))
	}
	return nil
}

// dropData deletes the db and storage nodes' disks of a stack that is
// down, for a restore that replaces them; up makes them afresh.
func (d *Driver) dropData(p *plan.Plan) ([]string, error) {
	var dropped []string
	for _, n := range dataNodes(p) {
		np := d.paths(p.Stack).node(n.Name)
		if _, err := os.Lstat(np.image()); err == nil {
			d.progress("restore: deleting %s's disk, which the archive replaces", n.Name)
			if err := d.sys().removeImage(np.image()); err != nil {
				return dropped, fmt.Errorf("node %s: %w", n.Name, err)
			}
			dropped = append(dropped, n.Name+"'s disk")
		}
		if _, err := os.Lstat(np.legacyData()); err == nil {
			if err := os.RemoveAll(np.legacyData()); err != nil {
				return dropped, err
			}
			dropped = append(dropped, n.Name+"'s data")
		}
	}
	return dropped, nil
}

// restoreSecrets makes the archive's secrets the stack's. up completes
// them for p (a node the archived stack lacked gets its keys) and renews
// the edge's certificate for p's domain.
func (d *Driver) restoreSecrets(p *plan.Plan, data []byte) error {
	var s secrets.Stack
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("the archive's secrets: %w", err)
	}
	path := d.paths(p.Stack).secretsFile()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	d.progress("restore: the archive's secrets are the stack's")
	return durable.Write(path, data, 0o600)
}

// restoreRelease makes the archive's code, extracted to src, a release of
// p, and decides which release goes live: the archive's, written to the
// site directory when that is empty or absent; else the site directory's,
// checked as up checks new code, which wins as it would at an up. Either is
// marked live and the site's source, so that the up that follows rolls out
// nothing.
func (d *Driver) restoreRelease(ctx context.Context, p *plan.Plan, src, site string) (archived, live string, written bool, err error) {
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return "", "", false, nil // an archive without code: up releases the site's
	}
	store := d.releaseStore(p)
	r, _, err := store.Build(src, time.Now())
	if err != nil {
		return "", "", false, fmt.Errorf("the archive's code: %w", err)
	}
	empty, err := emptyDir(site)
	if err != nil {
		return "", "", false, err
	}
	if empty {
		d.progress("restore: writing the archive's code (release %s) to %s", r.ID, site)
		if err := copyCode(src, site); err != nil {
			return "", "", false, fmt.Errorf("write the archive's code to %s: %w", site, err)
		}
		written = true
	} else if id, _, err := store.Plan(site, r.ID); err != nil {
		return "", "", false, err
	} else if id != r.ID {
		d.progress("restore: %s holds other code than the archive's release %s; the site directory wins, as at an up, and %s stays in the store ('bulkhead rollback %s' serves it)", site, r.ID, r.ID, r.ID)
		last, err := store.LoadManifest(r.ID)
		if err != nil {
			return "", "", false, err
		}
		if err := d.lintSite(ctx, p, site, last); err != nil {
			return "", "", false, err
		}
	}
	lr, _, err := store.Build(site, time.Now())
	if err != nil {
		return "", "", false, err
	}
	idx, err := store.Load()
	if err != nil {
		return "", "", false, err
	}
	idx.SetState(lr.ID, release.Live, "")
	idx.Source, idx.Nodes = lr.ID, nil
	return r.ID, lr.ID, written, store.Save(idx)
}

// emptyDir says whether dir is absent or an empty directory.
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return len(names) == 0, err
}

// copyCode copies a release's code, extracted from an archive (only
// directories and regular files), into the site directory dst as an
// operator's working copy: writable by its owner, who is the owner of dst
// or, when dst is new, of its parent.
func copyCode(src, dst string) error {
	owner := dst
	if _, err := os.Stat(dst); errors.Is(err, fs.ErrNotExist) {
		owner = filepath.Dir(dst)
	}
	fi, err := os.Stat(owner)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	uid, gid := int(st.Uid), int(st.Gid)
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case e.Type().IsRegular():
			mode := fs.FileMode(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			if err := copyRegular(path, target, mode); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is %v; an archive's code holds only directories and files", path, info.Mode().Type())
		}
		if err := os.Lchown(target, uid, gid); err != nil {
			return err
		}
		return os.Chtimes(target, info.ModTime(), info.ModTime())
	})
}

func copyRegular(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// restoreStorage puts the archive's uploads, extracted to src, onto p's
// storage node.
func (d *Driver) restoreStorage(p *plan.Plan, j *journal, src string, res *RestoreResult) error {
	st := p.Role(spec.RoleStorage)
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) || len(st) == 0 {
		return nil
	}
	nodeIDs := j.nodeIDs(st[0].Name)
	r, err := d.sys().restoreUploads(uploadsRestore{
		Node: st[0].Name, Src: src, Data: d.paths(p.Stack).node(st[0].Name).data(),
		Writable: p.Site.Writable,
		Root:     ids{hostID(nodeIDs, 0), hostID(nodeIDs, 0)},
		Writer:   ids{hostID(nodeIDs, siteOwner), hostID(nodeIDs, siteOwner)},
	})
	if err != nil {
		return err
	}
	res.Files, res.Bytes, res.Skipped = r.Files, r.Bytes, r.Skipped
	d.progress("restore: %d files (%s) of %s on %s", r.Files, humanBytes(r.Bytes), strings.Join(p.Site.Writable, ", "), st[0].Name)
	if len(r.Skipped) > 0 {
		d.progress("restore: left out what is not a writable path of this stack: %s", strings.Join(r.Skipped, ", "))
	}
	return nil
}

// uploadsRestore is what restoreUploads puts where, and whose it makes
// it: as siteSync, but from an archive.
type uploadsRestore struct {
	Node string // the storage node, for messages
	// Src is the archive's uploads, extracted on the host: what the
	// storage node's site directory held. Only directories and regular
	// files are in it.
	Src string
	// Data is the storage node's data directory, which the node can
	// write: everything in it is reached beneath a handle on it.
	Data     string
	Writable []string
	Root     ids // of site/ and the parents of the writable paths
	Writer   ids // of the writable paths and all in them
}

type uploadsResult struct {
	Files   int
	Bytes   int64
	Skipped []string // paths outside the writable paths, left out
}

// restoreUploads writes the archive's uploads into the storage node's
// site directory, which syncSite has made: each writable path and what is
// in it, s.Writer's with the archive's modes and times, replacing what
// stands at the same path. What the archive holds outside the writable
// paths is not the site's to hold on storage (syncSite would remove it),
// and is left out.
func restoreUploads(s uploadsRestore) (*uploadsResult, error) {
	res := &uploadsResult{}
	root, err := beneath.Open(s.Data)
	if err != nil {
		return nil, fmt.Errorf("restore uploads to node %s: %w", s.Node, err)
	}
	defer root.Close()
	sync := siteSync{Node: s.Node, Data: s.Data, Writable: s.Writable, Root: s.Root, Writer: s.Writer}
	st := &siteStore{root: root, s: sync}
	if err := st.dir(siteDir, s.Root, false); err != nil {
		return nil, fmt.Errorf("restore uploads to node %s: %w", s.Node, err)
	}
	for _, w := range s.Writable {
		for _, p := range parents(w) {
			if err := st.dir(p, s.Root, false); err != nil {
				return nil, fmt.Errorf("restore uploads to node %s: %w", s.Node, err)
			}
		}
		if err := st.dir(w, s.Writer, false); err != nil {
			return nil, fmt.Errorf("restore uploads to node %s: %w", s.Node, err)
		}
	}
	type dirTime struct {
		rel string
		t   time.Time
	}
	var dirs []dirTime
	err = filepath.WalkDir(s.Src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Src, path)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case rel == ".":
			return nil
		case !sync.writable(rel) && !sync.parentOfWritable(rel):
			res.Skipped = append(res.Skipped, filepath.ToSlash(rel))
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		case e.IsDir() && sync.parentOfWritable(rel):
			return nil // made above, root's
		case e.IsDir():
			dst := st.path(rel)
			if !sync.isWritableRoot(rel) {
				if err := root.MkdirAll(dst, 0o700); err != nil {
					return err
				}
				if err := root.Chown(dst, s.Writer.UID, s.Writer.GID); err != nil {
					return err
				}
				if err := root.Chmod(dst, info.Mode().Perm()); err != nil {
					return err
				}
			}
			dirs = append(dirs, dirTime{dst, info.ModTime()})
			return nil
		case e.Type().IsRegular():
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			dst := st.path(rel)
			if err := root.WriteFile(dst, in, info.Mode().Perm(), s.Writer.UID, s.Writer.GID); err != nil {
				return err
			}
			if err := root.Chtimes(dst, info.ModTime(), info.ModTime()); err != nil {
				return err
			}
			res.Files++
			res.Bytes += info.Size()
			return nil
		}
		return fmt.Errorf("%s is %v; an archive's uploads hold only directories and files", path, info.Mode().Type())
	})
	if err != nil {
		return res, fmt.Errorf("restore uploads to node %s: %w", s.Node, err)
	}
	// Deepest first: writing in a directory moves its time.
	for _, d := range slices.Backward(dirs) {
		if err := root.Chtimes(d.rel, d.t, d.t); err != nil {
			return res, fmt.Errorf("restore uploads to node %s: %w", s.Node, err)
		}
	}
	return res, nil
}

// loadDump loads the dump at file into the database of node n, with the
// catalog's Restore argv run inside the node.
func (d *Driver) loadDump(ctx context.Context, p *plan.Plan, n *plan.Node, desc *catalog.Descriptor, file string) (int64, error) {
	argv, err := render.BackupVars(p, n, render.DefaultLayout()).Expand(desc.Backup.Restore)
	if err != nil {
		return 0, fmt.Errorf("the restore command of %s: %w", n.Software, err)
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	d.progress("restore: loading the dump (%s) into %s", humanBytes(fi.Size()), n.Name)
	out := &tailBuffer{max: 4 << 10}
	if err := d.sys().execContainer(ctx, n.Container, argv, f, out, out); err != nil {
		return 0, fmt.Errorf("load the dump into node %s (%s): %w: %s", n.Name, strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return fi.Size(), nil
}

// restartCaches restarts p's cache nodes, which hold everything in
// memory: pages and queries cached before the dump was loaded go.
func (d *Driver) restartCaches(ctx context.Context, p *plan.Plan, j *journal, wait time.Duration) error {
	caches := p.Role(spec.RoleCache)
	for _, n := range caches {
		d.progress("restore: restarting %s, so that nothing cached before the restore is served", n.Name)
		if err := d.sys().deleteContainer(ctx, n.Container, true); err != nil {
			return err
		}
		if err := d.startContainer(ctx, p, n, j); err != nil {
			return err
		}
	}
	if len(caches) == 0 {
		return nil
	}
	return d.waitHealthy(ctx, p, j, wait)
}

// tailBuffer keeps the last max bytes written to it: a tool's last words.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// removeStage removes the restore's stage, whose directories may be
// read-only (a release's are).
func removeStage(dir string) {
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.RemoveAll(dir)
}
