package sshfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	id, parent int
	dev        string   // major:minor of the filesystem
	root       string   // the directory of that filesystem mounted here
	point      string   // where, in this mount namespace
	opts       []string // per-mount options: ro or rw, nosuid, ...
	optional   []string // propagation: shared:N, master:N, ...
	fstype     string
	source     string
}

func (m *mount) shared() bool {
	for _, o := range m.optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// parseMountinfo parses the format of proc(5)'s /proc/PID/mountinfo.
func parseMountinfo(r io.Reader) ([]mount, error) {
	var out []mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, sc.Text())
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: bad mount ids: %q", n, sc.Text())
		}
		out = append(out, mount{
			id: id, parent: parent, dev: f[2],
			root:     unescape(f[3]),
			point:    unescape(f[4]),
			opts:     strings.Split(f[5], ","),
			optional: f[6:sep],
			fstype:   f[sep+1],
			source:   unescape(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescape undoes the kernel's octal escapes of space, tab, newline and
// backslash in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readMountinfo() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ms, err := parseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	return ms, nil
}

// top returns the mount that a path lookup of point reaches: of the mounts
// on point, the one that no other mount on point is stacked on. Nil if
// point is not a mount point.
func top(ms []mount, point string) *mount {
	var found *mount
	for i := range ms {
		if ms[i].point != point {
			continue
		}
		covered := false
		for j := range ms {
			if ms[j].point == point && ms[j].parent == ms[i].id {
				covered = true
				break
			}
		}
		if !covered {
			found = &ms[i]
		}
	}
	return found
}

func byID(ms []mount, id int) *mount {
	for i := range ms {
		if ms[i].id == id {
			return &ms[i]
		}
	}
	return nil
}

// selfBind reports whether m is a bind of its own mount point, as
// PrepareTarget makes: the same filesystem and directory as the mount it
// sits on shows there.
func selfBind(ms []mount, m *mount) bool {
	p := byID(ms, m.parent)
	if p == nil || p.dev != m.dev || p.id == m.id {
		return false
	}
	rel, err := filepath.Rel(p.point, m.point)
	if err != nil || strings.HasPrefix(rel, "..") {
		return false
	}
	return m.root == path.Join(p.root, rel)
}

// canon returns target absolute and clean, with symlinks in its parent
// resolved as mountinfo shows them. The last element is not resolved: a
// stale FUSE mount point cannot even be stat'ed.
func canon(target string) (string, error) {
	if !filepath.IsAbs(target) {
		return "", fmt.Errorf("mount target %q: want an absolute path", target)
	}
	t := filepath.Clean(target)
	if t == "/" {
		return "", fmt.Errorf("mount target %q: refusing the root directory", target)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(t))
	if err != nil {
		return "", fmt.Errorf("mount target %s: %w", target, err)
	}
	return filepath.Join(dir, filepath.Base(t)), nil
}

// Mounted reports whether an sshfs is what target shows: the topmost mount
// on it has type fuse.sshfs. A stale mount whose sshfs died counts.
func Mounted(target string) (bool, error) {
	ok, err := MountedEach([]string{target})
	if err != nil {
		return false, err
	}
	return ok[0], nil
}

// MountedEach is Mounted for each of targets, from one reading of the
// mount table: a host with a hundred site mounts has a long one.
func MountedEach(targets []string) ([]bool, error) {
	ts := make([]string, len(targets))
	for i, target := range targets {
		t, err := canon(target)
		if err != nil {
			return nil, err
		}
		ts[i] = t
	}
	ms, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(ts))
	for i, t := range ts {
		m := top(ms, t)
		out[i] = m != nil && m.fstype == fstype
	}
	return out, nil
}

// umountNoFollow is UMOUNT_NOFOLLOW, which package syscall lacks.
const umountNoFollow = 0x8

// maxStack bounds the unmount loops: mounts stacked deeper than this on
// one target are not bulkhead's doing.
const maxStack = 16

// Unmount removes every sshfs mounted on top of target, lazily if one is
// busy, and nothing below them. Unmounting what is not mounted succeeds.
// A live sshfs whose mount is removed exits.
func Unmount(target string) error {
	t, err := canon(target)
	if err != nil {
		return err
	}
	for range maxStack {
		ok, err := Mounted(t)
		if err != nil || !ok {
			return err
		}
		if err := umount(t); err != nil {
			return err
		}
	}
	return fmt.Errorf("unmount %s: still an sshfs after %d unmounts", t, maxStack)
}

// umount unmounts the top mount on t. Root needs no fusermount3: it is
// the same umount2 that fusermount3 -u (-z) makes. A busy mount is
// detached: it disappears from the tree now and goes when its last user
// does.
func umount(t string) error {
	// UMOUNT_NOFOLLOW: were t's last element a link, unmount nothing
	// rather than where it points.
	err := syscall.Unmount(t, umountNoFollow)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(t, umountNoFollow|syscall.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) { // EINVAL: not a mount point
		return fmt.Errorf("unmount %s: %w", t, err)
	}
	return nil
}

// PrepareTarget makes target a shared mount of its own: a bind of the
// directory on itself, in a peer group of its own. A container that then
// bind-mounts target with (r)slave propagation receives every sshfs mounted
// on target later, and every unmount, while nothing it mounts comes back.
// Preparing twice changes nothing. Prepare before mounting: an sshfs
// already on target would be below the bind.
func PrepareTarget(target string) error {
	t, err := canon(target)
	if err != nil {
		return err
	}
	ms, err := readMountinfo()
	if err != nil {
		return err
	}
	m := top(ms, t)
	switch {
	case m == nil:
		if err := syscall.Mount(t, t, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on itself: %w", t, err)
		}
		// A bind of a directory on a shared mount would join that mount's
		// peer group and share its events with all of its peers: make a
		// group of its own.
		if err := syscall.Mount("", t, "", syscall.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", t, err)
		}
	case m.fstype == fstype:
		if below := byID(ms, m.parent); below != nil && below.point == t && below.shared() {
			return nil // prepared, then mounted
		}
		return fmt.Errorf("prepare %s: an sshfs is mounted there already; stop it, prepare, then mount", t)
	case m.shared():
		return nil
	}
	if err := syscall.Mount("", t, "", syscall.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", t, err)
	}
	return nil
}

// ReleaseTarget undoes PrepareTarget: it unmounts the bind of target on
// itself. It leaves any other mount alone, refuses while an sshfs is still
// mounted on target, and succeeds if there is nothing to release.
func ReleaseTarget(target string) error {
	t, err := canon(target)
	if err != nil {
		return err
	}
	for range maxStack {
		ms, err := readMountinfo()
		if err != nil {
			return err
		}
		m := top(ms, t)
		switch {
		case m == nil:
			return nil
		case m.fstype == fstype:
			return fmt.Errorf("release %s: an sshfs is still mounted there; stop it first", t)
		case !selfBind(ms, m):
			return nil
		}
		if err := umount(t); err != nil {
			return err
		}
	}
	return fmt.Errorf("release %s: still bound after %d unmounts", t, maxStack)
}
