package pkgs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

func load(t *testing.T, src string, protocol string) *plan.Plan {
	t.Helper()
	var data []byte
	if src != "" {
		data = []byte(src)
	}
	st, err := spec.Load("bulkhead.yaml", data, spec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if protocol != "" {
		st.ByRole(spec.RoleStorage).Protocol = protocol
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNeeded(t *testing.T) {
	for _, c := range []struct {
		name, src, protocol string
		want                []string
	}{{
		name: "default stack over sftp", protocol: spec.ProtocolSFTP,
		want: []string{
			"apache2", "coreutils", "e2fsprogs", "iproute2", "lighttpd", "mariadb-client", "mariadb-server",
			"memcached", "nftables", "nginx", "openssh-client", "openssh-server", "php8.2-fpm",
			"php8.2-memcached", "php8.2-mysql", "prometheus", "prometheus-apache-exporter", "prometheus-mysqld-exporter",
			"prometheus-nginx-exporter", "runc", "sshfs", "util-linux",
		},
	}, {
		name: "alternatives over nfs",
		src: "tiers:\n  edge: {software: haproxy}\n  static: {software: nginx}\n  app: {software: nginx, replicas: 3}\n" +
			"  cache: {software: redis}\n  db: {software: postgresql}\n  storage: {protocol: nfs}\n",
		want: []string{
			"coreutils", "e2fsprogs", "haproxy", "iproute2", "nfs-ganesha", "nfs-ganesha-vfs", "nftables", "nginx",
			"php8.2-fpm", "php8.2-pgsql", "php8.2-redis", "postgresql", "redis-server", "runc", "util-linux",
		},
	}, {
		// No cache and no storage: no PHP cache client, no sshfs.
		name: "edge, app and db only",
		src:  "tiers:\n  edge: {}\n  app: {}\n  db: {}\n",
		want: []string{
			"apache2", "coreutils", "e2fsprogs", "iproute2", "mariadb-client", "mariadb-server", "nftables", "nginx",
			"php8.2-fpm", "php8.2-mysql", "runc", "util-linux",
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			got := Needed(load(t, c.src, c.protocol))
			if !slices.Equal(got, c.want) {
				t.Errorf("Needed:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func requireDpkg(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"dpkg-query", "apt-get", "apt-cache", "apt-mark"} {
		_, err := exec.LookPath(tool)
		hosttest.Require(t, err == nil, "a Debian host, with %s: %v", tool, err)
	}
}

func TestMissing(t *testing.T) {
	requireDpkg(t)
	got, err := Missing(context.Background(), []string{"coreutils", "bulkhead-no-such-pkg", "dpkg"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bulkhead-no-such-pkg"}; !slices.Equal(got, want) {
		t.Errorf("Missing = %q, want %q", got, want)
	}
	if got, err := Missing(context.Background(), nil); err != nil || got != nil {
		t.Errorf("Missing(nil) = %q, %v", got, err)
	}
	if _, err := Missing(context.Background(), []string{"--admindir=/tmp"}); err == nil {
		t.Error("Missing took an option for a package name")
	}
}

// noop picks a package whose install changes nothing: installed, at its
// candidate version (else apt would upgrade it), and marked manual (else
// apt would mark it so).
func noop(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"coreutils", "bash", "grep", "sed", "tar", "findutils"} {
		out, err := exec.Command("apt-cache", "policy", name).Output()
		if err != nil {
			continue
		}
		var installed, candidate string
		for l := range strings.Lines(string(out)) {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] == "Installed:" {
				installed = f[1]
			}
			if len(f) == 2 && f[0] == "Candidate:" {
				candidate = f[1]
			}
		}
		if installed == "(none)" || installed == "" || installed != candidate {
			continue
		}
		if auto, err := exec.Command("apt-mark", "showauto", name).Output(); err != nil || len(bytes.TrimSpace(auto)) > 0 {
			continue
		}
		return name
	}
	hosttest.Require(t, false, "an installed package at its candidate version and marked manual (apt-mark manual coreutils)")
	return ""
}

// file is what a test compares of the policy script: a restore must give
// back the very same file.
type file struct {
	data  string
	mode  fs.FileMode
	mtime time.Time
	ino   uint64
	uid   uint32
	gid   uint32
}

func snapshot(path string) (*file, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	f := &file{mode: fi.Mode(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		f.ino, f.uid, f.gid = st.Ino, st.Uid, st.Gid
	}
	if fi.Mode().IsRegular() {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		f.data = string(b)
	} else if fi.Mode()&fs.ModeSymlink != 0 {
		f.data, err = os.Readlink(path)
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *file) String() string {
	if f == nil {
		return "absent"
	}
	return fmt.Sprintf("%v ino %d %d:%d %s %q", f.mode, f.ino, f.uid, f.gid, f.mtime.Format(time.RFC3339Nano), f.data)
}

func same(a, b *file) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// state is the policy script as it is now, or nil if there is none.
func state(t *testing.T) *file {
	t.Helper()
	f, err := snapshot(system.policy)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// setAside moves the host's own policy script out of the way for one test
// and puts that very file back (a rename: same inode, bytes, mode and
// times) when the test ends.
func setAside(t *testing.T) {
	t.Helper()
	path, aside := system.policy, system.policy+".bulkhead-test"
	if _, err := os.Lstat(aside); err == nil {
		// An earlier run died before its cleanup.
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("both %s and %s exist: keep the host's own as %s and remove the other", path, aside, path)
		}
		if err := os.Rename(aside, path); err != nil {
			t.Fatalf("restore %s: %v", path, err)
		}
	}
	before := state(t)
	if before == nil {
		// The host has none: whatever is there when the test ends was
		// written by the test (each test checks its own after-state), so
		// it goes.
		t.Cleanup(func() {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("remove the test's %s: %v", path, err)
			}
		})
		return
	}
	if err := os.Rename(path, aside); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove the test's %s: %v", path, err)
		}
		if err := os.Rename(aside, path); err != nil {
			t.Errorf("RESTORE BY HAND: the host's %s is in %s: %v", path, aside, err)
			return
		}
		if after := state(t); !same(before, after) {
			t.Errorf("%s was\n  %v\nand is now\n  %v", path, before, after)
		}
	})
}

// watch is an out for Install that checks, at apt's first line of output,
// that the policy script forbids starting services.
type watch struct {
	bytes.Buffer
	checked, denied bool
}

func (w *watch) Write(b []byte) (int, error) {
	if !w.checked {
		w.checked = true
		w.denied = system.denies(context.Background())
	}
	return w.Buffer.Write(b)
}

func (w *watch) check(t *testing.T) {
	t.Helper()
	if !w.checked || !w.denied {
		t.Errorf("while apt ran, %s did not exit 101 (checked: %v)", system.policy, w.checked)
	}
	if !strings.HasPrefix(w.String(), "apt: ") {
		t.Errorf("apt's output is not prefixed:\n%s", w.String())
	}
}

func TestInstallNoPolicy(t *testing.T) {
	hosttest.RequireRoot(t)
	requireDpkg(t)
	name := noop(t)
	setAside(t)
	var out watch
	if err := Install(context.Background(), []string{name}, &out); err != nil {
		t.Fatalf("Install %s: %v\n%s", name, err, out.String())
	}
	out.check(t)
	if f := state(t); f != nil {
		t.Errorf("Install left a policy script behind: %v", f)
	}
}

func TestInstallKeepsPolicy(t *testing.T) {
	hosttest.RequireRoot(t)
	requireDpkg(t)
	name := noop(t)
	for _, c := range []struct{ name, script string }{
		{"denies", "#!/bin/sh\n# bulkhead test\nexit 101\n"},
		// One that allows starts is replaced for the install, then restored.
		{"allows", "#!/bin/sh\n# bulkhead test\nexit 0\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			setAside(t)
			if err := os.WriteFile(system.policy, []byte(c.script), 0o755); err != nil {
				t.Fatal(err)
			}
			// Make the times distinct from a rewrite's.
			old := time.Now().Add(-time.Hour).Truncate(time.Second)
			if err := os.Chtimes(system.policy, old, old); err != nil {
				t.Fatal(err)
			}
			before := state(t)
			var out watch
			if err := Install(context.Background(), []string{name}, &out); err != nil {
				t.Fatalf("Install %s: %v\n%s", name, err, out.String())
			}
			out.check(t)
			if after := state(t); !same(before, after) {
				t.Errorf("policy script was\n  %v\nand is now\n  %v", before, after)
			}
		})
	}
}

// TestInstallHostPolicy runs Install against the host's policy script as it
// is, and checks that it is the same file afterwards.
func TestInstallHostPolicy(t *testing.T) {
	hosttest.RequireRoot(t)
	requireDpkg(t)
	name := noop(t)
	before := state(t)
	var out watch
	if err := Install(context.Background(), []string{name}, &out); err != nil {
		t.Fatalf("Install %s: %v\n%s", name, err, out.String())
	}
	out.check(t)
	if after := state(t); !same(before, after) {
		t.Errorf("%s was\n  %v\nand is now\n  %v", system.policy, before, after)
	}
}

func TestInstallUnknown(t *testing.T) {
	hosttest.RequireRoot(t)
	requireDpkg(t)
	// Never apt-get update here: the retry is TestInstallUpdatesOnce's.
	in := system
	in.staleAfter = 1 << 62
	for _, c := range []struct {
		name   string
		policy string // "" for none
	}{{"no policy", ""}, {"policy", "#!/bin/sh\nexit 101\n"}} {
		t.Run(c.name, func(t *testing.T) {
			setAside(t)
			if c.policy != "" {
				if err := os.WriteFile(system.policy, []byte(c.policy), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			before := state(t)
			var out bytes.Buffer
			err := in.install(context.Background(), []string{"bulkhead-no-such-pkg"}, &out)
			if err == nil {
				t.Fatalf("Install of a package that does not exist succeeded:\n%s", out.String())
			}
			for _, want := range []string{"install bulkhead-no-such-pkg:", "apt cannot find bulkhead-no-such-pkg", "check the name", "Unable to locate package bulkhead-no-such-pkg"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
			if after := state(t); !same(before, after) {
				t.Errorf("policy script was\n  %v\nand is now\n  %v", before, after)
			}
		})
	}
}

func TestInstallNothing(t *testing.T) {
	in, dir := fake(t, "exit 1")
	if err := in.install(context.Background(), nil, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	if calls := aptCalls(t, dir); len(calls) != 0 {
		t.Errorf("apt-get ran for no packages: %q", calls)
	}
	if err := in.install(context.Background(), []string{"-oAPT::Foo=1"}, new(bytes.Buffer)); err == nil {
		t.Error("Install took an option for a package name")
	}
}

// fake returns an installer whose apt-get is a shell script with body, run
// with $FAKE set to a directory it may keep state in. Every call logs its
// arguments, and whether the policy script denied starts at the time, to
// $FAKE/calls. The installer's lists are empty, so stale.
func fake(t *testing.T, body string) (*installer, string) {
	t.Helper()
	dir := t.TempDir()
	in := &installer{
		aptGet:     filepath.Join(dir, "apt-get"),
		policy:     filepath.Join(dir, "policy-rc.d"),
		lock:       filepath.Join(dir, "lock"),
		lists:      filepath.Join(dir, "lists"),
		staleAfter: 24 * time.Hour,
		now:        time.Now,
	}
	if err := os.Mkdir(in.lists, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n" +
		in.policy + " x start; echo \"$* policy=$?\" >>\"$FAKE/calls\"\n" +
		body + "\n"
	if err := os.WriteFile(in.aptGet, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE", dir)
	return in, dir
}

func aptCalls(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		// The subcommand, and what the policy said.
		out = append(out, f[0]+" "+f[len(f)-1])
	}
	return out
}

// notFoundUntilUpdate fails to find foo until apt-get update has run.
const notFoundUntilUpdate = `
case "$1" in
update) echo "Hit:1 http://deb.debian.org/debian bookworm InRelease"; touch "$FAKE/updated"; exit 0 ;;
install)
	echo "Reading package lists..."
	[ -e "$FAKE/updated" ] && { echo "Setting up foo (1.0) ..."; exit 0; }
	echo "E: Unable to locate package foo" >&2; exit 100 ;;
esac`

func TestInstallUpdatesOnce(t *testing.T) {
	in, dir := fake(t, notFoundUntilUpdate)
	var out bytes.Buffer
	if err := in.install(context.Background(), []string{"foo"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := []string{"install policy=101", "update policy=101", "install policy=101"}
	if got := aptCalls(t, dir); !slices.Equal(got, want) {
		t.Errorf("apt-get calls = %q, want %q", got, want)
	}
	for _, line := range []string{"apt: E: Unable to locate package foo\n", "apt: Setting up foo (1.0) ...\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
	if _, err := os.Lstat(in.policy); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("policy script left behind: %v", err)
	}
}

func TestInstallFreshListsNoUpdate(t *testing.T) {
	in, dir := fake(t, notFoundUntilUpdate)
	if err := os.WriteFile(filepath.Join(in.lists, "deb.debian.org_debian_dists_bookworm_InRelease"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := in.install(context.Background(), []string{"foo"}, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "apt cannot find foo: check the name, or run \"apt-get update\"") {
		t.Errorf("error = %v", err)
	}
	if got, want := aptCalls(t, dir), []string{"install policy=101"}; !slices.Equal(got, want) {
		t.Errorf("apt-get calls = %q, want %q", got, want)
	}
}

func TestInstallStillMissingAfterUpdate(t *testing.T) {
	in, dir := fake(t, `[ "$1" = update ] && exit 0; echo "E: Package 'foo' has no installation candidate" >&2; exit 100`)
	err := in.install(context.Background(), []string{"foo"}, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "apt cannot find foo, even after apt-get update") {
		t.Errorf("error = %v", err)
	}
	if got := aptCalls(t, dir); len(got) != 3 {
		t.Errorf("apt-get calls = %q, want install, update, install", got)
	}
}

func TestInstallErrorTail(t *testing.T) {
	in, _ := fake(t, `i=1; while [ $i -le 30 ]; do echo "line $i"; i=$((i+1)); done; printf 'no newline'; exit 100`)
	err := in.install(context.Background(), []string{"foo", "bar"}, new(bytes.Buffer))
	if err == nil {
		t.Fatal("a failing apt-get succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"install foo, bar:", "exit status 100", "dpkg --configure -a", "\n  line 12\n", "\n  line 30\n  no newline"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 11\n") {
		t.Errorf("error carries more than %d lines:\n%s", tailLines, msg)
	}
}

func TestInstallLocked(t *testing.T) {
	in, _ := fake(t, `echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)" >&2; exit 100`)
	err := in.install(context.Background(), []string{"foo"}, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "another package manager holds dpkg's lock (Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get))") {
		t.Errorf("error = %v", err)
	}
}

func TestInstallRefusesLeftover(t *testing.T) {
	in, dir := fake(t, "exit 0")
	if err := os.WriteFile(in.policy, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.policy+".bulkhead-saved", []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := in.install(context.Background(), []string{"foo"}, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "left by an interrupted install") {
		t.Errorf("error = %v", err)
	}
	if calls := aptCalls(t, dir); len(calls) != 0 {
		t.Errorf("apt-get ran although services could start: %q", calls)
	}
}

func TestStale(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	in := &installer{lists: dir, staleAfter: 24 * time.Hour, now: func() time.Time { return now }}
	if !in.stale() {
		t.Error("no lists: not stale")
	}
	// A Packages file does not count: apt keeps an unchanged one's old date.
	touch := func(name string, at time.Time) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	touch("d_dists_bookworm_main_binary-amd64_Packages.lz4", now)
	touch("d_dists_bookworm_InRelease", now.Add(-48*time.Hour))
	if !in.stale() {
		t.Error("two-day-old Release: not stale")
	}
	touch("d_dists_bookworm-security_InRelease", now.Add(-time.Hour))
	if in.stale() {
		t.Error("hour-old Release: stale")
	}
}
