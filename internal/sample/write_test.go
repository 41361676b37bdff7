package sample

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// snapshot records every file under dir with its content and mtime.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		entry := info.Mode().String() + " " + info.ModTime().Format(time.RFC3339Nano)
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry += " " + string(b)
		}
		m[p] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// age sets every mtime under dir to long ago, so that a rewrite shows even
// on a file system with coarse timestamps.
func age(t *testing.T, dir string) {
	t.Helper()
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			err = os.Chtimes(p, old, old)
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
}

func embeddedSite(t *testing.T) []string {
	t.Helper()
	var out []string
	fs.WalkDir(files, "files/site", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			out = append(out, strings.TrimPrefix(p, "files/"))
		}
		return nil
	})
	if len(out) == 0 {
		t.Fatal("no site files embedded")
	}
	return out
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "stack") // Write creates it
	written, err := Write(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "bulkhead.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, StackFile()) {
		t.Error("bulkhead.yaml differs from StackFile()")
	}
	want := map[string]bool{filepath.Join(dir, "bulkhead.yaml"): true, filepath.Join(dir, "site", "uploads") + "/": true}
	for _, rel := range embeddedSite(t) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		want[p] = true
		b, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
			continue
		}
		e, err := files.ReadFile("files/" + rel)
		if err != nil {
			t.Errorf("embedded %s: %v", rel, err)
			continue
		}
		if !bytes.Equal(b, e) {
			t.Errorf("%s differs from the embedded file", rel)
		}
		if info, _ := os.Stat(p); info.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v, want 0644", rel, info.Mode().Perm())
		}
	}
	for _, p := range written {
		if !want[p] {
			t.Errorf("Write listed %s, which it should not have written", p)
		}
		delete(want, p)
	}
	for p := range want {
		t.Errorf("Write did not list %s", p)
	}
	if info, err := os.Stat(filepath.Join(dir, "site", "uploads")); err != nil || !info.IsDir() {
		t.Errorf("site/uploads is not a directory: %v", err)
	}
	// No temporary files left behind.
	for p := range snapshot(t, dir) {
		if strings.HasSuffix(p, ".tmp") {
			t.Errorf("left behind %s", p)
		}
	}
}

func TestWriteRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
		path    string // the path the error must name
	}{
		{"sample", func(t *testing.T, dir string) {
			if _, err := Write(dir, false); err != nil {
				t.Fatal(err)
			}
		}, "bulkhead.yaml"},
		{"stack file only", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "bulkhead.yaml"), []byte("name: mine\n"), 0o644)
		}, "bulkhead.yaml"},
		{"site only", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "site"), 0o755)
		}, "site"},
		{"site is a file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "site"), nil, 0o644)
		}, "site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.prepare(t, dir)
			age(t, dir)
			before := snapshot(t, dir)
			written, err := Write(dir, false)
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Write = %v, want an error wrapping fs.ErrExist", err)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.path)) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
			if len(written) != 0 {
				t.Errorf("Write reported writing %v", written)
			}
			after := snapshot(t, dir)
			for p, b := range before {
				if after[p] != b {
					t.Errorf("%s changed", p)
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("%s appeared", p)
				}
			}
		})
	}
}

func TestWriteForce(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write(dir, false); err != nil {
		t.Fatal(err)
	}
	stack := filepath.Join(dir, "bulkhead.yaml")
	index := filepath.Join(dir, "site", "index.php")
	upload := filepath.Join(dir, "site", "uploads", "x.png")
	mine := filepath.Join(dir, "site", "extra.php")
	for p, data := range map[string]string{stack: "name: mine\n", index: "<?php // edited\n", upload: "\x89PNG...", mine: "<?php\n"} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Write(dir, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(stack); !bytes.Equal(b, StackFile()) {
		t.Error("force did not restore bulkhead.yaml")
	}
	if b, err := os.ReadFile(index); err != nil || bytes.Contains(b, []byte("edited")) {
		t.Errorf("force did not restore site/index.php (%v)", err)
	}
	for p, want := range map[string]string{upload: "\x89PNG...", mine: "<?php\n"} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("force touched %s, which is not the sample's: %q, %v", p, b, err)
		}
	}
}
