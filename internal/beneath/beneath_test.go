package beneath

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixture is a root that a node could write, and beside it an outside the
// node must never reach through the host: a secret file and a directory.
type fixture struct {
	root, outside string
	r             *Root
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{f.root, filepath.Join(f.outside, "dir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"secret": "secret", "dir/file": "file"} {
		if err := os.WriteFile(filepath.Join(f.outside, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	f.r = r
	return f
}

// snapshot records everything about the outside that an operation could
// change: entries, types, modes, owners, contents.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d", path, info.Mode(), st.Uid, st.Gid)
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// links are what a node plants: to a file and to a directory outside, by
// absolute path and by a relative path that climbs out with "..".
func (f *fixture) links() map[string]string {
	return map[string]string{
		"file-abs": filepath.Join(f.outside, "secret"),
		"file-rel": "../outside/secret",
		"dir-abs":  filepath.Join(f.outside, "dir"),
		"dir-rel":  "../outside/dir",
	}
}

// op is one operation of the package, run on a path that a node planted a
// link at or under.
type op struct {
	name string
	do   func(r *Root, rel string) error
}

func ops() []op {
	me, grp := os.Getuid(), os.Getgid()
	return []op{
		{"Open", func(r *Root, rel string) error {
			f, err := r.Open(rel)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"OpenPath", func(r *Root, rel string) error {
			f, _, err := r.OpenPath(rel)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"ReadDir", func(r *Root, rel string) error { _, err := r.ReadDir(rel); return err }},
		{"MkdirAll", func(r *Root, rel string) error { return r.MkdirAll(rel+"/new", 0o755) }},
		{"Chown", func(r *Root, rel string) error { return r.Chown(rel, me, grp) }},
		{"Chmod", func(r *Root, rel string) error { return r.Chmod(rel, 0o777) }},
		{"Chtimes", func(r *Root, rel string) error { return r.Chtimes(rel, time.Unix(1, 0), time.Unix(1, 0)) }},
		{"Lstat", func(r *Root, rel string) error { _, err := r.Lstat(rel); return err }},
		{"WriteFile", func(r *Root, rel string) error {
			return r.WriteFile(rel, strings.NewReader("pwned"), 0o644, me, grp)
		}},
		{"RemoveAll", func(r *Root, rel string) error { return r.RemoveAll(rel) }},
	}
}

// TestRefusesPlantedLinks plants every kind of link and runs every
// operation through it, as the last component and as a directory on the
// way. Each must refuse, or act on the link itself, and leave the outside
// as it was.
func TestRefusesPlantedLinks(t *testing.T) {
	for _, o := range ops() {
		f0 := newFixture(t)
		for link, target := range f0.links() {
			for _, through := range []bool{false, true} {
				// The last-component cases where acting on the link
				// itself is the contract, not a refusal.
				acts := !through && (o.name == "Lstat" || o.name == "WriteFile" || o.name == "RemoveAll")
				name := fmt.Sprintf("%s/%s/through=%v", o.name, link, through)
				t.Run(name, func(t *testing.T) {
					f := newFixture(t)
					if err := os.Symlink(target, filepath.Join(f.root, link)); err != nil {
						t.Fatal(err)
					}
					rel := link
					if through {
						rel = link + "/file"
					}
					before := snapshot(t, f.outside)
					err := o.do(f.r, rel)
					if after := snapshot(t, f.outside); after != before {
						t.Errorf("the outside changed:\nbefore:\n%safter:\n%s", before, after)
					}
					if acts {
						if err != nil {
							t.Fatalf("want it done to the link itself, got %v", err)
						}
						return
					}
					if !Refused(err) {
						t.Fatalf("want a refusal, got %v", err)
					}
					if !errors.Is(err, ErrLink) || !strings.Contains(err.Error(), rel) || !strings.Contains(err.Error(), "symbolic link") {
						t.Errorf("the error should name %s and the link: %v", rel, err)
					}
				})
			}
		}
	}
}

// TestRefusesEscapes: a path that climbs out or is absolute is refused
// before anything is looked up.
func TestRefusesEscapes(t *testing.T) {
	for _, o := range ops() {
		for _, rel := range []string{"../outside/secret", "a/../../outside/secret", "/etc/passwd", ""} {
			t.Run(o.name+"/"+rel, func(t *testing.T) {
				f := newFixture(t)
				os.MkdirAll(filepath.Join(f.root, "a"), 0o755)
				before := snapshot(t, f.outside)
				err := o.do(f.r, rel)
				if !errors.Is(err, ErrEscape) {
					t.Errorf("want ErrEscape, got %v", err)
				}
				if after := snapshot(t, f.outside); after != before {
					t.Errorf("the outside changed:\nbefore:\n%safter:\n%s", before, after)
				}
			})
		}
	}
}

// TestLinkActedOnItself: replacing or removing a link replaces or removes
// the link, and Lstat reports it as one.
func TestLinkActedOnItself(t *testing.T) {
	f := newFixture(t)
	for link, target := range f.links() {
		os.Symlink(target, filepath.Join(f.root, link))
	}
	info, err := f.r.Lstat("dir-abs")
	if err != nil || info.Mode().Type() != fs.ModeSymlink {
		t.Fatalf("Lstat dir-abs = %v, %v; want a link", info, err)
	}
	if err := f.r.WriteFile("file-abs", strings.NewReader("new"), 0o640, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.root, "file-abs")); string(b) != "new" {
		t.Errorf("file-abs = %q", b)
	}
	if info, _ := os.Lstat(filepath.Join(f.root, "file-abs")); !info.Mode().IsRegular() || info.Mode().Perm() != 0o640 {
		t.Errorf("file-abs is %v, want a regular file with mode 0640", info.Mode())
	}
	if err := f.r.RemoveAll("dir-rel"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(f.root, "dir-rel")); !os.IsNotExist(err) {
		t.Errorf("dir-rel survived: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.outside, "secret")); string(b) != "secret" {
		t.Errorf("the outside secret became %q", b)
	}
}

// TestWalkDoesNotDescendLinks: a tree with links to the outside walks as
// the links themselves, never their targets.
func TestWalkDoesNotDescendLinks(t *testing.T) {
	f := newFixture(t)
	os.MkdirAll(filepath.Join(f.root, "a/b"), 0o755)
	os.WriteFile(filepath.Join(f.root, "a/b/c"), []byte("c"), 0o644)
	os.Symlink(filepath.Join(f.outside, "dir"), filepath.Join(f.root, "a/out"))
	os.Symlink("../../outside/dir", filepath.Join(f.root, "a/b/up"))
	var got []string
	err := f.r.Walk(".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		got = append(got, fmt.Sprintf("%s %v", rel, d.Type()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{". d---------", "a d---------", "a/b d---------", "a/b/c ----------", "a/b/up L---------", "a/out L---------"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("walk:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestOperations: the ordinary uses work.
func TestOperations(t *testing.T) {
	f := newFixture(t)
	me, grp := os.Getuid(), os.Getgid()
	if err := f.r.MkdirAll("a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.r.MkdirAll("a/b/c", 0o755); err != nil {
		t.Fatalf("MkdirAll is not idempotent: %v", err)
	}
	if err := f.r.WriteFile("a/b/c/f", strings.NewReader("one"), 0o644, me, grp); err != nil {
		t.Fatal(err)
	}
	if err := f.r.WriteFile("a/b/c/f", strings.NewReader("two"), 0o600, me, grp); err != nil {
		t.Fatal(err)
	}
	r, err := f.r.Open("a/b/c/f")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "two" {
		t.Errorf("read %q, want two", b)
	}
	if err := f.r.Chmod("a/b", 0o700); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(filepath.Join(f.root, "a/b")); info.Mode().Perm() != 0o700 {
		t.Errorf("a/b mode %v", info.Mode().Perm())
	}
	if err := f.r.Chown("a/b/c/f", me, grp); err != nil {
		t.Fatal(err)
	}
	then := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{"a/b/c/f", "a/b"} {
		if err := f.r.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
		if info, _ := os.Stat(filepath.Join(f.root, p)); !info.ModTime().Equal(then) {
			t.Errorf("%s mtime %v, want %v", p, info.ModTime(), then)
		}
	}
	// A directory where a file is written is replaced by the file.
	os.MkdirAll(filepath.Join(f.root, "d/e"), 0o755)
	if err := f.r.WriteFile("d", bytes.NewReader([]byte("file")), 0o644, me, grp); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Lstat(filepath.Join(f.root, "d")); !info.Mode().IsRegular() {
		t.Errorf("d is %v, want a file", info.Mode())
	}
	ents, err := f.r.ReadDir(".")
	if err != nil || len(ents) != 2 || ents[0].Name() != "a" || ents[1].Name() != "d" {
		t.Errorf("ReadDir = %v, %v", ents, err)
	}
	if err := f.r.RemoveAll("a"); err != nil {
		t.Fatal(err)
	}
	if err := f.r.RemoveAll("a"); err != nil {
		t.Errorf("RemoveAll of nothing: %v", err)
	}
	if _, err := f.r.Open("d/x"); !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("open under a file: %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(f.root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Open("fifo"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a fifo was opened, or the error does not say why: %v", err)
	}
	if err := f.r.Chtimes("fifo", time.Unix(1, 0), time.Unix(1, 0)); err == nil || !strings.Contains(err.Error(), "not a file or directory") {
		t.Errorf("a fifo's times were set, or the error does not say why: %v", err)
	}
}

// TestOpenRootLink: the root itself may not be a link.
func TestOpenRootLink(t *testing.T) {
	f := newFixture(t)
	link := filepath.Join(t.TempDir(), "root")
	os.Symlink(f.outside, link)
	if _, err := Open(link); !errors.Is(err, ErrLink) {
		t.Errorf("Open(link) = %v, want ErrLink", err)
	}
}

// TestRaceWithSwapper: while the host writes, makes directories and
// removes, a node keeps swapping a directory for a link to the outside and
// back. Whatever the interleaving, the outside never changes; operations
// either succeed beneath the root or fail.
func TestRaceWithSwapper(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.outside)
	dir, link := filepath.Join(f.root, "d"), filepath.Join(f.root, "d.link")
	os.Mkdir(dir, 0o755)
	os.Symlink(filepath.Join(f.outside, "dir"), link)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// d and d.link trade places atomically, over and over.
			unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE)
		}
	}()
	me, grp := os.Getuid(), os.Getgid()
	refused := 0
	for range 300 {
		for _, err := range []error{
			f.r.WriteFile("d/file", strings.NewReader("pwned"), 0o644, me, grp),
			f.r.MkdirAll("d/sub/deeper", 0o755),
			f.r.Chmod("d", 0o777),
			f.r.RemoveAll("d/sub"),
		} {
			if Refused(err) {
				refused++
			}
		}
	}
	close(stop)
	<-done
	t.Logf("%d operations refused a link", refused) // how often the swapper won a race
	if after := snapshot(t, f.outside); after != before {
		t.Errorf("the outside changed:\nbefore:\n%safter:\n%s", before, after)
	}
}
