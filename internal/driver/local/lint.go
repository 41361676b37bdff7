package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
)

// lintSite checks the site's code with the parsers of the software that
// runs it (catalog.SiteCheck: php -l for PHP) before anything on the host
// changes: a file that does not parse would answer every request for it
// with an error the moment it reached storage.
func (d *Driver) lintSite(ctx context.Context, p *plan.Plan, site string, last release.Manifest) error {
	var checks []*catalog.SiteCheck
	for _, n := range p.Nodes {
		if desc, err := catalog.Lookup(n.Role, n.Software); err == nil && desc.SiteCheck != nil && !slices.Contains(checks, desc.SiteCheck) {
			checks = append(checks, desc.SiteCheck)
		}
	}
	for _, c := range checks {
		if err := d.sys().checkSite(ctx, site, last, c); err != nil {
			return err
		}
	}
	return nil
}

// checkSite runs c on every file of the site that c checks and that is
// new or changed since the release last deployed from it (last, its
// manifest), and names each file that does not parse with the checker's
// message, in the site's order.
//
// The checks run side by side, a few per CPU: a checker is one process a
// file, mostly start-up, and WordPress has about a thousand PHP files (one
// at a time, they held up a first up for over five minutes on this 2-core
// host in 2026-11).
func checkSite(ctx context.Context, site string, last release.Manifest, c *catalog.SiteCheck) error {
	var todo []string
	err := filepath.WalkDir(site, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() || !slices.ContainsFunc(c.Extensions, func(ext string) bool { return strings.EqualFold(filepath.Ext(path), ext) }) {
			return err
		}
		rel, _ := filepath.Rel(site, path)
		if sum, _, err := release.HashFile(path); err == nil && last[filepath.ToSlash(rel)] == sum {
			return nil // deployed before, so it parsed then
		}
		todo = append(todo, path)
		return nil
	})
	if err != nil {
		return fmt.Errorf("site %s: %w", site, err)
	}

	bad := make([]string, len(todo))
	errs := make([]error, len(todo))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(len(todo), 2*runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				bad[i], errs[i] = checkFile(ctx, site, todo[i], c)
			}
		}()
	}
	for i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("site %s: %w", site, err)
	}
	bad = slices.DeleteFunc(bad, func(b string) bool { return b == "" })
	if len(bad) > 0 {
		return fmt.Errorf("site %s: %d files do not parse, so up changed nothing; fix them and run up again:\n  %s", site, len(bad), strings.Join(bad, "\n  "))
	}
	return nil
}

// checkFile runs c on one file of site, and returns "" if it parses, or
// the file and the checker's message.
func checkFile(ctx context.Context, site, path string, c *catalog.SiteCheck) (string, error) {
	rel, _ := filepath.Rel(site, path)
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(lctx, c.Argv[0], append(slices.Clone(c.Argv[1:]), path)...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return rel + ": " + checkMessage(string(out), path, rel), nil
	case err != nil:
		return "", fmt.Errorf("check %s with %s: %w", rel, c.Argv[0], err)
	}
	return "", nil
}

// checkMessage is a checker's error on one line, naming the file as the
// site does.
func checkMessage(out, path, rel string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Errors parsing") {
			continue
		}
		lines = append(lines, strings.ReplaceAll(l, path, rel))
	}
	return strings.Join(lines, " ")
}
