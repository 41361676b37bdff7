package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// source is what an up applied, kept so that Boot can apply it again
// without the operator: the site's directory. The plan is plan.json.
type source struct {
	Site string `json:"site"`
}

func (p paths) source() string { return filepath.Join(p.stack, "source.json") }

// Boot brings back every stack on this host as its last up left it, after
// a reboot or anything else that removed what up made: each stack's saved
// plan is applied again with the site it was applied with. Missing
// packages are an error, not an install: a boot does not reach the
// network. One stack's failure does not keep the others down.
func (d *Driver) Boot(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(d.root())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var up []string
	var errs []error
	for _, e := range ents {
		ps := d.paths(e.Name())
		data, err := os.ReadFile(ps.source())
		if !e.IsDir() || errors.Is(err, fs.ErrNotExist) {
			continue // not a stack, or one no up finished
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stack %s: %w", e.Name(), err))
			continue
		}
		var src source
		if err := json.Unmarshal(data, &src); err != nil {
			errs = append(errs, fmt.Errorf("stack %s: %s: %w", e.Name(), ps.source(), err))
			continue
		}
		p, err := d.savedPlan(e.Name())
		if err != nil {
			errs = append(errs, fmt.Errorf("stack %s: %w", e.Name(), err))
			continue
		}
		d.progress("boot: bringing stack %s back", p.Stack)
		if _, err := d.Up(ctx, p, UpOptions{SiteDir: src.Site, NoInstall: true}); err != nil {
			errs = append(errs, fmt.Errorf("stack %s: %w", p.Stack, err))
			continue
		}
		up = append(up, p.Stack)
	}
	slices.Sort(up)
	return up, errors.Join(errs...)
}
