package local

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/release"
)

// TestCheckSite: PHP that does not parse is refused, named with PHP's
// message and line; files synced before are not parsed again; other files
// are not PHP's business.
func TestCheckSite(t *testing.T) {
	d, err := catalog.Lookup(catalog.RoleApp, catalog.Default(catalog.RoleApp))
	if err != nil || d.SiteCheck == nil {
		t.Fatalf("the default app software has no site check: %v", err)
	}
	_, err = exec.LookPath(d.SiteCheck.Argv[0])
	hosttest.Require(t, err == nil, "%s (apt-get install php8.2-cli): %v", d.SiteCheck.Argv[0], err)
	site := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		path := filepath.Join(site, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("index.php", "<?php echo 'ok';\n")
	write("lib/broken.php", "<?php\nfunction f( {\n")
	write("assets/app.js", "function f( {\n")
	ctx := context.Background()

	err = checkSite(ctx, site, nil, d.SiteCheck)
	if err == nil || !strings.Contains(err.Error(), "1 files do not parse") || !strings.Contains(err.Error(), "lib/broken.php: Parse error: syntax error") ||
		!strings.Contains(err.Error(), "on line 2") || strings.Contains(err.Error(), site+"/lib") || strings.Contains(err.Error(), "app.js") {
		t.Fatalf("broken site: %v; want lib/broken.php named with PHP's message and line, and nothing else", err)
	}

	// Fixed: it passes.
	write("lib/broken.php", "<?php\nfunction f() {}\n")
	if err := checkSite(ctx, site, nil, d.SiteCheck); err != nil {
		t.Fatalf("fixed site: %v", err)
	}

	// A file of the release last deployed is not parsed again: its
	// manifest says it parsed then. Here the manifest vouches for a file
	// that does not parse, which only a parser that ran would catch.
	write("old.php", "<?php (\n")
	sum, _, err := release.HashFile(filepath.Join(site, "old.php"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSite(ctx, site, release.Manifest{"old.php": sum}, d.SiteCheck); err != nil {
		t.Errorf("a file deployed before was parsed again: %v", err)
	}
}
