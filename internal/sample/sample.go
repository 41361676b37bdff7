// Package sample writes the starting point of a new stack: a bulkhead.yaml
// that spells out the default stack with every setting explained, and a small
// PHP site under site/ that exercises every flow of the split stack (static
// files, load-balanced pages, cache, database and uploads to storage).
//
// The files are embedded from files/; the PHP there is data to this package,
// not code it runs.
package sample

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/bulkhead/bulkhead/internal/spec"
)

//go:embed files
var files embed.FS

const (
	stackName = "bulkhead.yaml"
	siteName  = "site"
)

// StackFile returns the sample bulkhead.yaml: the default stack, with a
// comment on every setting.
func StackFile() []byte {
	b, err := files.ReadFile("files/" + stackName)
	if err != nil {
		panic("sample: " + err.Error()) // embedded; cannot happen
	}
	return b
}

// Write writes dir/bulkhead.yaml and the sample site under dir/site, creating
// dir if needed, and returns the paths it wrote. It also creates the site's
// writable directories (uploads), listing those it created with a trailing
// separator.
//
// Unless force is set, Write writes nothing when dir/bulkhead.yaml or
// dir/site exists already, and returns an error that wraps fs.ErrExist and
// names the path. With force it overwrites the files it owns and leaves
// every other file alone, such as uploads. Each file is replaced by a rename,
// so a reader never sees half of one.
func Write(dir string, force bool) (written []string, err error) {
	stack := filepath.Join(dir, stackName)
	if !force {
		if err := refuseExisting(dir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write sample: %w", err)
	}

	var errs []error
	err = fs.WalkDir(files, "files/"+siteName, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(name, "files/")))
		if d.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				errs = append(errs, fmt.Errorf("write sample: %w", err))
				return fs.SkipDir
			}
			return nil
		}
		data, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		if err := writeFile(target, data); err != nil {
			errs = append(errs, err)
			return nil
		}
		written = append(written, target)
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("write sample: %w", err))
	}
	for _, w := range spec.Default().Site.Writable {
		target := filepath.Join(dir, siteName, filepath.FromSlash(path.Clean(w)))
		if _, err := os.Stat(target); err == nil {
			continue
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("write sample: %w", err))
			continue
		}
		written = append(written, target+string(filepath.Separator))
	}
	// The stack file goes last, and only after the site went well: a dir that
	// has it holds the whole sample.
	if len(errs) > 0 {
		return written, errors.Join(errs...)
	}
	if err := writeFile(stack, StackFile()); err != nil {
		errs = append(errs, err)
	} else {
		written = append(written, stack)
	}
	return written, errors.Join(errs...)
}

// writeFile replaces name with data, mode 0644, through a temporary file in
// the same directory and a rename.
func writeFile(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
