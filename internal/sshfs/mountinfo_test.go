package sshfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sample is a host's mountinfo: / on ext4; /srv/static prepared (bound on
// itself, shared) with an sshfs on top; a stale sshfs stacked twice on
// /srv/app; a tmpfs at a path with a space; and a container's slave view.
const sample = `26 1 254:0 / / rw,relatime - ext4 /dev/vda rw
41 26 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
90 26 254:0 /srv/static /srv/static rw,relatime shared:77 - ext4 /dev/vda rw
91 90 0:52 / /srv/static rw,nosuid,nodev,relatime shared:78 - fuse.sshfs site-ro@10.77.0.6:/ rw,user_id=0,group_id=0,default_permissions,allow_other
92 26 0:53 / /srv/app rw,nosuid,nodev,relatime - fuse.sshfs site-rw@10.77.0.6:/ rw,user_id=0,group_id=0
93 92 0:54 / /srv/app rw,nosuid,nodev,relatime - fuse.sshfs site-rw@10.77.0.6:/ rw,user_id=0,group_id=0
94 26 0:55 / /srv/with\040space rw - tmpfs tmp\134fs rw
95 26 254:0 /srv/other /srv/static2 rw,relatime master:77 - ext4 /dev/vda rw
`

func TestParseMountinfo(t *testing.T) {
	ms, err := parseMountinfo(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 8 {
		t.Fatalf("parsed %d mounts, want 8", len(ms))
	}
	tests := []struct {
		point   string
		wantID  int // 0: not a mount point
		fstype  string
		shared  bool
		selfBnd bool
	}{
		{"/", 26, "ext4", false, false},
		{"/srv/static", 91, "fuse.sshfs", true, false},
		{"/srv/app", 93, "fuse.sshfs", false, false},
		{"/srv/with space", 94, "tmpfs", false, false},
		{"/srv/static2", 95, "ext4", false, false}, // a bind of another directory
		{"/srv", 0, "", false, false},
	}
	for _, tt := range tests {
		m := top(ms, tt.point)
		if tt.wantID == 0 {
			if m != nil {
				t.Errorf("top(%q) = mount %d, want none", tt.point, m.id)
			}
			continue
		}
		if m == nil || m.id != tt.wantID {
			t.Errorf("top(%q) = %+v, want mount %d", tt.point, m, tt.wantID)
			continue
		}
		if m.fstype != tt.fstype || m.shared() != tt.shared || selfBind(ms, m) != tt.selfBnd {
			t.Errorf("top(%q): fstype %s shared %v selfBind %v; want %s %v %v", tt.point, m.fstype, m.shared(), selfBind(ms, m), tt.fstype, tt.shared, tt.selfBnd)
		}
	}
	if b := byID(ms, 90); !selfBind(ms, b) || !b.shared() {
		t.Errorf("mount 90 (the prepared bind): selfBind %v shared %v; want both", selfBind(ms, b), b.shared())
	}
	if got := byID(ms, 94).source; got != `tmp\fs` {
		t.Errorf("escaped source = %q", got)
	}
}

func TestParseMountinfoMalformed(t *testing.T) {
	for _, line := range []string{
		// The library parses the ids as numbers without checking, as
		// of moby/sys/mountinfo v0.7.2: the kernel writes them.
		"26 1 254:0 / / rw,relatime ext4 /dev/vda rw", // no separator
		"26 1 254:0 / / rw -",
	} {
		if _, err := parseMountinfo(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("parsed %q without error", line)
		}
	}
}

func TestArgv(t *testing.T) {
	m := Mount{
		Netns: "app1", Target: "/srv/bulkhead/app1/site", Stage: "/srv/bulkhead/app1/sshfs",
		User: "site-rw", Host: "10.77.0.6", Port: 2222,
		Identity: "/etc/bulkhead/app1/id_ed25519", KnownHosts: "/etc/bulkhead/app1/known_hosts",
		UID: 33, GID: 33,
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	argv := m.Argv()
	wantPrefix := []string{"nsenter", "--net=/var/run/netns/app1", "--", "sshfs", "-f", "-F", "/dev/null", "-p", "2222", "-o"}
	if !slices.Equal(argv[:len(wantPrefix)], wantPrefix) {
		t.Errorf("argv starts %q, want %q", argv[:len(wantPrefix)], wantPrefix)
	}
	if tail := argv[len(argv)-2:]; !slices.Equal(tail, []string{"site-rw@10.77.0.6:/", "/proc/self/fd/3"}) {
		t.Errorf("argv ends %q", tail)
	}
	opts := strings.Split(argv[len(wantPrefix)], ",")
	for _, want := range []string{"reconnect", "allow_other", "default_permissions", "uid=33", "gid=33", "StrictHostKeyChecking=yes", "BatchMode=yes", "IdentityFile=/etc/bulkhead/app1/id_ed25519", "UserKnownHostsFile=/etc/bulkhead/app1/known_hosts"} {
		if !slices.Contains(opts, want) {
			t.Errorf("options %q lack %s", opts, want)
		}
	}
	for _, unwanted := range []string{"ro", "kernel_cache"} {
		if slices.Contains(opts, unwanted) {
			t.Errorf("read-write options %q contain %s", opts, unwanted)
		}
	}
	m.ReadOnly, m.Port, m.Remote = true, 0, "/site"
	argv = m.Argv()
	if !slices.Contains(strings.Split(argv[len(wantPrefix)], ","), "ro") {
		t.Errorf("read-only options %q lack ro", argv[len(wantPrefix)])
	}
	if argv[8] != "22" || argv[len(argv)-2] != "site-rw@10.77.0.6:/site" {
		t.Errorf("port %s, source %s; want 22 and the remote path", argv[8], argv[len(argv)-2])
	}
}

func TestValidate(t *testing.T) {
	good := Mount{
		Netns: "static", Target: "/srv/static", Stage: "/srv/static.stage", User: "site-ro", Host: "10.77.0.6",
		Identity: "/etc/k", KnownHosts: "/etc/kh",
	}
	tests := []struct {
		name string
		edit func(*Mount)
		want string // in the error
	}{
		{"netns path", func(m *Mount) { m.Netns = "/var/run/netns/x" }, "netns"},
		{"relative target", func(m *Mount) { m.Target = "srv" }, "target"},
		{"no stage", func(m *Mount) { m.Stage = "" }, "stage"},
		{"stage on the target", func(m *Mount) { m.Stage = "/srv/static/" }, "stage"},
		{"user with @", func(m *Mount) { m.User = "a@b" }, "user"},
		{"ipv6 host", func(m *Mount) { m.Host = "fd00::6" }, "host"},
		{"port", func(m *Mount) { m.Port = 70000 }, "port"},
		{"relative remote", func(m *Mount) { m.Remote = "site" }, "remote"},
		{"comma in identity", func(m *Mount) { m.Identity = "/etc/a,b" }, "identity"},
		{"no known hosts", func(m *Mount) { m.KnownHosts = "" }, "known hosts"},
		{"negative uid", func(m *Mount) { m.UID = -1 }, "uid"},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid mount: %v", err)
	}
	for _, tt := range tests {
		m := good
		tt.edit(&m)
		err := m.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one about %s", tt.name, err, tt.want)
		}
	}
}

// TestPinRefusesLinks: the mount point is pinned without following a link,
// neither as the last element nor on the way, so a node that swapped its
// site directory for a link to a host directory gets no mount there.
func TestPinRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	if f, err := pinDir(filepath.Join(dir, "site")); err != nil {
		t.Fatalf("a plain directory: %v", err)
	} else {
		f.Close()
	}
	os.Symlink(outside, filepath.Join(dir, "link"))
	os.Symlink(dir, filepath.Join(outside, "up"))
	for _, target := range []string{filepath.Join(dir, "link"), filepath.Join(outside, "up", "site")} {
		if f, err := pinDir(target); err == nil {
			f.Close()
			t.Errorf("pinned %s through a link", target)
		}
	}
}
