package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/bulkhead/bulkhead/internal/beneath"
	"github.com/bulkhead/bulkhead/internal/hosttest"
)

var created = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const (
	dump       = "-- MariaDB dump\nCREATE TABLE posts (id int, body text);\nINSERT INTO posts VALUES (1,'h\\xe9llo');\n"
	stackYAML  = "name: shop\nsite:\n  writable: [uploads]\n"
	secretJSON = `{"db_password":"s3cret-value-that-must-not-leak"}`
	passphrase = "correct horse battery staple"
)

// recipient and identity use a low scrypt work factor, so that tests do
// not spend a second on each; the format is the same.
func recipient(t testing.TB, pass string) age.Recipient {
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	return r
}

func identity(t testing.TB, pass string) age.Identity {
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// writeTree makes a tree of files under dir: text, binary (every byte
// value), an empty file, a long name, odd modes, an empty directory, and
// things an archive leaves out (a link out of the tree, a fifo).
func writeTree(t testing.TB, dir string) {
	t.Helper()
	binary := make([]byte, 70_000)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	photo := make([]byte, 100_000)
	rand.NewChaCha8([32]byte{3}).Read(photo)
	files := []struct {
		path string
		mode fs.FileMode
		data []byte
	}{
		{"index.php", 0o644, []byte("<?php echo 'hello';\n")},
		{"img/logo.png", 0o640, binary},
		{"img/empty.gif", 0o600, nil},
		{"img/photo.jpg", 0o644, photo},
		{"docs/" + strings.Repeat("n", 120) + ".txt", 0o444, []byte("a name longer than ustar's 100 bytes\n")},
		{"run.sh", 0o755, []byte("#!/bin/sh\n")},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "cache"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "docs"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "img/etc")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Times from the past, so that the round trip shows they are kept.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink == 0 {
			os.Chtimes(p, created.Add(-time.Hour), created.Add(-time.Hour))
		}
		return err
	})
}

// source returns a Source with every part, from trees under dir.
func source(t testing.TB, dir string) Source {
	t.Helper()
	uploads, release := filepath.Join(dir, "uploads"), filepath.Join(dir, "release")
	for _, d := range []string{uploads, release} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeTree(t, d)
	}
	return Source{
		Stack: "shop", Bulkhead: "v0.9.0-test", Created: created,
		DB:        &DB{Role: "db", Software: "mariadb", Version: "10.11.6-MariaDB-0+deb12u1", DumpFormat: "mariadb-sql", DumpFile: "mariadb.sql"},
		Dump:      strings.NewReader(dump),
		Uploads:   uploads,
		Release:   release,
		StackFile: []byte(stackYAML),
		Secrets:   []byte(secretJSON), Recipients: []age.Recipient{recipient(t, passphrase)},
	}
}

