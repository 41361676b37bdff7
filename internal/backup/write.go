package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/beneath"
)

// Source is what goes into an archive. Every part but the stack's name is
// optional.
type Source struct {
	Stack    string    // the stack's name
	Bulkhead string    // the version of bulkhead that writes the archive
	Created  time.Time // when; zero means now

	// DB describes the database; Dump is its tool's output, stored as
	// db/<DB.DumpFile>. A Dump that fails must return an error from Read
	// (io.Pipe's CloseWithError): an EOF would store a short dump as if
	// it were whole.
	DB   *DB
	Dump io.Reader
	// DumpLimit, if set, is the most bytes the dump may hold: one past
	// it fails the archive. The dump is spooled to the host's disk, and
	// comes from a node, which must not be able to fill that disk.
	DumpLimit int64

	// Uploads is the directory that holds the site's writable paths and
	// Release the live release's; each is stored as a tree of
	// directories and regular files. Both are walked without following
	// any link (a node may have planted one): links and anything else
	// that is neither are left out and reported to WriteOptions.Skipped.
	Uploads string
	Release string
	// UploadsRoot, if set, is a directory a node can write, and Uploads
	// a path relative to it, resolved beneath it: then not even a link
	// among Uploads' own parents (a node's swap of site/ for a link to
	// the host's /etc) is followed. Without it, Uploads' parents must be
	// the host's.
	UploadsRoot *beneath.Root

	// StackFile is the stack file's content.
	StackFile []byte

	// Secrets is the secrets' JSON; it is stored only encrypted, to
	// Recipients: an age.ScryptRecipient for a passphrase (alone, as age
	// requires) or X25519 recipients.
	Secrets    []byte
	Recipients []age.Recipient
}

// Progress is told how many bytes are done, and of how many when that is
// known (total is 0 when not).
type Progress func(done, total int64)

// WriteOptions tune Write.
type WriteOptions struct {
	// Progress, if set, is told the bytes of content archived so far,
	// every MiB or so and at the end.
	Progress Progress
	// Skipped, if set, is told each path (as it would be named in the
	// archive) that was left out because it is neither a directory nor
	// a regular file.
	Skipped func(name string, mode fs.FileMode)
	// TempDir is where the dump is spooled; empty means os.TempDir().
	// WriteFile spools beside the archive.
	TempDir string
}

// Write writes an archive of src to w and returns its manifest. It writes
// nothing it has not hashed, and stores secrets only encrypted.
func Write(w io.Writer, src Source, opts WriteOptions) (*Manifest, error) {
	if src.Stack == "" {
		return nil, errors.New("write backup: no stack name")
	}
	if len(src.Secrets) > 0 && len(src.Recipients) == 0 {
		return nil, errors.New("write backup: secrets without a recipient to encrypt them to; refusing to store them in clear")
	}
	if (src.DB == nil) != (src.Dump == nil) {
		return nil, errors.New("write backup: a dump needs its database described, and a database its dump")
	}
	if src.DB != nil && (src.DB.DumpFile == "" || src.DB.DumpFile != path.Base(src.DB.DumpFile) || src.DB.DumpFile == "." || src.DB.DumpFile == "..") {
		return nil, fmt.Errorf("write backup: dump file %q is not a plain file name", src.DB.DumpFile)
	}
	created := src.Created
	if created.IsZero() {
		created = time.Now()
	}
	created = created.UTC().Truncate(time.Second)

	// The dump first: a failing dump tool fails the backup before any of
	// the archive is written.
	var dump *os.File
	var dumpSum string
	var dumpSize int64
	if src.Dump != nil {
		var err error
		dump, dumpSum, dumpSize, err = spool(src.Dump, src.DumpLimit, opts.TempDir)
		if err != nil {
			return nil, fmt.Errorf("write backup: the database's dump: %w", err)
		}
		defer dump.Close()
	}

	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, err
	}
	out := &countWriter{w: w}
	enc.Reset(out)
	aw := &archiveWriter{
		out:      out,
		enc:      enc,
		progress: opts.Progress,
		skipped:  opts.Skipped,
		created:  created,
		m: Manifest{
			Kind: kind, Format: Format, Bulkhead: src.Bulkhead, Stack: src.Stack,
			Created: created, DB: src.DB, Members: []Member{},
		},
	}
	aw.sw.w = enc
	aw.tw = tar.NewWriter(&aw.sw)
	if err := aw.write(src, dump, dumpSum, dumpSize); err != nil {
		enc.Close()
		return nil, fmt.Errorf("write backup: %w", err)
	}
	return &aw.m, nil
}

