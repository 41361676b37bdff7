package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// timeFormat stamps an archive's name; it sorts as the times do.
const timeFormat = "20060102T150405Z"

// Name is the file name of stack's archive made at t:
// STACK-20260102T150405Z.tar.zst.
func Name(stack string, t time.Time) string {
	return stack + "-" + t.UTC().Format(timeFormat) + ".tar.zst"
}

// Rotate removes all but the newest keep archives of stack in dir, newest
// by the time in their names, and returns the paths it removed. Only files
// named as Name names them count; a partial archive being written, or
// another stack's (even one whose name starts with this one's), is never
// touched.
func Rotate(dir, stack string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("rotate backups: keep %d; keep at least 1", keep)
	}
	pattern := regexp.MustCompile(`^` + regexp.QuoteMeta(stack) + `-(\d{8}T\d{6}Z)\.tar\.zst$`)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rotate backups: %w", err)
	}
	type archive struct {
		name string
		at   time.Time
	}
	var found []archive
	for _, e := range entries {
		sub := pattern.FindStringSubmatch(e.Name())
		if sub == nil || !e.Type().IsRegular() {
			continue
		}
		at, err := time.Parse(timeFormat, sub[1])
		if err != nil {
			continue
		}
		found = append(found, archive{e.Name(), at})
	}
	slices.SortFunc(found, func(a, b archive) int { return b.at.Compare(a.at) })
	var removed []string
	var errs []error
	for _, a := range found[min(keep, len(found)):] {
		p := filepath.Join(dir, a.name)
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		if err := syncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("rotate backups: %w", err)
	}
	return removed, nil
}
