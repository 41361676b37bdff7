package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Verify reads a whole archive from r and checks all of it: that it is a
// zstd-compressed tar of a format this bulkhead knows, that every member
// is a directory or a regular file under a name that stays inside the
// archive, that each one the manifest lists is there, in its order, with
// its size, mode, time and SHA-256, that no other member is, and that the
// trailer agrees with the manifest. It returns the manifest, or an *Error
// that names what is wrong.
func Verify(r io.Reader) (*Manifest, error) {
	s := &scanner{}
	return s.scan(r)
}

// Inspect reads just the manifest of the archive at path, through its
// trailer, without decompressing the members. Nothing else is checked:
// Verify or Extract before trusting what it says of the members.
func Inspect(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, _, err := readManifest(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// readManifest reads the manifest of an archive of size bytes through its
// trailer, and returns it with the trailer.
func readManifest(r io.ReaderAt, size int64) (*Manifest, trailer, error) {
	var t trailer
	if size < trailerSize+1 {
		return nil, t, &Error{Kind: ErrForeign, Err: fmt.Errorf("%d bytes is too short for an archive", size)}
	}
	b := make([]byte, trailerSize)
	if _, err := r.ReadAt(b, size-trailerSize); err != nil {
		return nil, t, fmt.Errorf("read the trailer: %w", err)
	}
	t, err := parseTrailer(b, size)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, t, err
		}
		return nil, t, &Error{Kind: ErrForeign, Err: err}
	}
	dec, err := zstd.NewReader(io.NewSectionReader(r, t.offset, size-trailerSize-t.offset),
		zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, t, err
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	hdr, err := tr.Next()
	if err != nil {
		return nil, t, problem(ErrCorrupt, manifestName, "the frame the trailer points at: %v", err)
	}
	if hdr.Name != manifestName || hdr.Typeflag != tar.TypeReg || hdr.Size > maxManifest {
		return nil, t, problem(ErrCorrupt, manifestName, "the frame the trailer points at holds %s", hdr.Name)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, t, problem(ErrCorrupt, manifestName, "%v", err)
	}
	if sha256.Sum256(data) != t.sum {
		return nil, t, problem(ErrChecksum, manifestName, "its SHA-256 is not the trailer's")
	}
	m, err := parseManifest(data)
	return m, t, err
}

// scanner reads an archive as a stream and checks it.
type scanner struct {
	// want, when set, is the manifest each member must match as it comes,
	// before its content is read, and then by its hash: Extract's second
	// pass stops at the first difference.
	want    *Manifest
	wantSum [sha256.Size]byte // the trailer's hash of want
	// visit, when set, is handed each member and a reader of its
	// content, which the scanner hashes and checks as it is read.
	visit func(m Member, content io.Reader) error
	// keepSecrets keeps secrets.age's content in secrets.
	keepSecrets bool
	secrets     []byte
	// read counts the archive's bytes as they are read.
	read func(n int)

	raw  *tailReader
	zerr error  // the decoder's last error
	last string // the last member read, to say where a stream broke off
}

func (s *scanner) scan(r io.Reader) (*Manifest, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(512)
	if err := sniff(head); err != nil {
		return nil, err
	}
	s.raw = &tailReader{r: br, read: s.read}
	// One decoder goroutine, the caller's: the archive's errors are read
	// from s.raw, which nothing else may be writing then.
	dec, err := zstd.NewReader(s.raw, zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	zr := readerFunc(func(p []byte) (int, error) {
		n, err := dec.Read(p)
		if err != nil && err != io.EOF {
			s.zerr = err
		}
		return n, err
	})
	tr := tar.NewReader(zr)

	var got []Member
	seen := map[string]bool{} // path -> is a directory
	var manifest *Manifest
	var manifestSum [sha256.Size]byte
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, s.fail("", err)
		}
		name, err := checkName(hdr, seen)
		if err != nil {
			return nil, err
		}
		s.last = name
		if manifest != nil {
			return nil, problem(ErrMismatch, name, "it comes after manifest.json, which ends an archive")
		}
		if name == manifestName {
			if hdr.Size > maxManifest {
				return nil, problem(ErrCorrupt, name, "%d bytes, more than a manifest may be", hdr.Size)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, s.fail(name, err)
			}
			if manifest, err = parseManifest(data); err != nil {
				return nil, err
			}
			manifestSum = sha256.Sum256(data)
			continue
		}
		m := Member{
			Path: name, Dir: hdr.Typeflag == tar.TypeDir, Mode: modeString(os.FileMode(hdr.Mode)),
			Size: hdr.Size, ModTime: hdr.ModTime.UTC(),
		}
		if m.Dir && m.Size != 0 {
			return nil, problem(ErrCorrupt, name, "a directory of %d bytes", m.Size)
		}
		seen[name] = m.Dir
		if s.want != nil {
			if err := s.expect(len(got), m); err != nil {
				return nil, err
			}
		}
		if !m.Dir {
			if m.SHA256, err = s.content(tr, m); err != nil {
				return nil, err
			}
			if s.want != nil {
				if w := s.want.Members[len(got)]; w.SHA256 != m.SHA256 {
					return nil, problem(ErrChecksum, name, "its SHA-256 is %s, the manifest's %s", m.SHA256, w.SHA256)
				}
			}
		} else if s.visit != nil {
			if err := s.visit(m, nil); err != nil {
				return nil, err
			}
		}
		got = append(got, m)
	}
	// What follows tar's end must be the rest of its zero blocks, then
	// the end of the zstd stream, then the trailer.
	if err := zeros(zr); err != nil {
		return nil, s.fail("", err)
	}
	if n, err := io.Copy(io.Discard, s.raw); err != nil || n != 0 {
		return nil, s.fail("", fmt.Errorf("%d bytes after the last zstd frame", n))
	}
	if s.raw.err != nil {
		return nil, fmt.Errorf("read the archive: %w", s.raw.err)
	}
	t, terr := parseTrailer(s.raw.tail(), s.raw.n)
	if manifest == nil {
		if len(got) == 0 && s.raw.n > trailerSize {
			return nil, &Error{Kind: ErrForeign, Err: errors.New("an empty tar without manifest.json")}
		}
		if len(got) == 0 {
			return nil, &Error{Kind: ErrTruncated, Err: fmt.Errorf("it is only %d bytes, without manifest.json and the trailer", s.raw.n)}
		}
		if terr != nil {
			return nil, &Error{Kind: ErrTruncated, Err: fmt.Errorf("it ends after member %s without manifest.json and the trailer; it was cut short, or not made by bulkhead", got[len(got)-1].Path)}
		}
		return nil, &Error{Kind: ErrCorrupt, Err: errors.New("it has a trailer but no manifest.json")}
	}
	if terr != nil {
		var e *Error
		if errors.As(terr, &e) {
			return nil, terr
		}
		return nil, &Error{Kind: ErrTruncated, Err: fmt.Errorf("the trailer after manifest.json: %v", terr)}
	}
	if t.sum != manifestSum {
		return nil, problem(ErrChecksum, manifestName, "its SHA-256 is not the trailer's")
	}
	if s.want != nil && t.sum != s.wantSum {
		return nil, problem(ErrMismatch, manifestName, "it is not the manifest the trailer pointed at")
	}
	if err := compare(manifest, got); err != nil {
		return nil, err
	}
	return manifest, nil
}

