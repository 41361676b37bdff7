package sample

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/spec"
)

// fakeWordPress makes a WordPress tree shaped like Debian's: a wp-config.php
// of its own, and links to files and a directory outside the tree.
func fakeWordPress(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	outside := filepath.Join(root, "javascript")
	from := filepath.Join(root, "wordpress")
	for name, data := range map[string]string{
		"javascript/underscore.js":                "underscore",
		"javascript/crop/cropper.js":              "cropper",
		"wordpress/wp-settings.php":               "<?php // settings",
		"wordpress/wp-config.php":                 "<?php require '/etc/wordpress/config.php';",
		"wordpress/wp-content/themes/t/style.css": "body{}",
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	js := filepath.Join(from, "wp-includes", "js")
	if err := os.MkdirAll(js, 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"underscore.js": filepath.Join(outside, "underscore.js"), "crop": filepath.Join(outside, "crop")} {
		if err := os.Symlink(target, filepath.Join(js, link)); err != nil {
			t.Fatal(err)
		}
	}
	return from
}

func TestWriteWordPress(t *testing.T) {
	from := fakeWordPress(t)
	dir := filepath.Join(t.TempDir(), "blog")
	res, err := WriteWordPress(dir, from, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 4 {
		t.Errorf("copied %d files, want 4 (all but wp-config.php)", res.Copied)
	}
	site := filepath.Join(dir, "site")
	for name, want := range map[string]string{
		"wp-includes/js/underscore.js":       "underscore",
		"wp-includes/js/crop/cropper.js":     "cropper",
		"wp-content/themes/t/style.css":      "body{}",
		"wp-content/mu-plugins/bulkhead.php": "got_url_rewrite",
		"wp-config.php":                      "getenv($name)",
		"wp-content/object-cache.php":        "class WP_Object_Cache",
	} {
		p := filepath.Join(site, filepath.FromSlash(name))
		info, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !info.Mode().IsRegular() {
			t.Errorf("%s is %s, want a file: nodes see only the site", name, info.Mode().Type())
		}
		b, _ := os.ReadFile(p)
		if !strings.Contains(string(b), want) {
			t.Errorf("%s = %q, want it to hold %q", name, b, want)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(site, "wp-config.php"))
	if strings.Contains(string(conf), "/etc/wordpress") || strings.Contains(string(conf), "@AUTH_KEY@") {
		t.Errorf("wp-config.php is Debian's or lacks its keys:\n%s", conf)
	}
	keys := regexp.MustCompile(`define\('(\w+_(?:KEY|SALT))',\s*'([A-Za-z0-9+/]{64})'\)`).FindAllStringSubmatch(string(conf), -1)
	if len(keys) != 8 {
		t.Errorf("wp-config.php has %d random keys and salts, want 8", len(keys))
	}
	if info, err := os.Stat(filepath.Join(site, "wp-content", "uploads")); err != nil || !info.IsDir() {
		t.Errorf("no wp-content/uploads: %v", err)
	}

	// The stack file is valid, and says what WordPress needs.
	b, err := os.ReadFile(filepath.Join(dir, "bulkhead.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := spec.Load(filepath.Join(dir, "bulkhead.yaml"), b, spec.Env{DirExists: func(p string) bool { return p == site }})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Site.Writable; len(got) != 1 || got[0] != "wp-content/uploads" {
		t.Errorf("writable = %v", got)
	}
	for _, want := range []string{"/wp-content/uploads/", "/wp-includes/", "*.css", "*.woff2"} {
		if !strings.Contains(strings.Join(st.Site.Static, " "), want) {
			t.Errorf("static %v lacks %s", st.Site.Static, want)
		}
	}

	// Again: refused without force, and with force the same files again,
	// with new keys.
	if _, err := WriteWordPress(dir, from, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("a second init without --force: %v, want ErrExist", err)
	}
	if _, err := WriteWordPress(dir, from, true); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(site, "wp-config.php"))
	if string(again) == string(conf) {
		t.Errorf("--force kept the old keys")
	}
}

// TestWriteWordPressOwnObjectCache: a tree that brings its own object cache
// drop-in keeps it; bulkhead's is written only where there is none.
func TestWriteWordPressOwnObjectCache(t *testing.T) {
	from := fakeWordPress(t)
	mine := "<?php // my own object cache"
	if err := os.WriteFile(filepath.Join(from, "wp-content", "object-cache.php"), []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "blog")
	res, err := WriteWordPress(dir, from, false)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "site", "wp-content", "object-cache.php")); string(b) != mine {
		t.Errorf("wp-content/object-cache.php = %q, want the tree's own %q", b, mine)
	}
	for _, w := range res.Written {
		if strings.HasSuffix(w, "object-cache.php") {
			t.Errorf("WriteWordPress says it wrote %s", w)
		}
	}
}

func TestWriteWordPressNotATree(t *testing.T) {
	dir := t.TempDir()
	_, err := WriteWordPress(filepath.Join(dir, "blog"), dir, false)
	if err == nil || !strings.Contains(err.Error(), "not a WordPress tree") || !strings.Contains(err.Error(), "wp-settings.php") {
		t.Errorf("err = %v, want one that says what is missing", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "blog")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused init made %s", filepath.Join(dir, "blog"))
	}
	_, err = WriteWordPress(filepath.Join(dir, "blog"), filepath.Join(dir, "nosuch"), false)
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("err = %v", err)
	}
}
