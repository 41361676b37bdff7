package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bulkhead/bulkhead/internal/driver/local"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// driverRoot is where the local driver keeps stacks; tests point it
// elsewhere.
var driverRoot = local.DefaultRoot

func newDriver(s stdio) *local.Driver {
	return &local.Driver{
		Root:     driverRoot,
		Log:      slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Progress: s.err,
	}
}

// loadStack is loadPlan plus the stack it was built from and the site
// directory as an absolute path.
func loadStack(s stdio, file string) (*spec.Stack, *plan.Plan, string, error) {
	st, err := loadSpec(s, file, false)
	if err != nil {
		return nil, nil, "", err
	}
	p, err := plan.Build(st)
	if err != nil {
		return nil, nil, "", err
	}
	if file == "" {
		file = defaultFile
	}
	site := p.Site.Dir
	if !filepath.IsAbs(site) {
		site = filepath.Join(filepath.Dir(file), site)
	}
	site, err = filepath.Abs(site)
	return st, p, site, err
}

// freeSpace returns the bytes free to unprivileged users on the filesystem
// that holds dir. Root may dig into the blocks reserved beyond that, but
// those keep the host itself running when the disk fills. Tests replace it.
var freeSpace = func(dir string) (int64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, err
	}
	return int64(fs.Bavail) * int64(fs.Bsize), nil
}

// checkDisk refuses a stack whose nodes' disks do not fit in the free
// space where the driver keeps its data, root or, before the first up
// made it, its nearest existing parent. The errors are spec.Errors, placed
// at the tiers' disk fields, so up exits 2 as for any invalid stack file.
//
// As of this commit the check counts every node's whole disk, even the
// images an earlier up made, which need no new space; so a stack that
// fills most of its host can be refused on a second up. The driver, which
// knows which images exist, is the place to subtract them.
func checkDisk(st *spec.Stack, root string) error {
	dir := root
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	free, err := freeSpace(dir)
	if err != nil {
		return fmt.Errorf("measure free space for the nodes' disks in %s: %w", dir, err)
	}
	return st.CheckDisk(free, root)
}

// stackName names the stack a verb acts on: --stack if given, else the name
// in the stack file (./bulkhead.yaml by default). Only the name is needed,
// so a file that no longer validates can still be taken down.
func stackName(file, stack string) (string, error) {
	if stack != "" {
		return stack, nil
	}
	file, data, err := readStackFile(file, "pass -f FILE or --stack NAME")
	if err != nil {
		return "", err
	}
	st, err := spec.Parse(file, data)
	if err != nil {
		return "", err
	}
	return st.Name, nil
}
