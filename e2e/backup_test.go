package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestBackupRestore is issue #13's round trip. A stack with posts and
// uploads (binary images, one of a megabyte) is backed up while visitors
// in its outside namespace send GET / without pause, and not one of their
// requests may fail. The stack is then purged and restored from the
// archive: every post and every upload must come back byte for byte, with
// its owner, mode and time, and verify must pass. The same archive then
// restores into a second stack, with another name, subnets and ports and
// no site directory, beside the first: a move to another host. Bad input
// is refused, naming what is wrong, with nothing on the host changed: a
// corrupt byte, a truncated archive, a .tar.gz, a wrong passphrase for the
// secrets, a MariaDB dump for a PostgreSQL stack, a stack that is up, and
// a stack that holds data without --force.
func TestBackupRestore(t *testing.T) {
	s := newStack(t, "e2eh", 247, 18700, unwatched)
	s.run("up")
	ns, url := s.outsideURL(t)
	c := outsideClient(t, ns)

	// Posts, most with an image of their own; one image of about 1 MiB.
	small, large := noisePNG(64, 48), noisePNG(512, 512)
	for i := range 8 {
		title := fmt.Sprintf("backup post %d", i)
		var img []byte
		switch {
		case i == 3:
			img = titledPNG(large, title)
		case i%4 != 2:
			img = titledPNG(small, title)
		}
		mustPost(t, c, url, title, img)
	}
	before := siteData(t, s)
	if n := strings.Count(before.rows, "backup post"); n != 8 {
		t.Fatalf("the database holds %d of the 8 posts:\n%s", n, before.rows)
	}
	if n := strings.Count(before.uploads, ".png "); n != 6 {
		t.Fatalf("storage holds %d of the 6 images:\n%s", n, before.uploads)
	}
	caBefore, err := os.ReadFile("/var/lib/bulkhead/e2eh/ca.crt")
	if err != nil {
		t.Fatal(err)
	}

	// The backup, under load.
	pass := filepath.Join(s.dir, "pass.txt")
	writeFile(t, pass, "a passphrase for the secrets of e2eh\n")
	backups := filepath.Join(s.dir, "backups")
	load := startLoad(t, ns, url, 4)
	time.Sleep(time.Second)
	t0 := time.Now()
	out := s.run("backup", "--dir", backups, "--keep", "1", "--include-secrets", "--passphrase-file", pass)
	took := time.Since(t0)
	time.Sleep(time.Second)
	r := load.stop()
	archives, _ := filepath.Glob(filepath.Join(backups, "e2eh-*.tar.zst"))
	if len(archives) != 1 {
		t.Fatalf("backups holds %q, want one archive\n%s", archives, out)
	}
	archive := archives[0]
	fi, err := os.Stat(archive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup: %s in %s, %d bytes; during it %d requests, p99 %s, %d failed\n%s", filepath.Base(archive), took.Round(10*time.Millisecond), fi.Size(), r.requests, r.p99, len(r.failures), out)
	if r.requests == 0 || len(r.failures) > 0 {
		t.Errorf("during the backup %d of %d requests failed; want none; the first: %q", len(r.failures), r.requests, r.failures[:min(len(r.failures), 5)])
	}
	for _, want := range []string{"database: mariadb dump", "uploads: 6 files", "secrets: encrypted"} {
		if !strings.Contains(out, want) {
			t.Errorf("backup's summary lacks %q:\n%s", want, out)
		}
	}
	if data, _ := os.ReadFile(archive); bytes.Contains(data, []byte("PRIVATE KEY")) {
		t.Error("the archive holds a private key in clear")
	}

	// A second backup into the directory replaces the first: --keep 1.
	time.Sleep(time.Second) // archives are named to the second
	out = s.run("backup", "--dir", backups, "--keep", "1", "--include-secrets", "--passphrase-file", pass)
	archives, _ = filepath.Glob(filepath.Join(backups, "e2eh-*.tar.zst"))
	if len(archives) != 1 || archives[0] == archive || !strings.Contains(out, "removed the older "+archive) {
		t.Errorf("after a second backup with --keep 1 the directory holds %q, want only the new one\n%s", archives, out)
	} else {
		archive = archives[0]
	}
	// And one to standard output, by --stack: whole, as Verify reads it.
	stdout, stderr, err := s.stdout("backup", "--stack", "e2eh", "-o", "-")
	if err != nil {
		t.Fatalf("backup -o -: %v\n%s", err, stderr)
	}
	if m, err := backup.Verify(strings.NewReader(stdout)); err != nil || m.Stack != "e2eh" || m.HasSecrets() || m.DB == nil {
		t.Errorf("backup -o -: %v; manifest %+v", err, m)
	}

	// Bad input, into a new stack beside e2eh that has no site directory:
	// each refused, and nothing of it made.
	j := newStack(t, "e2ej", 250, 18710, unwatched)
	if err := os.RemoveAll(filepath.Join(j.dir, "site")); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x55
	writeFile(t, filepath.Join(bad, "corrupt.tar.zst"), string(flipped))
	writeFile(t, filepath.Join(bad, "truncated.tar.zst"), string(data[:len(data)*3/4]))
	if out, err := exec.Command("tar", "-czf", filepath.Join(bad, "site.tar.gz"), "-C", s.dir, "site").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	wrong := filepath.Join(bad, "wrong.txt")
	writeFile(t, wrong, "not the passphrase\n")
	pg := filepath.Join(j.dir, "pg.yaml")
	writeFile(t, pg, "name: e2ep\nnetworks:\n  private: 10.250.0.0/24\n  public: 10.250.1.0/28\npublish:\n  http: 127.0.0.1:18712\n  https: 127.0.0.1:18713\n"+
		"tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {software: postgresql}\n  storage: {}\n  app: {replicas: 2}\n")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"a corrupt byte", []string{"restore", filepath.Join(bad, "corrupt.tar.zst")}, "the archive is corrupt|checksum mismatch"},
		{"a truncated archive", []string{"restore", filepath.Join(bad, "truncated.tar.zst")}, "truncated"},
		{"a .tar.gz", []string{"restore", filepath.Join(bad, "site.tar.gz")}, "gzip data, not zstd"},
		{"a wrong passphrase", []string{"restore", archive, "--passphrase-file", wrong}, "wrong passphrase"},
		{"a mariadb dump into postgresql", []string{"restore", archive, "-f", pg}, "runs postgresql, which restores postgresql-custom dumps only"},
	} {
		out, err := j.exec(c.args...)
		named := false
		for _, w := range strings.Split(c.want, "|") {
			named = named || strings.Contains(out, w)
		}
		if err == nil || !named {
			t.Errorf("restore of %s: %v; want it refused naming %q:\n%s", c.name, err, c.want, out)
		}
		t.Logf("restore of %s: %s", c.name, lastLine(out))
		for _, p := range []string{"/var/lib/bulkhead/e2ej", "/var/lib/bulkhead/e2ep", filepath.Join(j.dir, "site")} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("after the refused restore of %s, %s exists", c.name, p)
				os.RemoveAll(p)
			}
		}
	}
	if out, err := s.exec("restore", archive); err == nil || !strings.Contains(out, "stack e2eh is up on this host") {
		t.Errorf("restore into a stack that is up: %v\n%s", err, out)
	}

	// Purged, and restored with its secrets.
	s.run("down", "--purge")
	t0 = time.Now()
	out = s.run("restore", archive, "--passphrase-file", pass)
	t.Logf("restore into e2eh after down --purge: %s\n%s", time.Since(t0).Round(100*time.Millisecond), out)
	for _, want := range []string{"uploads: 6 files", "database: mariadb dump", "(the site directory holds the same code)", "secrets: the archive's", "verify: PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("restore's summary lacks %q", want)
		}
	}
	s.sameData(t, before, "after the restore")
	if ca, _ := os.ReadFile("/var/lib/bulkhead/e2eh/ca.crt"); !bytes.Equal(ca, caBefore) {
		t.Error("the restored stack has another CA than the archive's")
	}
	// The outside namespace is new too: a new visitor.
	ns, url = s.outsideURL(t)
	s.servesPosts(t, outsideClient(t, ns), url, before)

	// The same archive into e2ej, beside e2eh: the move to another host,
	// where there is only the archive and the stack file.
	t0 = time.Now()
	out = j.run("restore", archive)
	t.Logf("restore into e2ej beside e2eh: %s\n%s", time.Since(t0).Round(100*time.Millisecond), out)
	for _, want := range []string{"uploads: 6 files", "written to " + filepath.Join(j.dir, "site"), "secrets: the stack's own; the archive's are encrypted", "verify: PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("restore's summary lacks %q", want)
		}
	}
	j.sameData(t, before, "in e2ej")
	jns, jurl := j.outsideURL(t)
	j.servesPosts(t, outsideClient(t, jns), jurl, before)
	s.sameData(t, before, "in e2eh, with e2ej beside it")
	if got := j.get(t, "/healthz"); !strings.HasPrefix(got, "200") {
		t.Errorf("e2ej's /healthz: %s", got)
	}

	// e2ej down keeps its data: restore refuses it without --force, and
	// replaces it with.
	j.run("down")
	if out, err := j.exec("restore", archive); err == nil || !strings.Contains(out, "holds data that the restore would replace") {
		t.Errorf("restore into a stack that holds data: %v\n%s", err, out)
	}
	out = j.run("restore", archive, "--force")
	if !strings.Contains(out, "replaced: db's disk, storage's disk") || !strings.Contains(out, "verify: PASS") {
		t.Errorf("restore --force:\n%s", out)
	}
	j.sameData(t, before, "in e2ej after restore --force")
}