// archiveWriter writes one archive.
type archiveWriter struct {
	out      *countWriter
	enc      *zstd.Encoder
	sw       switchWriter // what tw writes to: the current zstd frame
	tw       *tar.Writer
	m        Manifest
	created  time.Time
	progress Progress
	skipped  func(string, fs.FileMode)
	done     int64
	reported int64
}

func (aw *archiveWriter) write(src Source, dump *os.File, dumpSum string, dumpSize int64) error {
	if dump != nil {
		if err := aw.dir(dbDir, 0o700, aw.created); err != nil {
			return err
		}
		if _, err := dump.Seek(0, io.SeekStart); err != nil {
			return err
		}
		name := dbDir + "/" + src.DB.DumpFile
		sum, err := aw.file(name, 0o600, aw.created, dumpSize, dump)
		if err != nil {
			return err
		}
		if sum != dumpSum {
			return fmt.Errorf("%s: the spooled dump changed before it was archived", name)
		}
	}
	if src.Uploads != "" {
		if err := aw.tree(uploadsDir, src.UploadsRoot, src.Uploads); err != nil {
			return err
		}
	}
	if src.Release != "" {
		if err := aw.tree(releaseDir, nil, src.Release); err != nil {
			return err
		}
	}
	if src.StackFile != nil {
		if _, err := aw.file(stackName, 0o644, aw.created, int64(len(src.StackFile)), bytes.NewReader(src.StackFile)); err != nil {
			return err
		}
	}
	if len(src.Secrets) > 0 {
		var sealed bytes.Buffer
		ew, err := age.Encrypt(&sealed, src.Recipients...)
		if err != nil {
			return fmt.Errorf("encrypt the secrets: %w", err)
		}
		if _, err := ew.Write(src.Secrets); err != nil {
			return fmt.Errorf("encrypt the secrets: %w", err)
		}
		if err := ew.Close(); err != nil {
			return fmt.Errorf("encrypt the secrets: %w", err)
		}
		if _, err := aw.file(secretsName, 0o600, aw.created, int64(sealed.Len()), &sealed); err != nil {
			return err
		}
	}
	return aw.finish()
}

// finish ends the members' zstd frame, writes the manifest in a frame of
// its own, and the trailer that points at it.
func (aw *archiveWriter) finish() error {
	if err := aw.tw.Flush(); err != nil { // the last member's padding
		return err
	}
	if err := aw.enc.Close(); err != nil {
		return err
	}
	t := trailer{format: Format, offset: aw.out.n}
	data, err := json.MarshalIndent(&aw.m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	t.sum = sha256.Sum256(data)
	aw.enc.Reset(aw.out)
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: manifestName, Mode: 0o644, Size: int64(len(data)), ModTime: aw.created}
	if err := aw.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := aw.tw.Write(data); err != nil {
		return err
	}
	if err := aw.tw.Close(); err != nil {
		return err
	}
	if err := aw.enc.Close(); err != nil {
		return err
	}
	if _, err := aw.out.Write(t.bytes()); err != nil {
		return err
	}
	if aw.progress != nil {
		aw.progress(aw.done, 0)
	}
	return nil
}

func (aw *archiveWriter) dir(name string, perm fs.FileMode, mtime time.Time) error {
	mtime = mtime.UTC().Truncate(time.Second)
	hdr := &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(perm & fs.ModePerm), ModTime: mtime}
	if err := aw.tw.WriteHeader(hdr); err != nil {
		return err
	}
	aw.m.Members = append(aw.m.Members, Member{Path: name, Dir: true, Mode: modeString(perm), ModTime: mtime})
	return nil
}

// file writes a member of exactly size bytes from r and returns their
// hash. r yielding fewer is an error; what it holds beyond size is left.
func (aw *archiveWriter) file(name string, perm fs.FileMode, mtime time.Time, size int64, r io.Reader) (string, error) {
	mtime = mtime.UTC().Truncate(time.Second)
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(perm & fs.ModePerm), Size: size, ModTime: mtime}
	if err := aw.tw.WriteHeader(hdr); err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(aw.counted(io.MultiWriter(aw.tw, h)), io.LimitReader(r, size))
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if n != size {
		return "", &Error{Kind: ErrChanged, Member: name, Err: fmt.Errorf("%d bytes where there were %d", n, size)}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	aw.m.Members = append(aw.m.Members, Member{Path: name, Mode: modeString(perm), Size: size, SHA256: sum, ModTime: mtime})
	return sum, nil
}

