package backup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"golang.org/x/sys/unix"
)

// Dest says where each part of an archive goes. A part whose field is
// empty is verified but not written.
type Dest struct {
	DB      string // the directory that receives the dump (db/'s file)
	Uploads string // the directory that becomes the uploads tree
	Release string // the directory that becomes the release's code
	Stack   string // the directory that receives stack.yaml and secrets.age, still encrypted
}

// Owner is who owns what Extract writes.
type Owner struct{ UID, GID int }

// ExtractOptions tune Extract.
type ExtractOptions struct {
	// Overwrite lets Extract replace a destination directory that is not
	// empty. Without it such a directory is refused before anything is
	// read. The old directory is swapped out whole, once the new one is
	// complete, and then removed.
	Overwrite bool
	// Owner, if set, owns every directory and file written; otherwise the
	// extracting process does.
	Owner *Owner
	// Check, if set, is handed the manifest before the members are read;
	// an error from it stops the extraction. A restore refuses here a dump
	// its database cannot load.
	Check func(*Manifest) error
	// Identities, if set, must open secrets.age, which is checked before
	// anything is written. The secrets come back in Extracted.Secrets and
	// are written nowhere in clear.
	Identities []age.Identity
	// Progress, if set, is told the archive's bytes read. Extract reads the
	// file twice, so the total is twice its size.
	Progress Progress
}

// Extracted is what Extract did.
type Extracted struct {
	Manifest *Manifest
	// Secrets are the decrypted secrets when ExtractOptions.Identities
	// were given and the archive holds some.
	Secrets []byte
}

