// Package beneath does the host's file operations inside a directory that a
// node can write, without ever following a path the node planted.
//
// A node is hostile: root inside it can put a symbolic link, or swap a file
// for a directory, anywhere under a directory bound into it, at any moment.
// So every path here is resolved from an open handle on the root directory
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS),
// and every change is made relative to a handle on the parent directory with
// the *at calls. A link anywhere on the way, as the last component or as a
// directory in between, is refused with ErrLink; a path that would leave the
// root is refused with ErrEscape. Nothing outside the root is ever read or
// written. Operations that replace or remove an entry act on the link itself,
// never on what it points to.
//
// cyphar/filepath-securejoin's pathrs-lite resolves links in a scoped way
// (as if the root were "/"); bulkhead wants them refused instead, so this
// package calls openat2 itself and uses pathrs-lite only to reopen an O_PATH
// handle for reading.
package beneath

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

var (
	// ErrLink says a symbolic link was on the path and was not followed.
	ErrLink = errors.New("a symbolic link is in the way (refused to follow it)")
	// ErrEscape says the path would leave the root and was refused.
	ErrEscape = errors.New("the path leaves the directory (refused)")
)

// Refused reports whether err refused a link or an escape.
func Refused(err error) bool {
	return errors.Is(err, ErrLink) || errors.Is(err, ErrEscape)
}

// Error is a failed operation on Path, relative to Root.
type Error struct {
	Op   string // open, mkdir, write, remove, chown, ...
	Root string // the root directory, as the host names it
	Path string // relative to Root
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s beneath %s: %v", e.Op, e.Path, e.Root, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// resolve confines every lookup. RESOLVE_NO_SYMLINKS implies
// RESOLVE_NO_MAGICLINKS; both are spelt out so that the intent reads here.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Root is an open directory that the operations stay beneath.
type Root struct {
	dir string
	fd  *os.File // O_PATH
}

// Open opens dir as a root. dir itself must be a directory and not a link;
// its parents are the host's and are resolved as usual.
func Open(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOTDIR || err == unix.ELOOP {
			if fi, lerr := os.Lstat(dir); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				err = ErrLink
			}
		}
		return nil, &Error{Op: "open root", Root: dir, Path: ".", Err: err}
	}
	return &Root{dir: dir, fd: os.NewFile(uintptr(fd), dir)}, nil
}

// Close releases the root's handle.
func (r *Root) Close() error { return r.fd.Close() }

// Dir is the root's path, as given to Open.
func (r *Root) Dir() string { return r.dir }

func (r *Root) fail(op, rel string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Op: op, Root: r.dir, Path: rel, Err: why(err)}
}

// why says what an errno from a confined lookup means.
func why(err error) error {
	switch err {
	case unix.ELOOP:
		return ErrLink
	case unix.EXDEV:
		return ErrEscape
	}
	return err
}

// check refuses a path that is not plainly local before the kernel sees it,
// so that the message says why.
func check(rel string) error {
	if rel == "." {
		return nil
	}
	if !filepath.IsLocal(rel) || filepath.Clean(rel) != rel {
		return ErrEscape
	}
	return nil
}