// tree writes the directory dir as prefix/..., in name order: dir beneath
// root when root is set, else dir as the host resolves it. It resolves
// every path beneath dir without following links, so a link a node planted
// (or swapped in while this runs) is never followed out of the tree.
func (aw *archiveWriter) tree(prefix string, root *beneath.Root, dir string) error {
	rel := "."
	if root == nil {
		r, err := beneath.Open(dir)
		if err != nil {
			return err
		}
		defer r.Close()
		root = r
	} else {
		rel = filepath.Clean(dir)
		fi, err := root.Lstat(rel)
		switch {
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return &beneath.Error{Op: "open", Root: root.Dir(), Path: rel, Err: beneath.ErrLink}
		case !fi.IsDir():
			return fmt.Errorf("%s beneath %s is %v, not a directory", rel, root.Dir(), fi.Mode().Type())
		}
	}
	return root.Walk(rel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := prefix
		if p != rel {
			sub := p
			if rel != "." {
				sub, _ = filepath.Rel(rel, p)
			}
			name = prefix + "/" + filepath.ToSlash(sub)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return aw.dir(name, info.Mode(), info.ModTime())
		case d.Type().IsRegular():
			return aw.regular(root, p, name)
		default:
			if aw.skipped != nil {
				aw.skipped(name, info.Mode())
			}
			return nil
		}
	})
}

// regular writes the regular file rel of root as name. Its size and time
// are those of the open file, and must hold until it has been read.
func (aw *archiveWriter) regular(root *beneath.Root, rel, name string) error {
	f, err := root.Open(rel)
	if err != nil {
		return err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := aw.file(name, before.Mode(), before.ModTime(), before.Size(), f); err != nil {
		return err
	}
	after, err := f.Stat()
	if err != nil {
		return err
	}
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		return &Error{Kind: ErrChanged, Member: name, Err: errors.New("its size or time moved while it was read")}
	}
	return nil
}

func (aw *archiveWriter) counted(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		n, err := w.Write(p)
		aw.done += int64(n)
		if aw.progress != nil && aw.done-aw.reported >= 1<<20 {
			aw.reported = aw.done
			aw.progress(aw.done, 0)
		}
		return n, err
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// switchWriter lets one tar stream span zstd frames.
type switchWriter struct{ w io.Writer }

func (s *switchWriter) Write(p []byte) (int, error) { return s.w.Write(p) }

// countWriter counts the archive's bytes, which the trailer's offset needs.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ErrDumpTooLarge says a dump passed Source.DumpLimit.
var ErrDumpTooLarge = errors.New("larger than its limit")

// spool copies r to an unnamed file in dir, which vanishes when it is
// closed, and returns it with the hash and size of what it holds. With a
// limit, more than limit bytes are an error.
func spool(r io.Reader, limit int64, dir string) (*os.File, string, int64, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := tempFile(dir)
	if err != nil {
		return nil, "", 0, err
	}
	if limit > 0 {
		r = io.LimitReader(r, limit+1)
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	n, err := io.Copy(bw, r)
	if err == nil && limit > 0 && n > limit {
		err = fmt.Errorf("%w, %.1f MiB", ErrDumpTooLarge, float64(limit)/(1<<20))
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		f.Close()
		return nil, "", 0, err
	}
	return f, hex.EncodeToString(h.Sum(nil)), n, nil
}

// tempFile opens an unnamed file in dir, or, where the file system has no
// O_TMPFILE, a named one removed at once.
func tempFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "(spooled dump)")), nil
	}
	if err != unix.EOPNOTSUPP && err != unix.EISDIR && err != unix.EINVAL {
		return nil, &os.PathError{Op: "open temporary file in", Path: dir, Err: err}
	}
	f, err := os.CreateTemp(dir, ".bulkhead-dump-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// WriteFile writes an archive of src to path. It writes to path.partial
// beside it, syncs it and renames it into place, so path is either absent
// or whole; on any error, a full disk included, it removes path.partial.
// It never replaces an existing archive.
func WriteFile(path string, src Source, opts WriteOptions) (*Manifest, error) {
	partial := path + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("write backup %s: %s exists: another backup is being written there, or one was interrupted; remove it if none runs", path, partial)
	}
	if err != nil {
		return nil, fmt.Errorf("write backup %s: %w", path, err)
	}
	if opts.TempDir == "" {
		opts.TempDir = filepath.Dir(path)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	m, err := Write(bw, src, opts)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, partial, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
		if err != nil {
			err = &os.LinkError{Op: "rename", Old: partial, New: path, Err: err}
		}
	}
	if err != nil {
		hint := ""
		if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
			hint = "; free space in " + filepath.Dir(path) + " and run again"
		}
		if rerr := os.Remove(partial); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return nil, fmt.Errorf("write backup %s: %w; the partial archive %s could not be removed either: %v", path, err, partial, rerr)
		}
		return nil, fmt.Errorf("write backup %s: %w (the partial archive was removed%s)", path, err, hint)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("write backup %s: %w", path, err)
	}
	return m, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
