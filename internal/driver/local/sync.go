package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/beneath"
)

// siteOwner is the uid and gid of site-rw on the storage node (www-data's),
// which owns the writable paths.
const siteOwner = 33

// ids are a uid and gid as the host sees them. Once a node runs in a user
// namespace these are the shifted host ids of its users.
type ids struct{ UID, GID int }

// siteSync is what syncSite puts where, and whose it makes it.
type siteSync struct {
	Node string // the storage node, for messages
	// Src is the operator's copy of the site; the host's. Only what it
	// ships inside a writable path is read.
	Src string
	// Data is the storage node's data directory. The node can write it,
	// so everything in it is reached beneath a handle on it and no link in
	// it is followed. The writable paths go in Data/site.
	Data     string
	Writable []string // the site's writable paths, such as uploads
	Root     ids      // of site/ and the parents of the writable paths: root in the node
	Writer   ids      // of the writable paths: site-rw
}

// syncResult is what a sync changed on storage, by paths relative to the
// site.
type syncResult struct {
	// Put: files the operator's site ships inside a writable path that
	// storage did not hold, put there; from then on they are the site's.
	Put []string
	// Removed: what storage held that is neither a writable path nor a
	// parent of one (the code of a stack made before releases, or what a
	// node put there), removed.
	Removed []string
}

// siteDir is where the site lives beneath the storage node's data dir.
const siteDir = "site"

// syncSite makes storage hold the site's writable paths and nothing else.
// The code is not on storage: every release holds its own, and shares the
// writable paths, which app and static nodes mount from storage.
//
// Each writable path is a directory of s.Writer's; its parents are
// directories of s.Root's, like site/ itself. A directory the operator's
// site ships inside a writable path is made there, s.Writer's, and a file
// it ships there is put there if nothing stands there yet; nothing under a
// writable path is ever deleted or overwritten: uploads outlive syncs.
// Everything else under site/ is removed.
//
// A link or other oddity the node planted is replaced or removed as itself,
// or, inside a writable path, refused; it is never followed.
func syncSite(s siteSync) (*syncResult, error) {
	res := &syncResult{}
	if err := os.MkdirAll(s.Data, 0o755); err != nil {
		return res, err
	}
	root, err := beneath.Open(s.Data)
	if err != nil {
		return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
	}
	defer root.Close()
	st := &siteStore{root: root, s: s}
	if err := st.dir(siteDir, s.Root, false); err != nil {
		return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
	}
	for _, w := range s.Writable {
		for _, p := range parents(w) {
			if err := st.dir(p, s.Root, false); err != nil {
				return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
			}
		}
		if err := st.dir(w, s.Writer, false); err != nil {
			return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
		}
	}
	// Walked from the top, as the site is, so that a link in the
	// operator's copy is skipped and not followed into a writable path.
	err = filepath.WalkDir(s.Src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Src, path)
		switch {
		case rel == ".":
			return nil
		case e.IsDir() && s.writable(rel):
			return st.dir(rel, s.Writer, !s.isWritableRoot(rel))
		case e.IsDir() && !s.parentOfWritable(rel):
			return fs.SkipDir
		case e.Type().IsRegular() && s.writable(rel):
			put, err := st.putOnce(rel, path)
			if put {
				res.Put = append(res.Put, rel)
			}
			return err
		}
		return nil // code, links and devices do not go to storage
	})
	if err != nil {
		return res, fmt.Errorf("sync site %s to node %s: %w", s.Src, s.Node, err)
	}
	// Remove the rest, sparing uploads. Walk does not descend into links,
	// and removing one removes the link.
	err = root.Walk(siteDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(siteDir, path)
		switch {
		case rel == ".", s.parentOfWritable(rel):
			return nil
		case s.writable(rel) && e.IsDir():
			return fs.SkipDir
		case s.writable(rel):
			return nil
		}
		if err := root.RemoveAll(path); err != nil {
			return err
		}
		res.Removed = append(res.Removed, rel)
		if e.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
	}
	return res, nil
}

// parents are the directories above w, outermost first: media for
// media/uploads.
func parents(w string) []string {
	var out []string
	for p := filepath.Dir(w); p != "."; p = filepath.Dir(p) {
		out = append([]string{p}, out...)
	}
	return out
}

func (s siteSync) writable(rel string) bool {
	for _, w := range s.Writable {
		if rel == w || strings.HasPrefix(rel, w+"/") {
			return true
		}
	}
	return false
}

func (s siteSync) isWritableRoot(rel string) bool {
	for _, w := range s.Writable {
		if rel == w {
			return true
		}
	}
	return false
}

func (s siteSync) parentOfWritable(rel string) bool {
	for _, w := range s.Writable {
		if strings.HasPrefix(w, rel+"/") {
			return true
		}
	}
	return false
}

// siteStore is the site on storage, reached beneath the data dir's handle.
type siteStore struct {
	root *beneath.Root
	s    siteSync
}

func (st *siteStore) path(rel string) string { return filepath.Join(siteDir, rel) }

// dir makes rel a directory of o's with mode 0755. Where something else
// stands (a link, a file), it is removed first, unless keep: inside a
// writable path that belongs to the site, and the sync refuses instead.
func (st *siteStore) dir(rel string, o ids, keep bool) error {
	p := rel
	if rel != siteDir {
		p = st.path(rel)
	}
	info, err := st.root.Lstat(p)
	switch {
	case err == nil && !info.IsDir() && keep:
		return fmt.Errorf("%s on storage is %s, not a directory, and a writable path's content is the site's: refused to replace it; move it aside", p, kind(info.Mode()))
	case err == nil && !info.IsDir():
		if err := st.root.RemoveAll(p); err != nil {
			return err
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err != nil || !info.IsDir() {
		if err := st.root.MkdirAll(p, 0o755); err != nil {
			return err
		}
		info, err = st.root.Lstat(p)
		if err != nil {
			return err
		}
	}
	sys := info.Sys().(*unix.Stat_t)
	if int(sys.Uid) != o.UID || int(sys.Gid) != o.GID {
		if err := st.root.Chown(p, o.UID, o.GID); err != nil {
			return err
		}
	}
	if info.Mode() != fs.ModeDir|0o755 {
		return st.root.Chmod(p, 0o755)
	}
	return nil
}

// putOnce writes rel with src's bytes, owned by the writer, if nothing
// stands there: what stands there is the site's.
func (st *siteStore) putOnce(rel, src string) (bool, error) {
	_, err := st.root.Lstat(st.path(rel))
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	return true, st.root.WriteFile(st.path(rel), in, 0o644, st.s.Writer.UID, st.s.Writer.GID)
}

// kind names a file type for a message.
func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsRegular():
		return "a file"
	case m.IsDir():
		return "a directory"
	}
	return "a " + m.Type().String()
}
