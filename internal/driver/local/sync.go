package local

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/bulkhead/bulkhead/internal/durable"
	"io"
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
	Src  string // the operator's copy of the site; the host's
	// Data is the storage node's data directory. The node can write it,
	// so everything in it is reached beneath a handle on it and no link in
	// it is followed. The site goes in Data/site.
	Data string
	// Manifest records the hash of every file the last sync left on
	// storage. It is the host's and must lie outside every directory
	// bound into a node.
	Manifest string
	Writable []string // the site's writable paths, such as uploads
	Root     ids      // of the read-only files and directories: root in the node
	Writer   ids      // of the writable paths: site-rw
}

// syncResult is what a sync changed on storage, by paths relative to the
// site.
type syncResult struct {
	// Copied: files new in the operator's copy or changed there since the
	// last sync.
	Copied []string
	// Removed: what storage held that the site does not (outside the
	// writable paths), removed.
	Removed []string
	// Restored: files the operator's copy has unchanged since the last
	// sync, but that storage held otherwise (changed, chmod-ed, chown-ed,
	// replaced by a link or a directory, or deleted): tampered with on the
	// storage node, and put back.
	Restored []string
}

// siteDir is where the site lives beneath the storage node's data dir.
const siteDir = "site"

// syncSite makes storage hold the site in s.Src, compared by content hash:
// a file is rewritten whenever its bytes, mode or owner on storage differ
// from the operator's copy, and what the site does not have is removed.
// Everything is s.Root's and read-only (0644, 0755), except the writable
// paths, which are s.Writer's. Nothing under a writable path is ever
// deleted or overwritten: uploads outlive syncs.
//
// A link or other oddity the node planted is replaced or removed as itself,
// or refused; it is never followed.
func syncSite(s siteSync) (*syncResult, error) {
	res := &syncResult{}
	last, err := loadManifest(s.Manifest)
	if err != nil {
		return res, err
	}
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
	want := map[string]bool{}
	sums := map[string]string{}
	err = filepath.WalkDir(s.Src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Src, path)
		if rel == "." {
			return nil
		}
		switch {
		case e.IsDir():
			want[rel] = true
			if s.writable(rel) {
				return st.dir(rel, s.Writer, !s.isWritableRoot(rel))
			}
			return st.dir(rel, s.Root, false)
		case e.Type().IsRegular():
			want[rel] = true
			if s.writable(rel) {
				// A file shipped inside an upload directory is put
				// there once and then belongs to the site.
				put, err := st.putOnce(rel, path)
				if put {
					res.Copied = append(res.Copied, rel)
				}
				return err
			}
			sum, err := hashFile(path)
			if err != nil {
				return err
			}
			sums[rel] = sum
			same, err := st.holds(rel, sum)
			if err != nil || same {
				return err
			}
			if err := st.write(rel, path, s.Root); err != nil {
				return err
			}
			if prev, ok := last[rel]; ok && prev == sum {
				res.Restored = append(res.Restored, rel)
			} else {
				res.Copied = append(res.Copied, rel)
			}
		}
		return nil // symlinks and devices are not part of a site
	})
	if err != nil {
		return res, fmt.Errorf("sync site %s to node %s: %w", s.Src, s.Node, err)
	}
	for _, w := range s.Writable {
		// The parents of a writable path stay root's.
		var parents []string
		for p := filepath.Dir(w); p != "."; p = filepath.Dir(p) {
			parents = append([]string{p}, parents...)
		}
		for _, p := range parents {
			want[p] = true
			if err := st.dir(p, s.Root, false); err != nil {
				return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
			}
		}
		want[w] = true
		if err := st.dir(w, s.Writer, false); err != nil {
			return res, fmt.Errorf("sync site to node %s: %w", s.Node, err)
		}
	}
	// Remove what the site does not have, sparing uploads. Walk does not
	// descend into links, and removing one removes the link.
	err = root.Walk(siteDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(siteDir, path)
		if rel == "." {
			return nil
		}
		if s.writable(rel) {
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if want[rel] {
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
	if err := saveManifest(s.Manifest, sums); err != nil {
		return res, err
	}
	return res, nil
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

// holds reports whether storage has at rel a regular file with sum's bytes,
// mode 0644 and the root owner.
func (st *siteStore) holds(rel, sum string) (bool, error) {
	p := st.path(rel)
	info, err := st.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sys := info.Sys().(*unix.Stat_t)
	if !info.Mode().IsRegular() || info.Mode() != 0o644 ||
		int(sys.Uid) != st.s.Root.UID || int(sys.Gid) != st.s.Root.GID {
		return false, nil
	}
	f, err := st.root.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("read %s on storage: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)) == sum, nil
}

// write replaces rel on storage with a new file holding src's bytes, in one
// rename, so that whatever stood there (a changed file, a link, a
// directory) is gone and no inode the node held is written to.
func (st *siteStore) write(rel, src string, o ids) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return st.root.WriteFile(st.path(rel), in, 0o644, o.UID, o.GID)
}

// putOnce writes rel, owned by the writer, if nothing stands there.
func (st *siteStore) putOnce(rel, src string) (bool, error) {
	_, err := st.root.Lstat(st.path(rel))
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, st.write(rel, src, st.s.Writer)
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

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// manifest maps a site file's path to the sha256 of the bytes the last
// sync left on storage.
type manifest map[string]string

func loadManifest(path string) (manifest, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return manifest{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("site manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("site manifest %s: %w; remove it and run up again", path, err)
	}
	return m, nil
}

func saveManifest(path string, m manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return durable.Write(path, data, 0o600)
}
