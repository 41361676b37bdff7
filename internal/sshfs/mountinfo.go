package sshfs

import (
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
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
	infos, err := mountinfo.GetMountsFromReader(r, nil)
	if err != nil {
		return nil, err
	}
	return mounts(infos), nil
}

func mounts(infos []*mountinfo.Info) []mount {
	out := make([]mount, len(infos))
	for i, m := range infos {
		out[i] = mount{
			id: m.ID, parent: m.Parent, dev: fmt.Sprintf("%d:%d", m.Major, m.Minor),
			root:     m.Root,
			point:    m.Mountpoint,
			opts:     strings.Split(m.Options, ","),
			optional: strings.Fields(m.Optional),
			fstype:   m.FSType,
			source:   m.Source,
		}
	}
	return out
}

// readMountinfo reads this thread's mount table: the same as the
// process's, unless the thread was moved to another mount namespace.
func readMountinfo() ([]mount, error) {
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return mounts(infos), nil
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

// AnsweringEach reports, for each of targets, whether an sshfs is mounted
// there and answers a stat within limit (see answers). sshfs mounts before it connects,
// so a listed mount may still be connecting, or about to give up; a stat
// of it waits for sshfs. The stats run at once. One still waiting at limit
// counts as not answering and goes on in the background until sshfs
// answers or exits (its ConnectTimeout and ServerAlive options bound that).
func AnsweringEach(targets []string, limit time.Duration) ([]bool, error) {
	out, err := MountedEach(targets)
	if err != nil {
		return nil, err
	}
	answered := make([]chan bool, len(targets))
	for i, t := range targets {
		if !out[i] {
			continue
		}
		answered[i] = make(chan bool, 1)
		go func() { answered[i] <- answers(t) }()
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for i, a := range answered {
		if a == nil {
			continue
		}
		select {
		case out[i] = <-a:
		case <-deadline.C:
			// Every stat still waiting is late: none gets more time.
			for k := i; k < len(answered); k++ {
				if answered[k] == nil {
					continue
				}
				select {
				case out[k] = <-answered[k]:
				default:
					out[k] = false
				}
			}
			return out, nil
		}
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
	return PrepareTargets([]string{target})
}

// PrepareTargets is PrepareTarget for each of targets, from one reading of
// the mount table: a host with a hundred site mounts has a long one. No
// target may be beneath another. It prepares every target it can and
// returns the errors of the others, each naming its target.
func PrepareTargets(targets []string) error {
	ts := make([]string, len(targets))
	for i, target := range targets {
		t, err := canon(target)
		if err != nil {
			return err
		}
		ts[i] = t
	}
	ms, err := readMountinfo()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range ts {
		errs = append(errs, prepare(ms, t))
	}
	return errors.Join(errs...)
}

// prepare prepares t, as ms shows it before. Preparing t changes only
// what is mounted on t.
func prepare(ms []mount, t string) error {
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