// archive writes src's archive into dir and returns its path.
func archive(t testing.TB, dir string, src Source) string {
	t.Helper()
	p := filepath.Join(dir, Name(src.Stack, src.Created))
	if _, err := WriteFile(p, src, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// tree lists a directory as text: one line per entry with its type, mode,
// time and content's hash. Links and the like show as such.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v %s", rel, fi.Mode(), fi.ModTime().UTC().Format(time.RFC3339))
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %x", len(data), sha256.Sum256(data))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withoutSkipped drops what an archive leaves out from a tree listing.
func withoutSkipped(lines []string) []string {
	return slices.DeleteFunc(slices.Clone(lines), func(l string) bool {
		return strings.HasPrefix(l, "img/etc ") || strings.HasPrefix(l, "pipe ")
	})
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := source(t, dir)
	var skipped []string
	var progress []int64
	path := filepath.Join(dir, Name(src.Stack, src.Created))
	m, err := WriteFile(path, src, WriteOptions{
		Skipped: func(name string, mode fs.FileMode) {
			skipped = append(skipped, fmt.Sprintf("%s %v", name, mode.Type()))
		},
		Progress: func(done, total int64) { progress = append(progress, done) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".partial"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the partial archive is still there: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the archive: %v, %v; want mode 0600, as it holds the database", fi, err)
	}
	wantSkipped := []string{"uploads/img/etc L---------", "uploads/pipe p---------", "release/img/etc L---------", "release/pipe p---------"}
	if !slices.Equal(skipped, wantSkipped) {
		t.Errorf("skipped %q, want %q", skipped, wantSkipped)
	}
	if len(progress) == 0 || progress[len(progress)-1] != m.Bytes() {
		t.Errorf("progress %v, want it to end at %d", progress, m.Bytes())
	}

	// The manifest: what made it, and every member.
	if m.Stack != "shop" || m.Bulkhead != "v0.9.0-test" || !m.Created.Equal(created) || m.Format != Format ||
		m.DB == nil || m.DB.Version != src.DB.Version || m.DB.DumpFormat != "mariadb-sql" {
		t.Errorf("manifest %+v", m)
	}
	var names []string
	for _, mb := range m.Members {
		names = append(names, mb.Path)
	}
	for _, want := range []string{"db", "db/mariadb.sql", "uploads", "uploads/img/empty.gif", "uploads/cache", "release/index.php", "stack.yaml", "secrets.age"} {
		if !slices.Contains(names, want) {
			t.Errorf("manifest lacks %s: %q", want, names)
		}
	}
	if names[0] != "db" || names[len(names)-1] != "secrets.age" {
		t.Errorf("members in order %q", names)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := Verify(f)
	f.Close()
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !slices.Equal(vm.Members, m.Members) {
		t.Error("Verify's manifest differs from what WriteFile returned")
	}
	if im, err := Inspect(path); err != nil || !slices.Equal(im.Members, m.Members) {
		t.Errorf("Inspect: %v", err)
	}

	out := t.TempDir()
	dest := Dest{DB: filepath.Join(out, "db"), Uploads: filepath.Join(out, "shared"), Release: filepath.Join(out, "rel"), Stack: filepath.Join(out, "stack")}
	var extractProgress []int64
	x, err := Extract(path, dest, ExtractOptions{
		Identities: []age.Identity{identity(t, passphrase)},
		Progress:   func(done, total int64) { extractProgress = append(extractProgress, done, total) },
	})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if string(x.Secrets) != secretJSON {
		t.Errorf("secrets %q", x.Secrets)
	}
	if n := len(extractProgress); n == 0 || extractProgress[n-2] != extractProgress[n-1] {
		t.Errorf("extract progress %v, want it to end done", extractProgress)
	}
	for _, c := range []struct{ from, to string }{{src.Uploads, dest.Uploads}, {src.Release, dest.Release}} {
		want, got := withoutSkipped(tree(t, c.from)), tree(t, c.to)
		if !slices.Equal(got, want) {
			t.Errorf("%s differs from %s:\n got %s\nwant %s", c.to, c.from, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	}
	if data, err := os.ReadFile(filepath.Join(dest.DB, "mariadb.sql")); err != nil || string(data) != dump {
		t.Errorf("dump %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(dest.Stack, "stack.yaml")); err != nil || string(data) != stackYAML {
		t.Errorf("stack.yaml %q, %v", data, err)
	}
	sealed, err := os.ReadFile(filepath.Join(dest.Stack, "secrets.age"))
	if err != nil || bytes.Contains(sealed, []byte("s3cret")) {
		t.Errorf("secrets.age in clear, or missing: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("s3cret")) {
		t.Error("the archive holds the secrets in clear")
	}
	// Nothing but the destinations was made beside them.
	if ents, _ := os.ReadDir(out); len(ents) != 4 {
		t.Errorf("%s holds %v", out, ents)
	}
}

// TestTarReadsIt: an archive is a zstd tar that the usual tools read, the
// trailer being a frame zstd skips.
func TestTarReadsIt(t *testing.T) {
	_, err := exec.LookPath("zstd")
	hosttest.Require(t, err == nil, "zstd (apt-get install zstd): %v", err)
	dir := t.TempDir()
	path := archive(t, dir, source(t, dir))
	out, err := exec.Command("tar", "--zstd", "-tf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[0] != "db/" || lines[len(lines)-1] != "manifest.json" {
		t.Errorf("tar lists %q", lines)
	}
}

// bad is an archive that a reader must refuse, with the kind of problem
// and words the error must hold.
type bad struct {
	name  string
	data  []byte
	kinds []error // any of them
	says  string
}

func TestRefused(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(archive(t, dir, source(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	var cases []bad
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x55
	cases = append(cases, bad{"a byte flipped in the middle", flipped, []error{ErrChecksum, ErrCorrupt}, ""})
	for _, at := range []int{4, 100, len(good) / 3, len(good) / 2, len(good) - trailerSize - 20, len(good) - trailerSize, len(good) - 10, len(good) - 1} {
		cases = append(cases, bad{fmt.Sprintf("truncated to %d of %d bytes", at, len(good)), good[:at], []error{ErrTruncated}, ""})
	}
	cases = append(cases,
		bad{"two bytes", good[:2], []error{ErrForeign}, "not zstd"},
		bad{"empty", nil, []error{ErrForeign}, "empty"},
		bad{"a trailing byte", append(slices.Clone(good), 0), []error{ErrTruncated, ErrCorrupt}, ""},
		bad{"a tar.gz", tarGz(t), []error{ErrForeign}, "gzip"},
		bad{"a plain tar", plainTar(t), []error{ErrForeign}, "uncompressed tar"},
		bad{"a zstd tar of other things", zstdTar(t, []entry{{name: "hello.txt", data: "hi"}}), []error{ErrForeign}, "member hello.txt: not part of a bulkhead archive"},
		bad{"a zstd tar without manifest", zstdTar(t, []entry{{name: "uploads/", dir: true}, {name: "uploads/a", data: "x"}}), []error{ErrTruncated}, "without manifest.json"},
	)
	for _, c := range []struct {
		name    string
		entries []entry
		edit    func(*Manifest)
		kind    error
		says    string
	}{
		{"a member ../x", []entry{{name: "../x", data: "x"}}, nil, ErrUnsafe, "member ../x: it climbs out"},
		{"a member uploads/../../x", []entry{{name: "uploads/", dir: true}, {name: "uploads/../../x", data: "x"}}, nil, ErrUnsafe, "climbs out"},
		{"an absolute member", []entry{{name: "/etc/cron.d/x", data: "x"}}, nil, ErrUnsafe, "member /etc/cron.d/x: an absolute path"},
		{"a symbolic link", []entry{{name: "uploads/", dir: true}, {name: "uploads/l", link: "/etc"}}, nil, ErrUnsafe, "member uploads/l: a symbolic link"},
		{"a hard link", []entry{{name: "uploads/", dir: true}, {name: "uploads/h", hard: "stack.yaml"}}, nil, ErrUnsafe, "a hard link"},
		{"a setuid file", []entry{{name: "uploads/", dir: true}, {name: "uploads/s", data: "x", mode: 0o4755}}, nil, ErrUnsafe, "beyond the permissions"},
		{"a file without its directory", []entry{{name: "uploads/a/b", data: "x"}}, nil, ErrMismatch, "its directory uploads/a is not in the archive"},
		{"a file twice", []entry{{name: "stack.yaml", data: "a"}, {name: "stack.yaml", data: "b"}}, nil, ErrMismatch, "twice"},
		{"an extra member", []entry{{name: "stack.yaml", data: "a"}, {name: "secrets.age", data: "b"}},
			func(m *Manifest) { m.Members = m.Members[:1] }, ErrMismatch, "member secrets.age: it is not in the manifest"},
		{"a missing member", []entry{{name: "stack.yaml", data: "a"}},
			func(m *Manifest) { m.Members = append(m.Members, Member{Path: "secrets.age", Mode: "0600", Size: 1}) }, ErrMismatch, "member secrets.age: the manifest lists it, but the archive does not hold it"},
		{"a changed member", []entry{{name: "uploads/", dir: true}, {name: "uploads/a.jpg", data: "cat"}},
			func(m *Manifest) { m.Members[1].SHA256 = fmt.Sprintf("%x", sha256.Sum256([]byte("dog"))) }, ErrChecksum, "member uploads/a.jpg"},
		{"a member of another size", []entry{{name: "stack.yaml", data: "abc"}},
			func(m *Manifest) { m.Members[0].Size = 4 }, ErrMismatch, "member stack.yaml"},
		{"members out of order", []entry{{name: "stack.yaml", data: "a"}, {name: "secrets.age", data: "b"}},
			func(m *Manifest) { m.Members[0], m.Members[1] = m.Members[1], m.Members[0] }, ErrMismatch, "member stack.yaml"},
		{"a dump the archive lacks", []entry{{name: "stack.yaml", data: "a"}},
			func(m *Manifest) { m.DB = &DB{DumpFile: "x.sql"} }, ErrMismatch, "db/x.sql"},
		{"a newer format", []entry{{name: "stack.yaml", data: "a"}}, func(m *Manifest) { m.Format = 2 }, ErrFormat, "format 2"},
		{"another kind of manifest", []entry{{name: "stack.yaml", data: "a"}}, func(m *Manifest) { m.Kind = "other" }, ErrForeign, "kind"},
	} {
		cases = append(cases, bad{c.name, craft(t, c.entries, c.edit), []error{c.kind}, c.says})
	}
	cases = append(cases, bad{"a member after the manifest", afterManifest(t), []error{ErrMismatch}, "after manifest.json"})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(c.data))
			t.Logf("Verify: %v", err)
			checkRefused(t, "Verify", err, c)
			path := filepath.Join(t.TempDir(), "x.tar.zst")
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			_, err = Extract(path, Dest{DB: filepath.Join(out, "db"), Uploads: filepath.Join(out, "up"), Release: filepath.Join(out, "rel"), Stack: filepath.Join(out, "stack")}, ExtractOptions{})
			checkRefused(t, "Extract", err, c)
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("Extract wrote %v", ents)
			}
		})
	}
}

func checkRefused(t *testing.T, op string, err error, c bad) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s accepted it", op)
	}
	if !slices.ContainsFunc(c.kinds, func(k error) bool { return errors.Is(err, k) }) {
		t.Errorf("%s: %v; want one of %v", op, err, c.kinds)
	}
	if !strings.Contains(err.Error(), c.says) {
		t.Errorf("%s: %v; want it to say %q", op, err, c.says)
	}
}

// entry is one member of a crafted archive.
type entry struct {
	name, data string
	dir        bool
	link, hard string
	mode       int64
}

func (e entry) header() *tar.Header {
	h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.data)), ModTime: created}
	switch {
	case e.dir:
		h.Typeflag, h.Mode = tar.TypeDir, 0o755
	case e.link != "":
		h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
	case e.hard != "":
		h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.hard, 0
	}
	if e.mode != 0 {
		h.Mode = e.mode
	}
	return h
}

// craft writes an archive of entries as Write would, with a manifest
// that lists them (as edit changes it) and a trailer that fits, so that
// only the defect a case plants is wrong.
func craft(t *testing.T, entries []entry, edit func(*Manifest)) []byte {
	t.Helper()
	m := Manifest{Kind: kind, Format: Format, Stack: "shop", Created: created}
	for _, e := range entries {
		h := e.header()
		mb := Member{Path: strings.TrimSuffix(e.name, "/"), Dir: e.dir, Mode: modeString(fs.FileMode(h.Mode)), Size: h.Size, ModTime: created}
		if !e.dir {
			mb.SHA256 = fmt.Sprintf("%x", sha256.Sum256([]byte(e.data)))
		}
		m.Members = append(m.Members, mb)
	}
	if edit != nil {
		edit(&m)
	}
	manifest, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	out := &countWriter{w: &buf}
	enc, _ := zstd.NewWriter(out)
	tw := tar.NewWriter(enc)
	for _, e := range entries {
		if err := tw.WriteHeader(e.header()); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.data)
	}
	tw.Flush()
	enc.Close()
	tr := trailer{format: m.Format, offset: out.n, sum: sha256.Sum256(manifest)}
	enc.Reset(out)
	tw = tar.NewWriter(enc)
	tw.WriteHeader(&tar.Header{Name: manifestName, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(manifest)), ModTime: created})
	tw.Write(manifest)
	tw.Close()
	enc.Close()
	out.Write(tr.bytes())
	return buf.Bytes()
}

