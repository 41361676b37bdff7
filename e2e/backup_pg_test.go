package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/backup"
)

// TestBackupRestorePostgreSQL is issue #13's round trip on a stack whose
// database is PostgreSQL: its dump made and loaded with pg_dump and
// pg_restore, as the catalog says. Posts and binary uploads are backed up;
// the archive records the server's version. More posts and uploads follow,
// the stack goes down keeping its data, and restore --force replaces that
// data: afterwards the stack holds only the archive's posts and uploads.
// With the stack down and its data there, restore --force of a MariaDB
// archive and of a dump from a newer PostgreSQL are refused, naming what is
// wrong, with the stack's disks untouched. Then down --purge and a restore:
// every post and upload byte for byte, and verify passing.
func TestBackupRestorePostgreSQL(t *testing.T) {
	s := newStack(t, "bkpg", 251, 19104, "tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {software: postgresql}\n  storage: {}\n  app: {replicas: 2}\n")
	s.run("up")
	ns, url := s.outsideURL(t)
	c := outsideClient(t, ns)
	small, large := noisePNG(64, 48), noisePNG(512, 512)
	posts := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			title := fmt.Sprintf("%s %d", prefix, i)
			var img []byte
			switch {
			case i == 1:
				img = titledPNG(large, title)
			case i != 2:
				img = titledPNG(small, title)
			}
			mustPost(t, c, url, title, img)
		}
	}
	posts("pg post", 4)
	before := siteData(t, s)
	if n := strings.Count(before.rows, "pg post"); n != 4 {
		t.Fatalf("the database holds %d of the 4 posts:\n%s", n, before.rows)
	}
	if n := strings.Count(before.uploads, ".png "); n != 3 {
		t.Fatalf("storage holds %d of the 3 images:\n%s", n, before.uploads)
	}

	archive := filepath.Join(s.dir, "bkpg.tar.zst")
	out := s.run("backup", "-o", archive)
	t.Logf("backup:\n%s", out)
	if !regexp.MustCompile(`database: postgresql dump, .*, of postgresql 15\.\d+`).MatchString(out) || !strings.Contains(out, "uploads: 3 files") {
		t.Errorf("backup's summary lacks the postgresql dump with its version, or the 3 uploads:\n%s", out)
	}
	m, err := backup.Inspect(archive)
	if err != nil {
		t.Fatal(err)
	}
	if m.DB == nil || m.DB.Software != "postgresql" || m.DB.DumpFormat != "postgresql-custom" || !regexp.MustCompile(`^15\.\d+$`).MatchString(m.DB.Version) {
		t.Errorf("the manifest's database: %+v; want postgresql 15.x, postgresql-custom", m.DB)
	}

	// Other data after the backup; down keeps it; restore --force
	// replaces it with the archive's, and nothing of it is left.
	posts("pg later", 3)
	if got := siteData(t, s); !strings.Contains(got.rows, "pg later 0") || strings.Count(got.uploads, ".png ") != 5 {
		t.Fatalf("the later posts are not there:\n%s\n%s", got.rows, got.uploads)
	}
	s.run("down")
	out = s.run("restore", archive, "--force")
	t.Logf("restore --force over other data:\n%s", out)
	if !strings.Contains(out, "replaced: db's disk, storage's disk") || !strings.Contains(out, "verify: PASS") {
		t.Errorf("restore --force:\n%s", out)
	}
	s.sameData(t, before, "after restore --force over other data")

	// Down with its data: archives it cannot load are refused, even with
	// --force, before its disks are touched.
	s.run("down")
	disks := func() string {
		var b strings.Builder
		for _, n := range []string{"db", "storage"} {
			fi, err := os.Stat(filepath.Join("/var/lib/bulkhead/bkpg/nodes", n, "disk.img"))
			if err != nil {
				t.Fatalf("node %s's disk: %v", n, err)
			}
			fmt.Fprintf(&b, "%s %d %s\n", n, fi.Size(), fi.ModTime())
		}
		return b.String()
	}
	was := disks()
	bad := t.TempDir()
	for _, c := range []struct {
		name string
		db   backup.DB
		want []string
	}{
		{"a mariadb dump", backup.DB{Role: "db", Software: "mariadb", Version: "10.11.19", DumpFormat: "mariadb-sql", DumpFile: "mariadb.sql"},
			[]string{"the dump is mariadb-sql, made by mariadb", "runs postgresql"}},
		{"a dump of a newer postgresql", backup.DB{Role: "db", Software: "postgresql", Version: "99.1", DumpFormat: "postgresql-custom", DumpFile: "postgresql.dump"},
			[]string{"made by postgresql 99.1, a newer release than this host's postgresql " + m.DB.Version, "99 or newer"}},
	} {
		path := filepath.Join(bad, strings.ReplaceAll(c.name, " ", "-")+".tar.zst")
		if _, err := backup.WriteFile(path, backup.Source{Stack: "bkpg", Bulkhead: "test", DB: &c.db, Dump: strings.NewReader("not loaded\n"), StackFile: []byte("name: bkpg\n")}, backup.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		out, err := s.exec("restore", path, "--force")
		for _, w := range c.want {
			if err == nil || !strings.Contains(out, w) {
				t.Errorf("restore --force of %s: %v; want it refused naming %q:\n%s", c.name, err, w, out)
			}
		}
		t.Logf("restore --force of %s: %s", c.name, lastLine(out))
		if now := disks(); now != was {
			t.Errorf("after the refused restore of %s the disks are\n%swere\n%s", c.name, now, was)
		}
		if out, _ := exec.Command("runc", "list", "-q").Output(); strings.Contains(string(out), "bh-bkpg-") {
			t.Errorf("after the refused restore of %s containers run:\n%s", c.name, out)
		}
	}

	// Purged, and restored: the same posts and uploads, byte for byte.
	s.run("down", "--purge")
	t0 := time.Now()
	out = s.run("restore", archive)
	t.Logf("restore after down --purge: %s\n%s", time.Since(t0).Round(100*time.Millisecond), out)
	for _, want := range []string{"uploads: 3 files", "database: postgresql dump", "verify: PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("restore's summary lacks %q", want)
		}
	}
	s.sameData(t, before, "after the restore")
	ns, url = s.outsideURL(t)
	s.servesPosts(t, outsideClient(t, ns), url, before)
}

// dbSoftware is the software of the stack's db node, as its plan says.
func dbSoftware(t *testing.T, s *stack) string {
	t.Helper()
	out, errOut, err := s.stdout("plan", "--output", "json")
	if err != nil {
		t.Fatalf("plan --output json: %v\n%s", err, errOut)
	}
	var p struct {
		Nodes []struct {
			Role     string `json:"role"`
			Software string `json:"software"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	for _, n := range p.Nodes {
		if n.Role == "db" {
			return n.Software
		}
	}
	t.Fatal("the plan has no db node")
	return ""
}
