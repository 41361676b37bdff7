// Package durable writes files so that a crash leaves either the old
// bytes or all of the new ones.
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data so that, whatever happens to the
// machine, path holds either its old bytes or all of the new ones: the
// data goes to a temporary file beside it, which is synced, renamed over
// path, and the directory synced so that the rename itself is on disk.
// The journal, the plan and the secrets are written this way; an empty
// state.json after a power loss would block both up and down.
func Write(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	keep = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
