package sample

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DebianWordPress is where Debian's wordpress package keeps WordPress, and
// the tree WriteWordPress copies by default. Debian's themes
// (wordpress-theme-*) go under its wp-content/themes.
const DebianWordPress = "/usr/share/wordpress"

// wordpressOwn are the files of a WordPress tree that WriteWordPress writes
// itself instead of copying, relative to the tree: Debian's wp-config.php
// reads /etc/wordpress, which no node has.
var wordpressOwn = []string{"wp-config.php", "wp-content/mu-plugins/bulkhead.php"}

// wordpressObjectCache is the object cache drop-in WriteWordPress writes,
// relative to the tree, unless the tree has one of its own: a site that
// brings its own cache keeps it.
const wordpressObjectCache = "wp-content/object-cache.php"

// WordPressResult is what WriteWordPress did.
type WordPressResult struct {
	Copied  int      // files copied from the WordPress tree
	Written []string // bulkhead's own files, as Write lists them
}

// WriteWordPress writes dir/bulkhead.yaml, a stack for WordPress, and
// dir/site, a copy of the WordPress tree at from with bulkhead's
// wp-config.php (which reads the database from the environment, with keys
// and salts made now), a must-use plugin for pretty permalinks and, unless
// the tree has one, an object cache drop-in that keeps WordPress's object
// cache in the stack's memcached. Links in
// from are copied as the files they point to: Debian's tree links into
// /etc/wordpress and /usr/share/javascript, which nodes do not see.
//
// It refuses as Write does, and writes the stack file last.
func WriteWordPress(dir, from string, force bool) (WordPressResult, error) {
	var res WordPressResult
	if _, err := os.Stat(filepath.Join(from, "wp-settings.php")); err != nil {
		hint := "give the directory that holds wp-settings.php"
		if from == DebianWordPress {
			hint = "install Debian's wordpress and wordpress-theme-twentytwentythree packages, or give your own WordPress tree with --from"
		}
		return res, fmt.Errorf("%s is not a WordPress tree (%w): %s", from, err, hint)
	}
	if !force {
		if err := refuseExisting(dir); err != nil {
			return res, err
		}
	}
	site := filepath.Join(dir, siteName)
	n, err := copyDir(from, site, "", func(rel string) bool {
		for _, own := range wordpressOwn {
			if rel == filepath.FromSlash(own) {
				return true
			}
		}
		return false
	}, 0)
	res.Copied = n
	if err != nil {
		return res, fmt.Errorf("copy WordPress from %s: %w", from, err)
	}

	write := wordpressOwn
	if _, err := os.Stat(filepath.Join(from, filepath.FromSlash(wordpressObjectCache))); errors.Is(err, fs.ErrNotExist) {
		write = append(write[:len(write):len(write)], wordpressObjectCache)
	} else if err != nil {
		return res, fmt.Errorf("copy WordPress from %s: %w", from, err)
	}
	for _, own := range write {
		data, err := files.ReadFile("files/wordpress/" + own)
		if err != nil {
			panic("sample: " + err.Error()) // embedded; cannot happen
		}
		if own == "wp-config.php" {
			if data, err = withSalts(data); err != nil {
				return res, err
			}
		}
		target := filepath.Join(site, filepath.FromSlash(own))
		if err := writeFile(target, data); err != nil {
			return res, err
		}
		res.Written = append(res.Written, target)
	}
	uploads := filepath.Join(site, "wp-content", "uploads")
	if _, err := os.Stat(uploads); err != nil {
		if err := os.MkdirAll(uploads, 0o755); err != nil {
			return res, fmt.Errorf("write WordPress: %w", err)
		}
		res.Written = append(res.Written, uploads+string(filepath.Separator))
	}
	stack, err := files.ReadFile("files/wordpress/" + stackName)
	if err != nil {
		panic("sample: " + err.Error())
	}
	target := filepath.Join(dir, stackName)
	if err := writeFile(target, stack); err != nil {
		return res, err
	}
	res.Written = append(res.Written, target)
	return res, nil
}

// refuseExisting returns an error wrapping fs.ErrExist that names
// dir/bulkhead.yaml or dir/site if either exists.
func refuseExisting(dir string) error {
	var errs []error
	for _, p := range []string{filepath.Join(dir, stackName), filepath.Join(dir, siteName)} {
		_, err := os.Lstat(p)
		switch {
		case err == nil:
			errs = append(errs, &fs.PathError{Op: "write sample", Path: p, Err: fs.ErrExist})
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("write sample: %w", err))
		}
	}
	return errors.Join(errs...)
}

// maxDepth bounds copyTree, which follows links, against a link loop.
const maxDepth = 32

// copyDir copies the files under from/rel into to/rel, following links,
// and returns how many it copied. skip says which paths, relative to from,
// to leave out.
func copyDir(from, to, rel string, skip func(string) bool, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("%s: more than %d directories deep (a link loop?)", filepath.Join(from, rel), maxDepth)
	}
	ents, err := os.ReadDir(filepath.Join(from, rel))
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(to, rel), 0o755); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		r := filepath.Join(rel, e.Name())
		if skip(r) {
			continue
		}
		src := filepath.Join(from, r)
		info, err := os.Stat(src) // follows links
		if err != nil {
			return n, err
		}
		switch {
		case info.IsDir():
			m, err := copyDir(from, to, r, skip, depth+1)
			n += m
			if err != nil {
				return n, err
			}
		case info.Mode().IsRegular():
			if err := copyFile(src, filepath.Join(to, r)); err != nil {
				return n, err
			}
			n++
		default:
			return n, fmt.Errorf("%s: not a file or a directory (%s)", src, info.Mode().Type())
		}
	}
	return n, nil
}

func copyFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, f); err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	return writeFile(dst, b.Bytes())
}

// withSalts fills wp-config.php's @KEY@ placeholders with random keys.
func withSalts(conf []byte) ([]byte, error) {
	s := string(conf)
	for _, k := range []string{"AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT"} {
		b := make([]byte, 48)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("make WordPress's %s: %w", k, err)
		}
		// Base64 has no quote or backslash to escape in PHP's '...'.
		s = strings.Replace(s, "@"+k+"@", base64.StdEncoding.EncodeToString(b), 1)
	}
	return []byte(s), nil
}