// Extract verifies the whole archive at path and only then writes its
// parts where dest says. Each part is written into a new directory beside
// its destination, created with fd-relative calls beneath it (os.Root),
// synced, and renamed into place only when all of the archive has been
// written and checked again; on an error before that, every new directory
// is removed and the destinations are as they were. A destination's parent is
// resolved as usual, so it must be the host's, not a directory a node can
// write.
func Extract(path string, dest Dest, opts ExtractOptions) (*Extracted, error) {
	fail := func(err error) error { return fmt.Errorf("extract %s: %w", path, err) }
	f, err := os.Open(path)
	if err != nil {
		return nil, fail(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fail(err)
	}
	size := fi.Size()
	m, t, err := readManifest(f, size)
	if err != nil {
		// The trailer or the manifest's frame is damaged or missing:
		// reading the whole stream names what is wrong best.
		if _, serr := (&scanner{}).scan(io.NewSectionReader(f, 0, size)); serr != nil {
			return nil, fail(serr)
		}
		return nil, fail(err)
	}
	if opts.Check != nil {
		if err := opts.Check(m); err != nil {
			return nil, fail(err)
		}
	}
	x := &extractor{owner: opts.Owner}
	defer x.close()
	for _, p := range []*part{
		{name: dbDir, dir: dest.DB}, {name: uploadsDir, dir: dest.Uploads},
		{name: releaseDir, dir: dest.Release}, {name: stackName, dir: dest.Stack},
	} {
		if p.dir == "" || !holds(m, p.name) {
			continue
		}
		if err := p.ready(opts.Overwrite); err != nil {
			return nil, fail(err)
		}
		x.parts = append(x.parts, p)
	}

	var done, reported int64
	read := func(n int) {
		done += int64(n)
		if opts.Progress != nil && (done-reported >= 1<<20 || done == 2*size) {
			reported = done
			opts.Progress(done, 2*size)
		}
	}
	// First the whole archive is checked, against the manifest the
	// trailer points at, and the secrets opened.
	s := &scanner{want: m, wantSum: t.sum, keepSecrets: len(opts.Identities) > 0, read: read}
	if _, err := s.scan(io.NewSectionReader(f, 0, size)); err != nil {
		return nil, fail(err)
	}
	out := &Extracted{Manifest: m}
	if s.secrets != nil {
		if out.Secrets, err = openSecrets(s.secrets, opts.Identities); err != nil {
			return nil, fail(err)
		}
	}
	// Then it is read again and written, each member checked again as it
	// comes: the file could have changed in between.
	if err := x.stage(); err != nil {
		x.abort()
		return nil, fail(err)
	}
	s = &scanner{want: m, wantSum: t.sum, visit: x.visit, read: read}
	if _, err := s.scan(io.NewSectionReader(f, 0, size)); err != nil {
		x.abort()
		return nil, fail(err)
	}
	if err := x.finish(opts.Overwrite); err != nil {
		x.abort()
		return nil, fail(err)
	}
	return out, nil
}

// holds says whether the manifest has a member of part.
func holds(m *Manifest, part string) bool {
	for _, mb := range m.Members {
		if p, _ := split(mb.Path); p == part {
			return true
		}
	}
	return false
}

// split names the part a member belongs to and its path within it.
func split(name string) (part, rel string) {
	top, rest, nested := strings.Cut(name, "/")
	switch top {
	case stackName, secretsName:
		return stackName, name
	}
	if !nested {
		return top, "."
	}
	return top, rest
}

// part is one destination and what is being written for it.
type part struct {
	name  string // dbDir, uploadsDir, releaseDir or stackName
	dir   string
	stage string
	root  *os.Root
	dirs  []Member // its directories, parents first, with rel paths
	full  bool     // dir is there and not empty
}

// ready checks that dir may be written: absent, empty, or let be replaced.
func (p *part) ready(overwrite bool) error {
	fi, err := os.Lstat(p.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory but %v; move it away", p.dir, fi.Mode().Type())
	}
	d, err := os.Open(p.dir)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if err != nil && err != io.EOF {
		return err
	}
	p.full = len(names) > 0
	if p.full && !overwrite {
		return &Error{Kind: ErrNotEmpty, Err: fmt.Errorf("%s holds files; empty it, or overwrite to replace it whole", p.dir)}
	}
	return nil
}

type extractor struct {
	parts []*part
	owner *Owner
}

// stage makes each part's new directory beside its destination.
func (x *extractor) stage() error {
	for _, p := range x.parts {
		parent := filepath.Dir(p.dir)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		stage, err := os.MkdirTemp(parent, "."+filepath.Base(p.dir)+".restore-")
		if err != nil {
			return err
		}
		p.stage = stage
		if p.root, err = os.OpenRoot(stage); err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) part(name string) *part {
	for _, p := range x.parts {
		if p.name == name {
			return p
		}
	}
	return nil
}

// visit writes one member into its part's new directory. The scanner has
// checked its name and that its directory came before it.
func (x *extractor) visit(m Member, content io.Reader) error {
	name, rel := split(m.Path)
	p := x.part(name)
	if p == nil {
		return nil
	}
	if m.Dir {
		if rel != "." {
			if err := p.root.Mkdir(rel, 0o700); err != nil {
				return err
			}
		}
		d := m
		d.Path = rel
		p.dirs = append(p.dirs, d)
		return nil
	}
	f, err := p.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, content)
	if err == nil && x.owner != nil {
		err = f.Chown(x.owner.UID, x.owner.GID)
	}
	if err == nil {
		err = f.Chmod(m.Perm()) // after chown, which may clear mode bits
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.root.Chtimes(rel, m.ModTime, m.ModTime)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", m.Path, err)
	}
	return nil
}

// finish seals each part's directories, syncs it, and puts it in place.
func (x *extractor) finish(overwrite bool) error {
	for _, p := range x.parts {
		// Children before parents: setting a directory's time, then
		// writing in it, would change the time again.
		for i := len(p.dirs) - 1; i >= 0; i-- {
			d := p.dirs[i]
			if x.owner != nil {
				if err := p.root.Lchown(d.Path, x.owner.UID, x.owner.GID); err != nil {
					return err
				}
			}
			if err := p.root.Chmod(d.Path, d.Perm()); err != nil {
				return err
			}
			if err := p.root.Chtimes(d.Path, d.ModTime, d.ModTime); err != nil {
				return err
			}
		}
		fd, err := unix.Open(p.stage, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Syncfs(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("sync %s: %w", p.stage, err)
		}
	}
	for _, p := range x.parts {
		if err := p.place(overwrite); err != nil {
			return err
		}
	}
	return nil
}

// place renames the new directory to the destination: over it when it is
// absent or empty, or, to overwrite, swapped with it in one step, the old
// one then removed.
func (p *part) place(overwrite bool) error {
	// unix's rename, not os.Rename, which refuses any directory there.
	err := unix.Rename(p.stage, p.dir)
	if err != nil && overwrite && (errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)) {
		err = unix.Renameat2(unix.AT_FDCWD, p.stage, unix.AT_FDCWD, p.dir, unix.RENAME_EXCHANGE)
		if err == nil {
			// p.stage now holds the old directory.
			if rerr := os.RemoveAll(p.stage); rerr != nil {
				return fmt.Errorf("%s is in place, but removing the old one (now %s) failed: %w", p.dir, p.stage, rerr)
			}
			p.stage = ""
			return syncDir(filepath.Dir(p.dir))
		}
		err = &os.LinkError{Op: "exchange", Old: p.stage, New: p.dir, Err: err}
	}
	if err != nil {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return &Error{Kind: ErrNotEmpty, Err: fmt.Errorf("%s was filled while the archive was extracted", p.dir)}
		}
		return &os.LinkError{Op: "rename", Old: p.stage, New: p.dir, Err: err}
	}
	p.stage = ""
	return syncDir(filepath.Dir(p.dir))
}

func (x *extractor) close() {
	for _, p := range x.parts {
		if p.root != nil {
			p.root.Close()
			p.root = nil
		}
	}
}

// abort removes every new directory not yet in place.
func (x *extractor) abort() {
	x.close()
	for _, p := range x.parts {
		if p.stage != "" {
			os.RemoveAll(p.stage)
		}
	}
}