// afterManifest is an archive with a member after its manifest.
func afterManifest(t *testing.T) []byte {
	m := Manifest{Kind: kind, Format: Format, Stack: "shop", Created: created, Members: []Member{}}
	manifest, _ := json.Marshal(&m)
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(enc)
	tw.WriteHeader(&tar.Header{Name: manifestName, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(manifest)), ModTime: created})
	tw.Write(manifest)
	tw.WriteHeader(&tar.Header{Name: "stack.yaml", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, ModTime: created})
	tw.Write([]byte("x"))
	tw.Close()
	enc.Close()
	buf.Write(trailer{format: Format, sum: sha256.Sum256(manifest)}.bytes())
	return buf.Bytes()
}

func plainTar(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "stack.yaml", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2, ModTime: created})
	tw.Write([]byte("hi"))
	tw.Close()
	return buf.Bytes()
}

func tarGz(t *testing.T) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(plainTar(t))
	zw.Close()
	return buf.Bytes()
}

func zstdTar(t *testing.T, entries []entry) []byte {
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(enc)
	for _, e := range entries {
		tw.WriteHeader(e.header())
		io.WriteString(tw, e.data)
	}
	tw.Close()
	enc.Close()
	return buf.Bytes()
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	src := source(t, dir)
	path := archive(t, dir, src)
	out := t.TempDir()
	dest := Dest{Stack: filepath.Join(out, "stack"), Uploads: filepath.Join(out, "up")}

	_, err := Extract(path, dest, ExtractOptions{Identities: []age.Identity{identity(t, "Tr0ub4dor&3")}})
	if !errors.Is(err, ErrPassphrase) || !strings.Contains(err.Error(), "wrong passphrase or key for secrets.age") {
		t.Errorf("a wrong passphrase: %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("a wrong passphrase still wrote %v", ents)
	}
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Extract(path, dest, ExtractOptions{Identities: []age.Identity{key}})
	if !errors.Is(err, ErrPassphrase) {
		t.Errorf("a key it was not encrypted to: %v", err)
	}

	// An X25519 key, for a host that keeps one instead of a passphrase.
	src = source(t, t.TempDir())
	src.Recipients = []age.Recipient{key.Recipient()}
	src.Created = created.Add(time.Second)
	path = archive(t, dir, src)
	x, err := Extract(path, Dest{}, ExtractOptions{Identities: []age.Identity{key}})
	if err != nil || string(x.Secrets) != secretJSON {
		t.Errorf("X25519: %q, %v", x.Secrets, err)
	}

	src.Recipients = nil
	if _, err := Write(io.Discard, src, WriteOptions{}); err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Errorf("secrets without a recipient: %v", err)
	}
}

