package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/secrets"
)

const restorePass = "restore test passphrase"

// fakeArchive writes an archive of a stack's data into dir: a dump of
// format, uploads with a binary file in a subdirectory and a file outside
// the writable paths, the code of the fake stack's site, and secrets
// sealed with restorePass.
func fakeArchive(t *testing.T, dir, software, format, version string) string {
	t.Helper()
	uploads, code := filepath.Join(dir, "uploads"), filepath.Join(dir, "code")
	bin := make([]byte, 3000)
	for i := range bin {
		bin[i] = byte(i * 31)
	}
	write(t, filepath.Join(uploads, "uploads", "a.png"), string(bin))
	write(t, filepath.Join(uploads, "uploads", "sub", "b.txt"), "b")
	write(t, filepath.Join(uploads, "old.php"), "<?php // the code of a stack before releases")
	write(t, filepath.Join(code, "index.php"), "<?php echo 1;")
	write(t, filepath.Join(code, "assets", "style.css"), "body{}")
	sec, err := secrets.Generate(planWithApps(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	sec.DBPassword = "from-the-archive"
	secJSON, _ := json.Marshal(sec)
	r, err := age.NewScryptRecipient(restorePass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	path := filepath.Join(dir, backup.Name("old", time.Now()))
	_, err = backup.WriteFile(path, backup.Source{
		Stack: "old", Bulkhead: "test",
		DB:      &backup.DB{Role: "db", Software: software, Version: version, DumpFormat: format, DumpFile: "dump.sql"},
		Dump:    strings.NewReader("-- a dump\n"),
		Uploads: uploads, Release: code,
		StackFile: []byte("name: old\n"),
		Secrets:   secJSON, Recipients: []age.Recipient{r},
	}, backup.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func passphrase(t *testing.T, pass string) []age.Identity {
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	return []age.Identity{id}
}

// restore runs Restore into a new, empty site directory unless site is
// set, and returns the host changes it made.
func (s *fakeStack) restore(t *testing.T, p *plan.Plan, archive string, o RestoreOptions) ([]string, *RestoreResult, error) {
	t.Helper()
	if o.SiteDir == "" {
		o.SiteDir = filepath.Join(t.TempDir(), "site")
	}
	o.Wait = time.Second
	res, err := s.d.Restore(context.Background(), p, archive, o)
	return s.f.take(), res, err
}

// TestRestoreOnFakeHost restores an archive into a new stack, then into
// the same stack down with its data, and checks what is refused: a stack
// that is up, data without --force, and bad archives, each with the host
// left as it was.
func TestRestoreOnFakeHost(t *testing.T) {
	archive := fakeArchive(t, t.TempDir(), "mariadb", "mariadb-sql", "10.11.6")

	t.Run("into-a-new-stack", func(t *testing.T) {
		s := newFakeStack(t)
		p := planWithApps(t, 2)
		site := filepath.Join(t.TempDir(), "site")
		ops, res, err := s.restore(t, p, archive, RestoreOptions{UpOptions: UpOptions{SiteDir: site}, Identities: passphrase(t, restorePass)})
		if err != nil {
			t.Fatalf("restore: %v\nops:\n%s", err, strings.Join(ops, "\n"))
		}
		golden(t, "restore-into-a-new-stack", matching(ops, "uploads restore", "runc exec", "runc delete", "runc run bh-n-cache", "rm "))
		if !res.SiteWritten || res.Release != res.Archived || res.Release == "" || !res.Secrets ||
			res.Files != 2 || res.Bytes != 3001 || !slices.Equal(res.Skipped, []string{"old.php"}) || res.DumpBytes != 10 {
			t.Errorf("result %+v", res)
		}
		if got := listTree(t, site); !slices.Equal(got, []string{".", "assets", "assets/style.css", "index.php"}) {
			t.Errorf("the site directory holds %q, want the archive's code", got)
		}
		if fi, err := os.Stat(filepath.Join(site, "index.php")); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("the site's index.php: %v %v; want a working copy, mode 0644", fi, err)
		}
		idx := s.releases(t)
		if idx.Live != res.Archived || idx.Source != res.Archived {
			t.Errorf("live %s, source %s; want the archive's release %s for both, so that up deploys nothing", idx.Live, idx.Source, res.Archived)
		}
		stored := filepath.Join(s.d.paths("n").node("storage").data(), "site")
		if got, want := listTree(t, stored), []string{".", "uploads", "uploads/a.png", "uploads/sub", "uploads/sub/b.txt"}; !slices.Equal(got, want) {
			t.Errorf("storage holds %q, want %q", got, want)
		}
		if data, _ := os.ReadFile(filepath.Join(stored, "uploads", "a.png")); len(data) != 3000 || data[1] != 31 {
			t.Errorf("uploads/a.png holds %d bytes, not the archive's", len(data))
		}
		if sec, _ := os.ReadFile(s.d.paths("n").secretsFile()); !bytes.Contains(sec, []byte("from-the-archive")) {
			t.Errorf("the stack's secrets are not the archive's: %.80s", sec)
		}
		if _, err := os.Stat(s.d.paths("n").restoreStage()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the stage is left: %v", err)
		}
		if fi, _ := os.Stat(s.d.paths("n").stack); fi.Mode().Perm() != 0o700 {
			t.Errorf("the stack's directory has mode %v, want 0700", fi.Mode().Perm())
		}
		s.checkJournal(t, "n")

		// Up again changes nothing: the archive's release is the site's.
		s.site = site
		ops, up := s.mustUp(t, p)
		if up.Changed || up.Release != "" {
			t.Errorf("up after the restore: %+v\n%s", up, strings.Join(ops, "\n"))
		}

		// The stack is up: a second restore is refused.
		ops, _, err = s.restore(t, p, archive, RestoreOptions{})
		if err == nil || !strings.Contains(err.Error(), "is up on this host") || len(ops) > 0 {
			t.Errorf("restore into a stack that is up: %v, ops %q", err, ops)
		}

		// Down keeps the data: restore refuses it, then --force replaces it.
		s.mustDown(t, "n")
		ops, _, err = s.restore(t, p, archive, RestoreOptions{})
		if err == nil || !strings.Contains(err.Error(), "holds data") || !strings.Contains(err.Error(), "db's disk") || !strings.Contains(err.Error(), "--force") || len(ops) > 0 {
			t.Errorf("restore into a stack that holds data: %v, ops %q", err, ops)
		}
		ops, res, err = s.restore(t, p, archive, RestoreOptions{UpOptions: UpOptions{SiteDir: site}, Force: true})
		if err != nil {
			t.Fatalf("restore --force: %v\n%s", err, strings.Join(ops, "\n"))
		}
		golden(t, "restore-force-replaces-the-data", matching(ops, "rm ", "mkfs", "uploads restore", "runc exec"))
		if res.SiteWritten || res.Secrets || !slices.Equal(res.Replaced, []string{"db's disk", "storage's disk"}) {
			t.Errorf("result %+v; want the site kept, the stack's own secrets, and the two disks replaced", res)
		}
		s.checkJournal(t, "n")
	})

	t.Run("the-site-directory-wins", func(t *testing.T) {
		s := newFakeStack(t)
		write(t, filepath.Join(s.site, "new.php"), "<?php echo 2;")
		_, res, err := s.restore(t, planWithApps(t, 2), archive, RestoreOptions{UpOptions: UpOptions{SiteDir: s.site}})
		if err != nil {
			t.Fatal(err)
		}
		if res.SiteWritten || res.Release == res.Archived || s.releases(t).Live != res.Release {
			t.Errorf("result %+v; want the site's own code live", res)
		}
		if _, err := s.releases(t).Find(res.Archived); err != nil {
			t.Errorf("the archive's release is not in the store: %v", err)
		}
	})

	// A host without the database's server yet: up installs it, and the
	// dump's version is checked then, before anything goes onto the
	// stack. A dump of a newer release is refused, and the new stack
	// removed; one of the same release loads.
	t.Run("server-installed-by-up", func(t *testing.T) {
		for _, c := range []struct {
			version string
			ok      bool
		}{{"11.4.2", false}, {"10.11.6", true}} {
			s := newFakeStack(t)
			delete(s.f.versions, "mariadbd")
			s.f.missing = []string{"mariadb-server"}
			s.f.onOp = func(line string) {
				if strings.HasPrefix(line, "apt install") && strings.Contains(line, "mariadb-server") {
					s.f.versions["mariadbd"] = "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n"
				}
			}
			a := fakeArchive(t, t.TempDir(), "mariadb", "mariadb-sql", c.version)
			ops, _, err := s.restore(t, planWithApps(t, 2), a, RestoreOptions{})
			if !slices.ContainsFunc(ops, func(l string) bool { return strings.HasPrefix(l, "apt install") }) {
				t.Errorf("dump of %s: up installed nothing: %q", c.version, ops)
			}
			loaded := slices.ContainsFunc(ops, func(l string) bool { return strings.HasPrefix(l, "runc exec bh-n-db mariadb ") })
			if c.ok {
				if err != nil || !loaded {
					t.Errorf("dump of %s into 10.11.19: %v, loaded %v", c.version, err, loaded)
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), "made by mariadb 11.4.2") || loaded {
				t.Errorf("dump of 11.4.2 into 10.11.19: %v, loaded %v; want it refused before the load", err, loaded)
			}
			if slices.ContainsFunc(ops, func(l string) bool { return strings.HasPrefix(l, "uploads restore") }) {
				t.Errorf("the uploads went onto a stack whose database cannot load the dump")
			}
			if _, err := os.Stat(s.d.paths("n").stack); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the new stack is left after the refusal: %v", err)
			}
		}
	})

	// Each of these is refused before anything is written: no stack
	// directory, not even the driver's root, is made.
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.tar.zst")
	data, _ := os.ReadFile(archive)
	data[len(data)/3] ^= 0xff
	os.WriteFile(corrupt, data, 0o600)
	truncated := filepath.Join(dir, "truncated.tar.zst")
	data, _ = os.ReadFile(archive)
	os.WriteFile(truncated, data[:len(data)*2/3], 0o600)
	pgArchive := fakeArchive(t, t.TempDir(), "postgresql", "postgresql-custom", "15.18")
	for _, c := range []struct {
		name, archive string
		p             *plan.Plan
		ids           []age.Identity
		want          []string
	}{
		{"corrupt", corrupt, nil, nil, []string{"corrupt"}},
		{"truncated", truncated, nil, nil, []string{"truncated"}},
		{"wrong-passphrase", archive, nil, passphrase(t, "not it"), []string{"wrong passphrase"}},
		{"postgresql-dump-into-mariadb", pgArchive, nil, nil, []string{"postgresql-custom", "runs mariadb"}},
		{"newer-mariadb", fakeArchive(t, t.TempDir(), "mariadb", "mariadb-sql", "11.4.2"), nil, nil, []string{"made by mariadb 11.4.2", "this host's mariadb 10.11.19", "mariadb is 11.4 or newer"}},
		{"newer-postgresql", fakeArchive(t, t.TempDir(), "postgresql", "postgresql-custom", "17.2"), planFrom(t, "name: n\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {software: postgresql}\n  storage: {protocol: sftp}\n  app: {}\n"), nil, []string{"made by postgresql 17.2", "postgresql 15.18", "17 or newer"}},
		{"mariadb-dump-into-postgresql", archive, planFrom(t, "name: n\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {software: postgresql}\n  storage: {protocol: sftp}\n  app: {}\n"), nil, []string{"mariadb-sql", "runs postgresql"}},
		{"passphrase-without-secrets", func() string {
			d := t.TempDir()
			p := filepath.Join(d, "x.tar.zst")
			if _, err := backup.WriteFile(p, backup.Source{Stack: "x", StackFile: []byte("name: x\n")}, backup.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			return p
		}(), nil, passphrase(t, restorePass), []string{"holds no secrets"}},
	} {
		t.Run("refused/"+c.name, func(t *testing.T) {
			s := newFakeStack(t)
			p := c.p
			if p == nil {
				p = planWithApps(t, 2)
			}
			ops, _, err := s.restore(t, p, c.archive, RestoreOptions{Identities: c.ids})
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("restore: %v; want an error naming %q", err, w)
				}
			}
			if len(ops) > 0 {
				t.Errorf("the host changed: %q", ops)
			}
			if _, err := os.Stat(s.d.Root); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the driver's root was made: %v", err)
			}
		})
	}
}

// TestSnapshotOnFakeHost opens what a backup reads of a running stack, and
// archives it: the storage node's writable paths and the live release, the
// stack file up kept, and the secrets.
func TestSnapshotOnFakeHost(t *testing.T) {
	s := newFakeStack(t)
	p := planWithApps(t, 2)
	if _, err := s.d.Snapshot(context.Background(), "n"); err == nil {
		t.Error("a snapshot of a stack never up")
	}
	file := []byte("name: n\n# the stack file\n")
	if _, err := s.d.Up(context.Background(), p, UpOptions{SiteDir: s.site, Wait: time.Second, StackFile: file}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.d.Snapshot(context.Background(), "n")
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if snap.Plan.Stack != "n" || !bytes.Equal(snap.StackFile, file) || snap.Release != s.releases(t).Live || !bytes.Contains(snap.Secrets, []byte("DBPassword")) {
		t.Errorf("snapshot %+v", snap)
	}
	m, err := backup.Write(io.Discard, backup.Source{Stack: "n", Uploads: snap.UploadsDir, UploadsRoot: snap.Uploads, Release: snap.ReleaseDir}, backup.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mb := range m.Members {
		names = append(names, mb.Path)
	}
	want := []string{"uploads", "uploads/uploads", "uploads/uploads/.keep", "release", "release/assets", "release/assets/style.css", "release/index.php"}
	if !slices.Equal(names, want) {
		t.Errorf("archived %q, want %q: the writable paths as storage holds them, and the release's code without its link", names, want)
	}
	s.f.take()
	s.mustDown(t, "n")
	if _, err := s.d.Snapshot(context.Background(), "n"); err == nil || !strings.Contains(err.Error(), "is down") {
		t.Errorf("a snapshot of a stack that is down: %v", err)
	}
}