// openat2 opens rel beneath dirfd. A rename elsewhere in the tree during the
// lookup makes the kernel answer EAGAIN; a node can cause that at will, so
// the retries are bounded.
func openat2(dirfd int, rel string, flags uint64) (int, error) {
	how := &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve}
	for range 64 {
		fd, err := unix.Openat2(dirfd, rel, how)
		if err != unix.EAGAIN && err != unix.EINTR {
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

// open opens rel beneath the root. flags must not hold O_NOFOLLOW: with
// O_PATH that would hand back the link itself, where without it
// RESOLVE_NO_SYMLINKS refuses a trailing link with ELOOP.
func (r *Root) open(op, rel string, flags uint64) (*os.File, error) {
	if err := check(rel); err != nil {
		return nil, r.fail(op, rel, err)
	}
	fd, err := openat2(int(r.fd.Fd()), rel, flags)
	if err != nil {
		return nil, r.fail(op, rel, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(r.dir, rel)), nil
}

// parent opens the directory that holds rel, and returns rel's last
// component.
func (r *Root) parent(op, rel string) (*os.File, string, error) {
	if err := check(rel); err != nil || rel == "." {
		if err == nil {
			err = errors.New("not the root itself")
		}
		return nil, "", r.fail(op, rel, err)
	}
	// The kernel does not say which component was a link, so the error
	// names the whole path asked for.
	fd, err := openat2(int(r.fd.Fd()), filepath.Dir(rel), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, "", r.fail(op, rel, err)
	}
	return os.NewFile(uintptr(fd), filepath.Dir(rel)), filepath.Base(rel), nil
}

// Lstat describes what is at rel without following it: a link is reported
// as a link. Links among rel's parents are refused.
func (r *Root) Lstat(rel string) (fs.FileInfo, error) {
	if rel == "." {
		var st unix.Stat_t
		if err := unix.Fstat(int(r.fd.Fd()), &st); err != nil {
			return nil, r.fail("lstat", rel, err)
		}
		return newInfo(filepath.Base(r.dir), &st), nil
	}
	dir, base, err := r.parent("lstat", rel)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, r.fail("lstat", rel, err)
	}
	return newInfo(base, &st), nil
}

// Open opens the regular file at rel for reading. Anything else there (a
// link, a fifo, a device, a directory) is refused without being opened.
func (r *Root) Open(rel string) (*os.File, error) {
	h, err := r.open("open", rel, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return nil, r.fail("open", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, r.fail("open", rel, fmt.Errorf("not a regular file but %v", newInfo("", &st).Mode().Type()))
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY)
	if err != nil {
		return nil, r.fail("open", rel, err)
	}
	return f, nil
}

// OpenPath returns an O_PATH handle on what is at rel, which must not be a
// link. It pins the object for a later check and use, such as connecting to
// a socket through /proc/self/fd.
func (r *Root) OpenPath(rel string) (*os.File, fs.FileInfo, error) {
	h, err := r.open("open", rel, unix.O_PATH)
	if err != nil {
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		h.Close()
		return nil, nil, r.fail("open", rel, err)
	}
	return h, newInfo(filepath.Base(rel), &st), nil
}

// ReadDir lists the directory at rel, sorted by name. Each entry's Info is
// what was there when it was listed, links reported as links.
func (r *Root) ReadDir(rel string) ([]fs.DirEntry, error) {
	d, err := r.open("read dir", rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return r.readDir(d, rel)
}

func (r *Root) readDir(d *os.File, rel string) ([]fs.DirEntry, error) {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, r.fail("read dir", rel, err)
	}
	sort.Strings(names)
	out := make([]fs.DirEntry, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		err := unix.Fstatat(int(d.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT {
			continue // gone since it was listed
		}
		if err != nil {
			return nil, r.fail("lstat", filepath.Join(rel, n), err)
		}
		out = append(out, fs.FileInfoToDirEntry(newInfo(n, &st)))
	}
	return out, nil
}

// Walk walks the tree at rel like fs.WalkDir, paths relative to the root.
// It never descends through a link: a link is handed to fn as a link, and a
// directory swapped for a link while walking is refused with ErrLink.
func (r *Root) Walk(rel string, fn fs.WalkDirFunc) error {
	info, err := r.Lstat(rel)
	if err != nil {
		err = fn(rel, nil, err)
	} else {
		err = r.walk(rel, fs.FileInfoToDirEntry(info), fn)
	}
	if err == fs.SkipDir || err == fs.SkipAll {
		return nil
	}
	return err
}

func (r *Root) walk(rel string, d fs.DirEntry, fn fs.WalkDirFunc) error {
	if err := fn(rel, d, nil); err != nil || !d.IsDir() {
		if err == fs.SkipDir && d.IsDir() {
			err = nil
		}
		return err
	}
	ents, err := r.ReadDir(rel)
	if err != nil {
		err = fn(rel, d, err)
		if err != nil {
			if err == fs.SkipDir && d.IsDir() {
				err = nil
			}
			return err
		}
	}
	for _, e := range ents {
		child := e.Name()
		if rel != "." {
			child = filepath.Join(rel, e.Name())
		}
		if err := r.walk(child, e, fn); err != nil {
			if err == fs.SkipDir {
				break
			}
			return err
		}
	}
	return nil
}

// MkdirAll makes the directory rel and any missing parents with perm (less
// the umask). An existing link or non-directory on the way is refused; it is
// not replaced.
func (r *Root) MkdirAll(rel string, perm fs.FileMode) error {
	if err := check(rel); err != nil {
		return r.fail("mkdir", rel, err)
	}
	cur, err := r.open("mkdir", ".", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	if rel == "." {
		return cur.Close()
	}
	done := ""
	for _, c := range splitPath(rel) {
		done = filepath.Join(done, c)
		fd, err := openat2(int(cur.Fd()), c, unix.O_PATH|unix.O_DIRECTORY)
		if err == unix.ENOENT {
			if err := unix.Mkdirat(int(cur.Fd()), c, uint32(perm.Perm())); err != nil && err != unix.EEXIST {
				cur.Close()
				return r.fail("mkdir", rel, fmt.Errorf("%s: %w", done, why(err)))
			}
			fd, err = openat2(int(cur.Fd()), c, unix.O_PATH|unix.O_DIRECTORY)
		}
		cur.Close()
		if err != nil {
			if done != rel {
				err = fmt.Errorf("%s: %w", done, why(err))
			}
			return r.fail("mkdir", rel, err)
		}
		cur = os.NewFile(uintptr(fd), done)
	}
	return cur.Close()
}

func splitPath(rel string) []string {
	var out []string
	for rel != "." {
		out = append(out, filepath.Base(rel))
		rel = filepath.Dir(rel)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Chown sets the owner of the file or directory at rel. A link there is
// refused, never followed.
func (r *Root) Chown(rel string, uid, gid int) error {
	h, err := r.open("chown", rel, unix.O_PATH)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := unix.Fchownat(int(h.Fd()), "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return r.fail("chown", rel, err)
	}
	return nil
}

// Chmod sets the permission bits of the regular file or directory at rel.
// A link there is refused, never followed, and anything else is refused
// without being opened.
func (r *Root) Chmod(rel string, mode fs.FileMode) error {
	h, err := r.open("chmod", rel, unix.O_PATH)
	if err != nil {
		return err
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return r.fail("chmod", rel, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		return r.fail("chmod", rel, fmt.Errorf("not a file or directory but %v", newInfo("", &st).Mode().Type()))
	}
	// chmod has no AT_EMPTY_PATH before fchmodat2 (Linux 6.6), so reopen
	// the pinned object for real; both kinds open without side effects.
	f, err := pathrs.Reopen(h, unix.O_RDONLY)
	if err != nil {
		return r.fail("chmod", rel, err)
	}
	defer f.Close()
	if err := unix.Fchmod(int(f.Fd()), uint32(mode.Perm())); err != nil {
		return r.fail("chmod", rel, err)
	}
	return nil
}

// Chtimes sets the access and modification times of the regular file or
// directory at rel. A link there is refused, never followed, and anything
// else is refused without being opened.
func (r *Root) Chtimes(rel string, atime, mtime time.Time) error {
	h, err := r.open("chtimes", rel, unix.O_PATH)
	if err != nil {
		return err
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return r.fail("chtimes", rel, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		return r.fail("chtimes", rel, fmt.Errorf("not a file or directory but %v", newInfo("", &st).Mode().Type()))
	}
	// As Chmod: futimens needs a real descriptor, not an O_PATH one.
	f, err := pathrs.Reopen(h, unix.O_RDONLY)
	if err != nil {
		return r.fail("chtimes", rel, err)
	}
	defer f.Close()
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(int(f.Fd()), "", ts, unix.AT_EMPTY_PATH); err != nil {
		return r.fail("chtimes", rel, err)
	}
	return nil
}

// WriteFile makes rel a new regular file holding what content yields, owned
// by uid:gid with perm, and replaces whatever was at rel in one rename: a
// file, a link (the link itself is replaced; its target is untouched), or a
// directory (removed first, without following links in it). Readers see the
// old entry or the new file, never a partial one. The parent must exist.
func (r *Root) WriteFile(rel string, content io.Reader, perm fs.FileMode, uid, gid int) error {
	dir, base, err := r.parent("write", rel)
	if err != nil {
		return err
	}
	defer dir.Close()
	dfd := int(dir.Fd())
	var tmp string
	var fd int
	for range 16 {
		tmp = tempName()
		fd, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != unix.EEXIST {
			break
		}
	}
	if err != nil {
		return r.fail("write", rel, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = io.Copy(f, content)
	if err == nil {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		err = f.Chmod(perm.Perm()) // after chown, which may clear mode bits
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, base)
		if err == unix.EISDIR || err == unix.ENOTEMPTY || err == unix.EEXIST {
			// A directory stands there: clear it, then rename again. If
			// the node puts one back in between, the rename fails.
			if err = r.removeAt(dfd, base, rel); err == nil {
				err = unix.Renameat(dfd, tmp, dfd, base)
			}
		}
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return r.fail("write", rel, err)
	}
	return nil
}

func tempName() string {
	var b [8]byte
	rand.Read(b[:])
	return ".bulkhead-" + hex.EncodeToString(b[:])
}

// RemoveAll removes rel and, if it is a directory, everything in it. Links
// are removed as links; nothing they point to is touched. A missing rel is
// not an error.
func (r *Root) RemoveAll(rel string) error {
	dir, base, err := r.parent("remove", rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	return r.removeAt(int(dir.Fd()), base, rel)
}

// removeAt removes name in the directory dirfd. A node may keep adding
// entries or swapping a directory for a link while this runs, so it tries a
// bounded number of times and then gives up with the error it met.
func (r *Root) removeAt(dirfd int, name, rel string) error {
	var err error
	for range 8 {
		err = unix.Unlinkat(dirfd, name, 0)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EISDIR {
			return r.fail("remove", rel, err)
		}
		// A directory: empty it through a handle on it, then remove it.
		fd, oerr := openat2(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
		if oerr == unix.ENOENT {
			return nil
		}
		if oerr == unix.ELOOP || oerr == unix.ENOTDIR {
			continue // swapped for a link or file since: unlink that
		}
		if oerr != nil {
			return r.fail("remove", rel, oerr)
		}
		d := os.NewFile(uintptr(fd), rel)
		names, rerr := d.Readdirnames(-1)
		for _, n := range names {
			if e := r.removeAt(fd, n, filepath.Join(rel, n)); e != nil && rerr == nil {
				rerr = e
			}
		}
		d.Close()
		if rerr != nil {
			return r.fail("remove", rel, rerr)
		}
		err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.ENOTEMPTY && err != unix.ENOTDIR {
			return r.fail("remove", rel, err)
		}
	}
	return r.fail("remove", rel, fmt.Errorf("it keeps changing: %w", err))
}

// info is an fs.FileInfo made from a stat of a handle or of an entry in a
// directory handle, never of a path.
type info struct {
	name string
	st   unix.Stat_t
}

func newInfo(name string, st *unix.Stat_t) *info { return &info{name: name, st: *st} }

func (i *info) Name() string       { return i.name }
func (i *info) Size() int64        { return i.st.Size }
func (i *info) ModTime() time.Time { return time.Unix(i.st.Mtim.Unix()) }
func (i *info) IsDir() bool        { return i.Mode().IsDir() }

// Sys is the *unix.Stat_t, for the owner and the inode.
func (i *info) Sys() any { return &i.st }

func (i *info) Mode() fs.FileMode {
	m := fs.FileMode(i.st.Mode & 0o777)
	switch i.st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	}
	if i.st.Mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if i.st.Mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if i.st.Mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
