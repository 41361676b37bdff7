package local

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// siteOwner is the uid and gid of site-rw on the storage node (www-data's),
// which owns the writable paths.
const siteOwner = 33

// syncSite makes dst (the storage node's export) hold the site in src:
// files are copied when their bytes differ, files gone from src are
// removed, and ownership is what the storage daemons require: everything
// root's and read-only, except the writable paths, which belong to site-rw.
// Nothing under a writable path is ever deleted: uploads outlive syncs.
// It returns how many files it copied and removed.
func syncSite(src, dst string, writable []string) (copied, removed int, err error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, 0, err
	}
	if err := os.Chown(dst, 0, 0); err != nil {
		return 0, 0, err
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		return 0, 0, err
	}
	isWritable := func(rel string) bool {
		for _, w := range writable {
			if rel == w || strings.HasPrefix(rel, w+"/") {
				return true
			}
		}
		return false
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "." {
			return nil
		}
		seen[rel] = true
		target := filepath.Join(dst, rel)
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			uid := 0
			if isWritable(rel) {
				uid = siteOwner
			}
			if err := os.Chown(target, uid, uid); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		case info.Mode().IsRegular():
			if isWritable(rel) {
				// A file shipped inside an upload directory is put there
				// once and then belongs to the site.
				if _, err := os.Lstat(target); err == nil {
					return nil
				}
			}
			if equalFile(path, target) {
				return nil
			}
			if err := copyFile(path, target, 0o644); err != nil {
				return err
			}
			copied++
			uid := 0
			if isWritable(rel) {
				uid = siteOwner
			}
			return os.Chown(target, uid, uid)
		}
		return nil // symlinks and devices are not part of a site
	})
	if err != nil {
		return copied, removed, fmt.Errorf("sync site %s: %w", src, err)
	}
	for _, w := range writable {
		dir := filepath.Join(dst, w)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return copied, removed, err
		}
		if err := os.Chown(dir, siteOwner, siteOwner); err != nil {
			return copied, removed, err
		}
		// The parents of a writable path stay root's.
		seen[w] = true
		for p := filepath.Dir(w); p != "."; p = filepath.Dir(p) {
			seen[p] = true
		}
	}
	// Remove what the site no longer has, deepest first, sparing uploads.
	var gone []string
	filepath.WalkDir(dst, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dst, path)
		if rel == "." {
			return nil
		}
		if isWritable(rel) {
			if e.IsDir() && rel != "" {
				return nil
			}
			return nil
		}
		if !seen[rel] {
			gone = append(gone, path)
			if e.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	for _, path := range gone {
		if err := os.RemoveAll(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return copied, removed, err
		}
		removed++
	}
	return copied, removed, nil
}

func equalFile(a, b string) bool {
	ia, err := os.Stat(a)
	if err != nil {
		return false
	}
	ib, err := os.Stat(b)
	if err != nil || ia.Size() != ib.Size() || ib.Mode().Perm() != 0o644 {
		return false
	}
	da, err := os.ReadFile(a)
	if err != nil {
		return false
	}
	db, err := os.ReadFile(b)
	return err == nil && bytes.Equal(da, db)
}
