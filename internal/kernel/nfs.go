// Package kernel answers questions about the running Linux kernel that decide
// how bulkhead lays out a stack, such as whether it can mount NFS. It only
// reads /proc and /lib/modules; it changes nothing.
package kernel

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"path"
	"strings"
)

// CanMountNFS reports whether this kernel can mount NFS, with a reason a user
// can read ("this kernel has no NFS client"). It looks for nfs or nfs4 in
// /proc/filesystems (built in, or a module already loaded) and then for an
// nfs module that modprobe could load.
func CanMountNFS() (bool, string) {
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		release = nil
	}
	return canMountNFS(os.DirFS("/"), strings.TrimSpace(string(release)))
}

// canMountNFS is CanMountNFS on a root file system fsys, for a kernel release
// such as "6.1.0-18-amd64".
func canMountNFS(fsys fs.FS, release string) (bool, string) {
	if data, err := fs.ReadFile(fsys, "proc/filesystems"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			// Lines are "nodev\tnfs4" or "\text4": the name is the last field.
			f := strings.Fields(sc.Text())
			if len(f) > 0 && (f[len(f)-1] == "nfs" || f[len(f)-1] == "nfs4") {
				return true, "this kernel can mount " + f[len(f)-1]
			}
		}
	}
	if release != "" && !strings.Contains(release, "/") {
		dir := path.Join("lib/modules", release, "kernel/fs/nfs")
		if entries, err := fs.ReadDir(fsys, dir); err == nil {
			for _, e := range entries {
				// nfs.ko, nfs.ko.xz, nfs.ko.zst, nfsv4.ko ...
				if name := e.Name(); strings.HasPrefix(name, "nfs.ko") || strings.HasPrefix(name, "nfsv4.ko") {
					return true, "this kernel has an nfs module in /" + dir
				}
			}
		}
	}
	return false, "this kernel has no NFS client"
}