// content reads a file member, handing it to visit, and returns its hash.
func (s *scanner) content(tr *tar.Reader, m Member) (string, error) {
	h := sha256.New()
	var keep *bytes.Buffer
	var w io.Writer = h
	if m.Path == secretsName && s.keepSecrets {
		if m.Size > maxSecrets {
			return "", problem(ErrCorrupt, m.Path, "%d bytes, more than secrets may be", m.Size)
		}
		keep = &bytes.Buffer{}
		w = io.MultiWriter(h, keep)
	}
	// The reader the visitor gets reports the archive's errors as this
	// package's.
	src := readerFunc(func(p []byte) (int, error) {
		n, err := tr.Read(p)
		if err != nil && err != io.EOF {
			err = s.fail(m.Path, err)
		}
		return n, err
	})
	body := io.TeeReader(src, w)
	if s.visit != nil {
		if err := s.visit(m, body); err != nil {
			return "", err
		}
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return "", err
	}
	if keep != nil {
		s.secrets = keep.Bytes()
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// expect checks the i-th member's header against the manifest in want.
func (s *scanner) expect(i int, m Member) error {
	if i >= len(s.want.Members) {
		return problem(ErrMismatch, m.Path, "it is not in the manifest")
	}
	w := s.want.Members[i]
	if w.Path != m.Path || w.Dir != m.Dir || w.Mode != m.Mode || w.Size != m.Size || !w.ModTime.Equal(m.ModTime) {
		return problem(ErrMismatch, m.Path, "the manifest has %s there", describe(w))
	}
	return nil
}

// fail says what err, met while reading member, means: the decoder's
// error first, as tar only saw its effect.
func (s *scanner) fail(member string, err error) (out error) {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if member == "" && s.last != "" {
		defer func() {
			if e, ok := out.(*Error); ok && e.Member == "" {
				e.Err = fmt.Errorf("%w, after member %s", e.Err, s.last)
			}
		}()
	}
	if s.raw != nil && s.raw.err != nil {
		return fmt.Errorf("read the archive: %w", s.raw.err)
	}
	if s.zerr != nil {
		err = s.zerr
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return &Error{Kind: ErrTruncated, Member: member, Err: fmt.Errorf("zstd: %v", err)}
		}
		return &Error{Kind: ErrCorrupt, Member: member, Err: fmt.Errorf("zstd: %v", err)}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Kind: ErrTruncated, Member: member, Err: fmt.Errorf("tar: %v", err)}
	}
	return &Error{Kind: ErrCorrupt, Member: member, Err: fmt.Errorf("tar: %v", err)}
}

