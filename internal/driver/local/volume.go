package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/runc"
)

// A node's writable storage is a filesystem of its own: an ext4 image file
// of the node's disk size, loop-mounted on the host at nodes/NODE/vol.
// data, log and run inside it are bound into the node; out, beside them,
// holds the container's output and is never bound. A node that fills its
// disk fills only its image: the host's disk, bulkhead's state and the
// other nodes keep their space. The image outlives down, like the data
// it holds; down --purge deletes it.

// volumeDirs are the image's directories the node writes. writeNode gives
// them to the node's root or its daemon's account.
var volumeDirs = []string{"data", "log", "run"}

// ensureVolume makes a node's image if it has none, grows it to the
// node's disk size, mounts it, and moves in the node's data from the
// layout before images.
func (d *Driver) ensureVolume(ctx context.Context, p *plan.Plan, n *plan.Node, j *journal) error {
	np := d.paths(p.Stack).node(n.Name)
	img, vol := np.image(), np.vol()
	size := n.Disk
	if err := os.MkdirAll(vol, 0o755); err != nil {
		return err
	}
	sys := d.sys()
	mounted, err := sys.mounted(vol)
	if err != nil {
		return fmt.Errorf("node %s volume: %w", n.Name, err)
	}
	info, err := os.Stat(img)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if mounted {
			return fmt.Errorf("node %s: %s is mounted but its image %s is gone; run 'bulkhead down' first", n.Name, vol, img)
		}
		d.progress("disk: %s gets %s", n.Name, humanBytes(size))
		if err := sys.makeImage(ctx, img, size); err != nil {
			return fmt.Errorf("node %s disk image: %w", n.Name, err)
		}
	case err != nil:
		return err
	case info.Size() < size:
		d.progress("disk: %s grows from %s to %s", n.Name, humanBytes(info.Size()), humanBytes(size))
		if err := sys.growImage(ctx, img, vol, size, mounted); err != nil {
			return fmt.Errorf("node %s disk image: %w", n.Name, err)
		}
	case info.Size() > size:
		// Shrinking an ext4 that holds data is slow and can fail half
		// way; the node keeps its larger disk.
		d.progress("disk: %s keeps its %s disk: shrinking to %s is not supported (down --purge and up start it afresh, without its data)", n.Name, humanBytes(info.Size()), humanBytes(size))
	}
	if err := j.record(Object{Kind: KindVolume, Name: vol, Detail: img}); err != nil {
		return err
	}
	if !mounted {
		if err := sys.mountImage(ctx, img, vol); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	// Only the host reaches the image's root and out/: the node sees
	// data, log and run, from inside.
	if err := os.Chmod(vol, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(np.out(), 0o700); err != nil {
		return err
	}
	ids := j.nodeIDs(n.Name)
	for _, dir := range volumeDirs {
		path := filepath.Join(vol, dir)
		if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return d.migrateData(n, np, ids)
}

// makeImage creates a sparse image of size bytes and an ext4 on it, with
// no blocks reserved for the host's root: the node's own root is not the
// host's, and its disk is all its own.
func makeImage(ctx context.Context, img string, size int64) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(img)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(img)
		return err
	}
	// The image is a new sparse file, which reads as zeros: zeroing its
	// inode tables and journal (16 MB of writes a node, which made the
	// holes real disk blocks) would write what is already there.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-L", "bulkhead",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", img).CombinedOutput()
	if err != nil {
		os.Remove(img)
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mountImage loop-mounts a node's image on vol, with the flags every
// bind of its directories keeps.
func mountImage(ctx context.Context, img, vol string) error {
	out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noexec", img, vol).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w: %s", img, vol, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// growImage extends the image file and its filesystem, online when it is
// mounted (the loop device learns the new size first).
func growImage(ctx context.Context, img, vol string, size int64, mounted bool) error {
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	run := func(name string, args ...string) error {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if !mounted {
		// resize2fs wants a checked filesystem when it is offline; e2fsck
		// exits 1 when it fixed something, which is fine.
		if err := run("e2fsck", "-f", "-p", img); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				return err
			}
		}
		return run("resize2fs", img)
	}
	dev, err := loopDevice(vol)
	if err != nil {
		return err
	}
	if err := run("losetup", "-c", dev); err != nil {
		return err
	}
	return run("resize2fs", dev)
}

// loopDevice names the device mounted on vol.
func loopDevice(vol string) (string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(vol))
	if err != nil {
		return "", err
	}
	if len(ms) == 0 || !strings.HasPrefix(ms[0].Source, "/dev/loop") {
		return "", fmt.Errorf("%s is not a loop mount", vol)
	}
	return ms[0].Source, nil
}

// unmountVolume unmounts a node's image. The loop device goes with the
// mount (mount -o loop sets it to clear itself).
func unmountVolume(vol string) error {
	for range maxVolumeStack {
		mounted, err := mountinfo.Mounted(vol)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !mounted) {
			return nil
		}
		if err != nil {
			return err
		}
		err = unix.Unmount(vol, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(vol, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", vol, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after %d unmounts", vol, maxVolumeStack)
}

const maxVolumeStack = 8

// migrateData moves a node's data from the layout before disk images
// (nodes/NODE/data on the host's disk) into its image, once, shifting its
// owners into the node's id block. The node is not running then: nothing
// in the tree can change under the walk.
func (d *Driver) migrateData(n *plan.Node, np nodePaths, ids runc.IDMap) error {
	old := np.legacyData()
	info, err := os.Lstat(old)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("node %s: %s is not a directory; move it away and run up again", n.Name, old)
	}
	d.progress("disk: moving %s's data from %s into its disk image", n.Name, old)
	out, err := exec.Command("cp", "-a", old+"/.", np.data()+"/").CombinedOutput()
	if err != nil {
		return fmt.Errorf("node %s: copy %s into its disk image: %w: %s", n.Name, old, err, strings.TrimSpace(string(out)))
	}
	if ids.Size > 0 {
		err := filepath.WalkDir(np.data(), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			st := info.Sys().(*unix.Stat_t)
			uid, gid := int(st.Uid), int(st.Gid)
			if uid < idRange {
				uid = hostID(ids, uid)
			}
			if gid < idRange {
				gid = hostID(ids, gid)
			}
			return d.sys().lchown(path, uid, gid)
		})
		if err != nil {
			return fmt.Errorf("node %s: shift owners of its data: %w", n.Name, err)
		}
	}
	return os.RemoveAll(old)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%dK", n>>10)
}