// mustPost posts as a visitor with client c, trying again for a few
// seconds: a stack just up may still be warming its pool.
func mustPost(t *testing.T, c *http.Client, url, title string, img []byte) {
	t.Helper()
	var err error
	for try := 0; try < 5; try++ {
		if err = postAs(c, url, title, img); err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("post %q: %v", title, err)
}

// data is what a stack holds of the site: the posts table and the
// uploads on storage, as text.
type data struct{ rows, uploads string }

// siteData reads the posts back from the database (MariaDB's or
// PostgreSQL's) and lists the uploads
// on storage with each one's type, owner, mode, size, time and SHA-256.
func siteData(t *testing.T, s *stack) data {
	t.Helper()
	var rows string
	var err error
	switch db := planDBName(t, s); dbSoftware(t, s) {
	case "postgresql":
		// As the postgres account over the server's socket, as the
		// catalog's dump does; unaligned, tab-separated, rows only.
		query := "SELECT id, title, body, COALESCE(image, ''), created_at FROM posts ORDER BY id"
		rows, err = s.in("db", "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
			"/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t", "-F", "\t", "-h", "/run/bulkhead", "-p", "5432", "-U", "postgres", "-d", db, "-c", query)
	default:
		query := fmt.Sprintf("SELECT id, title, body, COALESCE(image, ''), created_at FROM `%s`.posts ORDER BY id", db)
		rows, err = s.in("db", "mariadb", "--defaults-file=/etc/bulkhead/my.cnf", "-N", "-B", "-e", query)
	}
	if err != nil {
		t.Fatalf("read the posts: %v\n%s", err, rows)
	}
	list := `cd /var/lib/bulkhead/site && find . -mindepth 1 -exec stat -c '%n %F %U %a %s %Y' {} + | sort && find . -type f -exec sha256sum {} + | sort`
	uploads, err := s.in("storage", "sh", "-c", list)
	if err != nil {
		t.Fatalf("list the uploads: %v\n%s", err, uploads)
	}
	return data{rows, uploads}
}

// sameData fails unless the stack holds exactly want.
func (s *stack) sameData(t *testing.T, want data, when string) {
	t.Helper()
	got := siteData(t, s)
	if got.rows != want.rows {
		t.Errorf("%s the posts are:\n%s\nwant:\n%s", when, got.rows, want.rows)
	}
	if got.uploads != want.uploads {
		t.Errorf("%s the uploads are:\n%s\nwant:\n%s", when, got.uploads, want.uploads)
	}
}

// servesPosts checks what a visitor sees: every post's title on the front
// page, and every upload, through the edge, with the bytes storage holds.
func (s *stack) servesPosts(t *testing.T, c *http.Client, url string, want data) {
	t.Helper()
	var titles []string
	for _, l := range strings.Split(strings.TrimSpace(want.rows), "\n") {
		if f := strings.Split(l, "\t"); len(f) > 1 {
			titles = append(titles, f[1])
		}
	}
	hosttest.Eventually(t, 30*time.Second, "every post on the front page", func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, title := range titles {
			if !bytes.Contains(page, []byte(title)) {
				return false
			}
		}
		return true
	})
	n := 0
	for _, l := range strings.Split(want.uploads, "\n") {
		sum, name, ok := strings.Cut(l, "  ./uploads/")
		if !ok {
			continue
		}
		n++
		code, got, err := getUpload(c, url, name)
		if err != nil || code != http.StatusOK || got != sum {
			t.Errorf("GET /uploads/%s: %d %v, sha256 %s; want 200 with %s", name, code, err, got, sum)
		}
	}
	if n == 0 {
		t.Errorf("no upload to check in:\n%s", want.uploads)
	}
}