// compare checks the members read against the manifest's list.
func compare(m *Manifest, got []Member) error {
	listed := map[string]int{}
	for i, w := range m.Members {
		if _, dup := listed[w.Path]; dup {
			return problem(ErrCorrupt, manifestName, "it lists %s twice", w.Path)
		}
		listed[w.Path] = i
	}
	read := map[string]bool{}
	for _, g := range got {
		read[g.Path] = true
		if _, ok := listed[g.Path]; !ok {
			return problem(ErrMismatch, g.Path, "it is not in the manifest")
		}
	}
	for _, w := range m.Members {
		if !read[w.Path] {
			return problem(ErrMismatch, w.Path, "the manifest lists it, but the archive does not hold it")
		}
	}
	for i, g := range got {
		w := m.Members[listed[g.Path]]
		if w.SHA256 != g.SHA256 {
			return problem(ErrChecksum, g.Path, "its SHA-256 is %s, the manifest's %s", g.SHA256, w.SHA256)
		}
		if w.Dir != g.Dir || w.Mode != g.Mode || w.Size != g.Size || !w.ModTime.Equal(g.ModTime) {
			return problem(ErrMismatch, g.Path, "it is %s, the manifest says %s", describe(g), describe(w))
		}
		if listed[g.Path] != i {
			return problem(ErrMismatch, g.Path, "it is member %d, the manifest's %d", i+1, listed[g.Path]+1)
		}
	}
	if m.DB != nil {
		dump := dbDir + "/" + m.DB.DumpFile
		if i, ok := listed[dump]; !ok || m.Members[i].Dir || path.Dir(dump) != dbDir {
			return problem(ErrMismatch, dump, "the manifest names it as the dump, but the archive does not hold it")
		}
	}
	return nil
}

func describe(m Member) string {
	if m.Dir {
		return fmt.Sprintf("directory %s mode %s time %s", m.Path, m.Mode, m.ModTime.Format(time.RFC3339))
	}
	return fmt.Sprintf("file %s mode %s size %d time %s", m.Path, m.Mode, m.Size, m.ModTime.Format(time.RFC3339))
}

// checkName refuses a member that is not a directory or a regular file, or
// whose name is not one an archive holds, or that would land outside where
// it is extracted; seen maps the members so far to whether each is a
// directory. It returns the name without a directory's trailing slash.
func checkName(hdr *tar.Header, seen map[string]bool) (string, error) {
	name := hdr.Name
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		name = strings.TrimSuffix(name, "/")
	case tar.TypeSymlink:
		return "", problem(ErrUnsafe, hdr.Name, "a symbolic link (to %q); an archive holds only directories and regular files", hdr.Linkname)
	case tar.TypeLink:
		return "", problem(ErrUnsafe, hdr.Name, "a hard link (to %q); an archive holds only directories and regular files", hdr.Linkname)
	default:
		return "", problem(ErrUnsafe, hdr.Name, "of tar type %q; an archive holds only directories and regular files", hdr.Typeflag)
	}
	switch {
	case name == "" || strings.ContainsRune(name, 0):
		return "", problem(ErrUnsafe, fmt.Sprintf("%q", hdr.Name), "not a usable name")
	case strings.HasPrefix(name, "/"):
		return "", problem(ErrUnsafe, hdr.Name, "an absolute path")
	case name == ".." || strings.HasPrefix(name, "../") || strings.HasSuffix(name, "/..") || strings.Contains(name, "/../"):
		return "", problem(ErrUnsafe, hdr.Name, "it climbs out of the archive with ..")
	case path.Clean(name) != name || name == ".":
		return "", problem(ErrUnsafe, hdr.Name, "not a clean path")
	}
	if hdr.Mode&^0o777 != 0 {
		return "", problem(ErrUnsafe, name, "mode %o has bits beyond the permissions", hdr.Mode)
	}
	top, rest, nested := strings.Cut(name, "/")
	isDir := hdr.Typeflag == tar.TypeDir
	switch top {
	case manifestName, stackName, secretsName:
		if nested || isDir {
			return "", problem(ErrForeign, name, "not part of a bulkhead archive")
		}
	case dbDir:
		if isDir == nested || strings.Contains(rest, "/") {
			return "", problem(ErrForeign, name, "db/ holds one file, the dump")
		}
	case uploadsDir, releaseDir:
		if !nested && !isDir {
			return "", problem(ErrForeign, name, "not part of a bulkhead archive")
		}
	default:
		return "", problem(ErrForeign, name, "not part of a bulkhead archive")
	}
	if _, dup := seen[name]; dup {
		return "", problem(ErrMismatch, name, "it is in the archive twice")
	}
	if nested {
		if dir, ok := seen[path.Dir(name)]; !ok || !dir {
			return "", problem(ErrMismatch, name, "its directory %s is not in the archive before it", path.Dir(name))
		}
	}
	return name, nil
}