func TestExtractDestinations(t *testing.T) {
	dir := t.TempDir()
	path := archive(t, dir, source(t, dir))
	out := t.TempDir()
	dest := Dest{Uploads: filepath.Join(out, "shared")}

	// An empty directory is taken, as is one that is not there.
	if err := os.Mkdir(dest.Uploads, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(path, dest, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	// A full one is refused, before anything is read...
	before := tree(t, dest.Uploads)
	_, err := Extract(path, dest, ExtractOptions{})
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), dest.Uploads) {
		t.Errorf("a full destination: %v", err)
	}
	if got := tree(t, dest.Uploads); !slices.Equal(got, before) {
		t.Error("a refused extraction changed the destination")
	}
	// ...unless told, and then replaced whole: what only the old one
	// held is gone.
	stray := filepath.Join(dest.Uploads, "stray.txt")
	os.WriteFile(stray, []byte("x"), 0o644)
	if _, err := Extract(path, dest, ExtractOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old directory's file is still there: %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("beside the destination: %v", ents)
	}
	// A file where a directory should go.
	file := filepath.Join(out, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Extract(path, Dest{Release: file}, ExtractOptions{Overwrite: true}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file as destination: %v", err)
	}
	// A restore's check sees the manifest first and can stop it.
	_, err = Extract(path, Dest{DB: filepath.Join(out, "db")}, ExtractOptions{Check: func(m *Manifest) error {
		return fmt.Errorf("this stack's db cannot load a %s dump", m.DB.DumpFormat)
	}})
	if err == nil || !strings.Contains(err.Error(), "cannot load a mariadb-sql dump") {
		t.Errorf("Check: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused check wrote the dump: %v", err)
	}
}

// failingWriter takes n bytes, then fails as a full disk does.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, syscall.ENOSPC
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	src := source(t, dir)
	for _, n := range []int{0, 100, 50_000} {
		src.Dump = strings.NewReader(dump)
		if _, err := Write(&failingWriter{n: n}, src, WriteOptions{}); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("a writer failing after %d bytes: %v", n, err)
		}
	}

	// A dump tool that fails fails the backup, and leaves no partial file.
	out := t.TempDir()
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "-- half a dump")
		pw.CloseWithError(errors.New("mariadb-dump exited with status 2"))
	}()
	src.Dump = pr
	path := filepath.Join(out, "x.tar.zst")
	_, err := WriteFile(path, src, WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "mariadb-dump exited with status 2") || !strings.Contains(err.Error(), "partial archive was removed") {
		t.Errorf("a failing dump: %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}

	// An archive is never replaced, and a partial one is not written over.
	src.Dump = strings.NewReader(dump)
	if _, err := WriteFile(path, src, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	src.Dump = strings.NewReader(dump)
	if _, err := WriteFile(path, src, WriteOptions{}); err == nil || !errors.Is(err, fs.ErrExist) {
		t.Errorf("over an archive: %v", err)
	}
	os.WriteFile(path+"2.partial", nil, 0o600)
	src.Dump = strings.NewReader(dump)
	if _, err := WriteFile(path+"2", src, WriteOptions{}); err == nil || !strings.Contains(err.Error(), "another backup is being written") {
		t.Errorf("over a partial archive: %v", err)
	}
}

// TestDiskFull fills a 1 MiB tmpfs with an archive of incompressible
// uploads: the partial archive must be gone, and the error must say so.
func TestDiskFull(t *testing.T) {
	hosttest.RequireRoot(t)
	dir := t.TempDir()
	src := source(t, dir)
	noise := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{1}).Read(noise)
	if err := os.WriteFile(filepath.Join(src.Uploads, "video.mp4"), noise, 0o644); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=1M"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(small, 0); err != nil {
			t.Errorf("unmount %s: %v", small, err)
		}
	})
	_, err := WriteFile(filepath.Join(small, Name("shop", created)), src, WriteOptions{})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "partial archive was removed") || !strings.Contains(err.Error(), "free space in "+small) {
		t.Errorf("a full disk: %v", err)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Errorf("a full disk left %v", ents)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(small, &st); err == nil && st.Bfree != st.Blocks {
		t.Errorf("the tmpfs still has %d of %d blocks used", st.Blocks-st.Bfree, st.Blocks)
	}
}

