package local

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/bulkhead/bulkhead/internal/render"

	"github.com/bulkhead/bulkhead/internal/catalog"
)

// prepareRootfs makes a node's root: empty directories that serve as
// mount points, and the merged-/usr symlinks; the host's /usr is
// bind-mounted read-only. It belongs to the node's root (uid, in its user
// namespace), because daemons check that the paths they trust are root's
// (sshd's ChrootDirectory), and it is mounted read-only, so the node
// cannot change it.
func (d *Driver) prepareRootfs(dir string, uid int) error {
	// The parents only let the nodes through.
	for _, sub := range []string{filepath.Dir(filepath.Dir(dir)), filepath.Dir(dir)} {
		if err := os.MkdirAll(sub, 0o711); err != nil {
			return err
		}
		if err := os.Chmod(sub, 0o711); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, sub := range []string{"usr", "etc", "proc", "dev", "sys", "tmp", "run", "srv", "var", "var/lib", "var/lib/bulkhead", "var/log", "var/log/bulkhead", "var/tmp", "bulkhead", "bulkhead/cgroup"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	// A bind mount of a file needs a file to land on.
	if f, err := os.OpenFile(filepath.Join(dir, "bulkhead", "bulkhead"), os.O_CREATE|os.O_RDONLY, 0o755); err != nil {
		return err
	} else {
		f.Close()
	}
	// runc ignores mode=1777 on a tmpfs (as of 2026-11, runc 1.1.5), so the
	// mount points carry the sticky mode themselves.
	for _, sub := range []string{"tmp", "var/tmp"} {
		if err := os.Chmod(filepath.Join(dir, sub), 0o1777); err != nil {
			return err
		}
	}
	for link, target := range map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"} {
		p := filepath.Join(dir, link)
		if t, err := os.Readlink(p); err == nil && t == target {
			continue
		}
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	// Only the host writes here (the node sees it read-only), so the walk
	// meets nothing it did not make.
	return d.sys().chownTree(dir, uid, uid)
}

// etcFromHost lists what a node's /etc takes from the host: what daemons
// and the loader need, and nothing secret. No shadow, no ssh host keys, no
// ssl private keys.
var etcFromHost = []string{
	"alternatives", "php", "mime.types", "nginx/mime.types", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"nsswitch.conf", "localtime", "services", "protocols", "host.conf", "ssl/openssl.cnf",
	"ssh/moduli", "mysql/mariadb.cnf", "mysql/conf.d", "mysql/mariadb.conf.d", "postgresql-common", "ganesha",
	// Postfix's start-up check reads its list of files.
	"postfix/postfix-files", "postfix/postfix-files.d",
}

// accounts are the users that nodes' daemons run as: root, daemon and
// nobody, and every account the catalog names. The storage node's SFTP
// users exist only inside containers.
var accounts = append([]string{"root", "daemon", "nobody"}, catalog.Accounts()...)

// Storage's SFTP accounts. site-rw shares www-data's uid so that files app
// nodes upload belong to the uid their daemons run as.
var sftpAccounts = []string{
	"site-ro:x:2001:2001:bulkhead read-only site:/nonexistent:/usr/sbin/nologin",
	"site-rw:x:33:33:bulkhead read-write site:/nonexistent:/usr/sbin/nologin",
}

// prepareEtc builds the /etc every node of a stack sees, read-only. Running
// containers have dir bind-mounted, so it is updated in place: replacing the
// directory would leave them looking at a deleted one.
func prepareEtc(dir string) error {
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := buildEtc(tmp); err != nil {
		return err
	}
	return mirror(tmp, dir)
}

func buildEtc(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "bulkhead"), 0o755); err != nil {
		return err
	}
	for _, rel := range etcFromHost {
		src := filepath.Join("/etc", rel)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := copyTree(src, filepath.Join(dir, rel)); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
	}
	passwd, err := filterAccounts("/etc/passwd", accounts)
	if err != nil {
		return err
	}
	passwd = append(passwd, sftpAccounts...)
	group, err := filterAccounts("/etc/group", slices.Concat(accounts, catalog.Groups(), []string{"nogroup", "ssl-cert"}))
	if err != nil {
		return err
	}
	group = append(group, "site-ro:x:2001:")
	files := map[string]string{
		"passwd":      strings.Join(passwd, "\n") + "\n",
		"group":       strings.Join(group, "\n") + "\n",
		"hostname":    "",
		"resolv.conf": "# nodes resolve no names but their hosts file\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	// Each node's own hosts file is in its config directory, which a
	// new one replaces in place while the node runs (a scaled pool):
	// a link reaches the current file, where a bind of the file itself
	// would keep the old one.
	return os.Symlink(path.Join(path.Base(render.DefaultLayout().Conf), "hosts"), filepath.Join(dir, "hosts"))
}

// mirror makes dst hold what src holds: it copies what differs and removes
// what src lacks, leaving dst itself (and so any bind mount of it) in place.
func mirror(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	seen := map[string]bool{}
	err := filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		seen[rel] = true
		if rel == "." {
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		old, oerr := os.Lstat(target)
		switch {
		case info.IsDir():
			if oerr == nil && !old.IsDir() {
				os.Remove(target)
			}
			if err := os.MkdirAll(target, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm())
		case info.Mode()&fs.ModeSymlink != 0:
			link, _ := os.Readlink(path)
			if cur, err := os.Readlink(target); err == nil && cur == link {
				return nil
			}
			os.RemoveAll(target)
			return os.Symlink(link, target)
		default:
			if oerr == nil && old.Mode() == info.Mode() {
				if same, _ := sameContent(path, target); same {
					return nil
				}
			}
			if oerr == nil && old.IsDir() {
				os.RemoveAll(target)
			}
			return copyFile(path, target, info.Mode().Perm())
		}
	})
	if err != nil {
		return err
	}
	var extra []string
	filepath.WalkDir(dst, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dst, path)
		if !seen[rel] {
			extra = append(extra, path)
			if e.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	for _, path := range extra {
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	return nil
}

// filterAccounts returns the lines of a passwd-style file for names. Empty
// password fields are forced to "x"; shadow is not handed over.
func filterAccounts(file string, names []string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 1 && want[fields[0]] {
			fields[1] = "x"
			out = append(out, strings.Join(fields, ":"))
		}
	}
	return out, sc.Err()
}

// copyTree copies a file, symlink or directory tree.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			os.Remove(target)
			return os.Symlink(link, target)
		case info.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			if info.Mode().Perm()&0o004 == 0 {
				return nil // not world-readable: not for nodes
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	// A temporary file of its own: two ups of different stacks may install
	// the binary at once, and a shared name would let one truncate what
	// the other is writing before it is renamed into place.
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return err
	}
	tmp := out.Name()
	if err := out.Chmod(mode); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// installBinary copies the running bulkhead executable to dst, where
// containers and the supervisor run it from. A binary run by `go run` is
// deleted when it exits; the copy outlives it. An unchanged binary is not
// rewritten; a changed one replaces the old atomically, and running
// processes keep the inode they started with.
func installBinary(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	mine, err := selfHash()
	if err != nil {
		return err
	}
	if theirs, err := binaryID(dst); err == nil && bytes.Equal(mine, theirs) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return copyFile(self, dst, 0o755)
}

func sameContent(a, b string) (bool, error) {
	ha, err := fileHash(a)
	if err != nil {
		return false, err
	}
	hb, err := fileHash(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ha, hb), nil
}

// selfHash identifies this process's binary (see binaryID), read once:
// an up digests it in every fingerprint.
var selfHash = sync.OnceValues(func() ([]byte, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return binaryID(self)
})

// binaryID identifies the executable at path: by its Go build ID, whose
// last part the go command derives from the binary's content, and its
// size (bytes added to an ELF file leave its note readable); or, for a
// file without a build ID, by its SHA-256. Hashing the bulkhead binary
// (some 37 MB) cost 40 to 80 ms of CPU here, on every up.
func binaryID(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if id, err := goBuildID(path); err == nil && id != "" {
		return fmt.Appendf(nil, "go build %s, %d bytes", id, fi.Size()), nil
	}
	return fileHash(path)
}

// goBuildID is the Go build ID that the go command writes in an
// executable's ELF note (what `go tool buildid` prints), or "" for a
// file without one.
func goBuildID(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sec := f.Section(".note.go.buildid")
	if sec == nil {
		return "", nil
	}
	data, err := sec.Data()
	if err != nil {
		return "", err
	}
	// One note: name size, description size, type (4, the Go build ID),
	// the name "Go" padded to 4 bytes, then the ID.
	const head = 16
	if len(data) < head {
		return "", nil
	}
	order := f.ByteOrder
	namesz, descsz, typ := order.Uint32(data), order.Uint32(data[4:]), order.Uint32(data[8:])
	if namesz != 4 || typ != 4 || string(data[12:head]) != "Go\x00\x00" || uint64(descsz) > uint64(len(data)-head) {
		return "", nil
	}
	return string(data[head : head+int(descsz)]), nil
}

func fileHash(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