// sniff says what an archive that is not zstd is, from its first bytes.
func sniff(head []byte) error {
	what := ""
	switch {
	case len(head) == 0:
		what = "it is empty"
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil
	case len(head) >= 4 && head[0]&0xf0 == 0x50 && bytes.Equal(head[1:4], []byte{0x2a, 0x4d, 0x18}):
		what = "it starts with a skippable zstd frame, which bulkhead never writes first"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		what = "it is gzip data, not zstd (a .tar.gz?)"
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		what = "it is xz data, not zstd"
	case bytes.HasPrefix(head, []byte("BZh")):
		what = "it is bzip2 data, not zstd"
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		what = "it is an uncompressed tar, not zstd"
	default:
		what = fmt.Sprintf("it is not zstd data (it starts % x)", head[:min(len(head), 8)])
	}
	return &Error{Kind: ErrForeign, Err: errors.New(what)}
}

// zeros reads r to its end and fails if anything in it is not zero.
func zeros(r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return errors.New("data after the end of the tar archive")
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// tailReader passes a stream on but for its last trailerSize bytes, which
// it holds back as the trailer: the decoder never sees them.
type tailReader struct {
	r     io.Reader
	read  func(int)
	buf   []byte
	start int
	eof   bool
	err   error // a read error other than the end
	n     int64 // bytes read from r
	// checked says the end was reached and the held bytes looked at;
	// released, that they are no trailer and were passed on.
	checked, released bool
}

func (t *tailReader) Read(p []byte) (int, error) {
	if t.buf == nil {
		t.buf = make([]byte, 0, 128<<10)
	}
	for len(t.buf)-t.start <= trailerSize && !t.eof {
		if t.start > 0 { // make room
			n := copy(t.buf, t.buf[t.start:])
			t.buf, t.start = t.buf[:n], 0
		}
		n, err := t.r.Read(t.buf[len(t.buf):cap(t.buf)])
		t.buf = t.buf[:len(t.buf)+n]
		t.n += int64(n)
		if t.read != nil && n > 0 {
			t.read(n)
		}
		if err == io.EOF {
			t.eof = true
		} else if err != nil {
			t.err = err
			return 0, err
		}
	}
	held := trailerSize
	if t.eof && !t.checked {
		// The end: what is held back is passed on after all unless it
		// is a trailer, so that a stream without one (another tool's
		// zstd tar, or one cut short) is still read to its end.
		t.checked = true
		t.released = !looksLikeTrailer(t.buf[t.start:])
	}
	if t.released {
		held = 0
	}
	avail := len(t.buf) - t.start - held
	if avail <= 0 {
		return 0, io.EOF
	}
	n := copy(p, t.buf[t.start:t.start+avail])
	t.start += n
	return n, nil
}

// tail is the trailer held back, once the stream has ended, or nil when
// it ended without one.
func (t *tailReader) tail() []byte {
	if t.released {
		return nil
	}
	return t.buf[t.start:]
}

// looksLikeTrailer says whether b starts as a trailer does; parseTrailer
// checks the rest.
func looksLikeTrailer(b []byte) bool {
	return len(b) == trailerSize && binary.LittleEndian.Uint32(b) == trailerMagic && string(b[8:16]) == trailerTag
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// openSecrets decrypts secrets.age's content with ids.
func openSecrets(sealed []byte, ids []age.Identity) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(sealed), ids...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, &Error{Kind: ErrPassphrase, Member: secretsName, Err: err}
		}
		return nil, problem(ErrCorrupt, secretsName, "%v", err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, problem(ErrCorrupt, secretsName, "%v", err)
	}
	return data, nil
}