// TestExtractOwner: a restore as root gives what it writes to the account
// the node's daemons run as.
func TestExtractOwner(t *testing.T) {
	hosttest.RequireRoot(t)
	dir := t.TempDir()
	path := archive(t, dir, source(t, dir))
	up := filepath.Join(t.TempDir(), "shared")
	if _, err := Extract(path, Dest{Uploads: up}, ExtractOptions{Owner: &Owner{UID: 33, GID: 34}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(up, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		fi, _ := d.Info()
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 33 || st.Gid != 34 {
			t.Errorf("%s is owned by %d:%d, want 33:34", p, st.Uid, st.Gid)
		}
		return nil
	})
	if n < 5 {
		t.Errorf("only %d entries", n)
	}
}

// TestUploadsBeneath reads the uploads beneath a handle on the directory
// a node can write: the tree is archived as with a plain path, and a link
// the node put in place of the uploads' own directory is refused, not
// followed to what it points at.
func TestUploadsBeneath(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "site", "uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, "site", "uploads", "a.png"), []byte("png"), 0o644)
	os.WriteFile(filepath.Join(data, "beside.txt"), []byte("not the uploads'"), 0o644)
	root, err := beneath.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var buf bytes.Buffer
	m, err := Write(&buf, Source{Stack: "shop", UploadsRoot: root, Uploads: "site"}, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mb := range m.Members {
		names = append(names, mb.Path)
	}
	if want := []string{"uploads", "uploads/uploads", "uploads/uploads/a.png"}; !slices.Equal(names, want) {
		t.Errorf("members %q, want %q", names, want)
	}

	// The node swaps site/ for a link to a directory of the host's.
	secret := filepath.Join(dir, "host")
	os.Mkdir(secret, 0o700)
	os.WriteFile(filepath.Join(secret, "shadow"), []byte("root:x"), 0o600)
	os.RemoveAll(filepath.Join(data, "site"))
	if err := os.Symlink(secret, filepath.Join(data, "site")); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	_, err = Write(&buf, Source{Stack: "shop", UploadsRoot: root, Uploads: "site"}, WriteOptions{})
	if !errors.Is(err, beneath.ErrLink) {
		t.Errorf("uploads behind a planted link: %v, want it refused as a link", err)
	}
	if bytes.Contains(buf.Bytes(), []byte("shadow")) {
		t.Error("the archive names a file behind the link")
	}
}

// TestChangedUpload changes an upload while it is archived: the backup
// fails with ErrChanged, which a caller can meet by running it again.
func TestChangedUpload(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	grown := false
	_, err := Write(io.Discard, Source{Stack: "shop", Uploads: dir}, WriteOptions{
		Progress: func(done, total int64) {
			if !grown && done >= 1<<20 {
				grown = true
				f, _ := os.OpenFile(big, os.O_APPEND|os.O_WRONLY, 0)
				f.Write([]byte("more"))
				f.Close()
			}
		},
	})
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "uploads/big.bin") {
		t.Errorf("an upload that grew while it was read: %v, want ErrChanged naming it", err)
	}
}

// endless is a dump that never ends, as a db node's root can make its
// server answer the dump tool; it does end after stop bytes, so that a
// spool without a limit takes it whole rather than hanging the test.
type endless struct{ n, stop int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.n >= e.stop {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), e.stop-e.n)]
	clear(p)
	e.n += int64(len(p))
	return len(p), nil
}

// TestDumpLimit: a dump past Source.DumpLimit fails the backup once the
// limit is passed, rather than filling the host's disk, which the db node
// would then have filled from its own compartment; a dump within it is
// archived whole.
func TestDumpLimit(t *testing.T) {
	dir := t.TempDir()
	src := source(t, dir)
	const limit = 4 << 20
	e := &endless{stop: 8 * limit}
	src.Dump, src.DumpLimit = e, limit
	_, err := WriteFile(filepath.Join(t.TempDir(), "x.tar.zst"), src, WriteOptions{})
	if !errors.Is(err, ErrDumpTooLarge) || !strings.Contains(err.Error(), "larger than its limit, 4.0 MiB") {
		t.Errorf("an endless dump: %v; want an error that names the limit", err)
	}
	if e.n > 2*limit {
		t.Errorf("read %d bytes of the endless dump; want no more than about the limit, %d", e.n, limit)
	}
	src.Dump, src.DumpLimit = strings.NewReader(dump), int64(len(dump))
	if _, err := WriteFile(filepath.Join(t.TempDir(), "y.tar.zst"), src, WriteOptions{}); err != nil {
		t.Errorf("a dump of exactly the limit: %v", err)
	}
}
