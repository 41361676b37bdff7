package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// dumpBackend is a backend whose db node's dump writes dump and then
// exits with err; it knows nothing else.
type dumpBackend struct {
	driver.Backend
	p       *plan.Plan
	release string
	dump    string
	err     error
	argv    []string
}

func (b *dumpBackend) Snapshot(ctx context.Context, stack string) (*driver.Snapshot, error) {
	return &driver.Snapshot{Plan: b.p, StackFile: []byte("name: shop\n"), Release: "r1", ReleaseDir: b.release}, nil
}

func (b *dumpBackend) Exec(ctx context.Context, stack, node string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if strings.Join(args, " ") == "mariadbd --version" {
		io.WriteString(stdout, "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n")
		return nil
	}
	b.argv = append([]string{node}, args...)
	io.WriteString(stdout, b.dump)
	if b.err != nil {
		io.WriteString(stderr, "mariadb-dump: Got error: 2013: Lost connection to server during query\n")
	}
	return b.err
}

// TestBackupDump runs backup against a backend whose dump works, and one
// whose dump fails half way: the first archive holds the dump the db node
// wrote, made by the catalog's command; the second backup fails with the
// tool's own words, and leaves no archive, not even a partial one.
func TestBackupDump(t *testing.T) {
	st, err := spec.Load("bulkhead.yaml", []byte("name: shop\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {}\n"), spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	os.MkdirAll(release, 0o755)
	os.WriteFile(filepath.Join(release, "index.php"), []byte("<?php"), 0o644)
	b := &dumpBackend{p: p, release: release, dump: "-- MariaDB dump\nINSERT INTO posts VALUES (1);\n"}
	old := newDriver
	newDriver = func(stdio) driver.Backend { return b }
	defer func() { newDriver = old }()

	var out, errb bytes.Buffer
	good := filepath.Join(dir, "good.tar.zst")
	if err := runBackup(context.Background(), stdio{&out, &errb}, backupOptions{stackFlags: stackFlags{Stack: "shop"}, Output: good}); err != nil {
		t.Fatalf("backup: %v\n%s", err, errb.String())
	}
	if got := strings.Join(b.argv, " "); got != "db mariadb-dump --defaults-file=/etc/bulkhead/my.cnf --single-transaction --routines --triggers --events site" {
		t.Errorf("the dump ran as %q", got)
	}
	m, err := backup.Inspect(good)
	if err != nil || m.DB == nil || m.DB.DumpFormat != "mariadb-sql" || m.DB.Version != "10.11.19" || m.HasSecrets() {
		t.Fatalf("the archive: %v, %+v", err, m)
	}
	if !strings.Contains(out.String(), "database: mariadb dump, 46 B, of mariadb 10.11.19") || !strings.Contains(out.String(), "secrets: not included") {
		t.Errorf("the summary:\n%s", out.String())
	}

	b.err = errors.New("exit status 2")
	bad := filepath.Join(dir, "bad.tar.zst")
	err = runBackup(context.Background(), stdio{&out, &errb}, backupOptions{stackFlags: stackFlags{Stack: "shop"}, Output: bad})
	if err == nil || !strings.Contains(err.Error(), "mariadb-dump in node db: exit status 2: mariadb-dump: Got error: 2013") {
		t.Errorf("backup with a failing dump: %v", err)
	}
	for _, p := range []string{bad, bad + ".partial"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is there after a failed dump: %v", p, err)
		}
	}
}
