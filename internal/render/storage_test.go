package render_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// TestStorageSFTP renders sshd with a real host key and real client keys
// and has sshd check the config (-t) and print what it would apply to each
// account connecting from each client (-T): chrooted SFTP only, read-only for
// the static tier, no passwords, no root, no forwarding. Every client's key
// must be in its account's authorized_keys, bound to the client's address,
// and in no other account's.
func TestStorageSFTP(t *testing.T) {
	requireTool(t, "sshd")
	requireTool(t, "ssh-keygen")
	p, _, l := renderRole(t, "default", spec.RoleStorage)
	storage := p.Role(spec.RoleStorage)[0]

	keys := t.TempDir()
	sec := storageSecrets(t, p, keys)
	host := sec.StorageHostKey
	fingerprints := map[string]string{}
	for node := range sec.StorageKeys {
		fingerprints[node] = strings.Fields(mustRun(t, "ssh-keygen", "-l", "-f", filepath.Join(keys, node+".pub")))[1]
	}
	n := rerenderRole(t, p, spec.RoleStorage, l, sec)
	if f := fileOf(t, n, "secrets/ssh_host_ed25519_key"); f.Mode != 0o400 || string(f.Data) != string(host) {
		t.Errorf("host key file: mode %o, same key %v; want 0400 and the given key", f.Mode, string(f.Data) == string(host))
	}

	sshdPrivsepDir(t)
	conf := filepath.Join(l.Conf, "sshd_config")
	mustRun(t, "/usr/sbin/sshd", "-t", "-f", conf)

	accounts := map[string]string{spec.RoleStatic: "site-ro", spec.RoleApp: "site-rw"}
	want := map[string][]string{}
	for _, role := range []string{spec.RoleStatic, spec.RoleApp} {
		acct := accounts[role]
		for _, c := range p.Role(role) {
			addr := c.Addr(plan.NetPrivate).String()
			want[acct] = append(want[acct], fmt.Sprintf(`restrict,from="%s" %s`, addr, strings.TrimSpace(sec.StorageKeys[c.Name])))

			eff := sshdEffective(t, conf, acct, addr)
			force := "internal-sftp -u 0022 -P symlink,hardlink -d /"
			if role == spec.RoleStatic {
				force = "internal-sftp -R -d /"
			}
			for k, v := range map[string]string{
				"chrootdirectory":              filepath.Join(l.Data, "site"),
				"forcecommand":                 force,
				"listenaddress":                storage.Addr(plan.NetPrivate).String() + ":22",
				"authorizedkeysfile":           filepath.Join(l.Conf, "authorized_keys") + "/%u",
				"passwordauthentication":       "no",
				"kbdinteractiveauthentication": "no",
				"permitrootlogin":              "no",
				"allowtcpforwarding":           "no",
				"allowagentforwarding":         "no",
				"x11forwarding":                "no",
				"permittty":                    "no",
				"permittunnel":                 "no",
				"maxauthtries":                 "2",
				"usepam":                       "no",
				"strictmodes":                  "no", // see the template: root is the node's, /etc the host's
				"pidfile":                      filepath.Join(l.Run, "sshd.pid"),
				"maxstartups":                  "510:30:1020",
				"persourcemaxstartups":         "3",
			} {
				if got := strings.Join(eff[k], " | "); got != v {
					t.Errorf("%s from %s (%s): %s = %q, want %q", acct, addr, c.Name, k, got, v)
				}
			}
			if got := eff["allowusers"]; !slices.Equal(got, []string{"site-ro", "site-rw"}) {
				t.Errorf("allowusers = %v", got)
			}
		}
	}
	for _, acct := range []string{"site-ro", "site-rw"} {
		file := filepath.Join(l.Conf, "authorized_keys", acct)
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := confLines(string(data)); !slices.Equal(got, want[acct]) {
			t.Errorf("%s's keys:\n%s\nwant:\n%s", acct, strings.Join(got, "\n"), strings.Join(want[acct], "\n"))
		}
		// ssh-keygen reads the file as sshd would, options and all.
		var got, wantFP []string
		for _, line := range strings.Split(strings.TrimSpace(mustRun(t, "ssh-keygen", "-l", "-f", file)), "\n") {
			got = append(got, strings.Fields(line)[1])
		}
		for _, line := range want[acct] {
			for node, fp := range fingerprints {
				if strings.HasSuffix(line, "bulkhead-"+node) {
					wantFP = append(wantFP, fp)
				}
			}
		}
		slices.Sort(got)
		slices.Sort(wantFP)
		if !slices.Equal(got, wantFP) {
			t.Errorf("%s: ssh-keygen reads fingerprints %v, want %v", acct, got, wantFP)
		}
	}
}

// TestStorageSFTPSameAtAnyScale renders the storage node of a stack with 2
// app nodes and of the same stack with 250: sshd_config must not change,
// since sshd applies a change only by re-executing itself, which resets
// the connections still in their handshake (the new nodes' site mounts,
// when the pool grows). Only the keys do, which sshd reads at each login.
func TestStorageSFTPSameAtAnyScale(t *testing.T) {
	conf := func(apps int) string {
		t.Helper()
		p := planFrom(t, []byte(fmt.Sprintf("name: scale\nnetworks:\n  private: 10.76.0.0/22\n  public: 10.77.1.0/28\n"+
			"tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage:\n    protocol: sftp\n  app:\n    replicas: %d\n", apps)))
		n, err := render.RenderNode(p, p.Role(spec.RoleStorage)[0], render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)})
		if err != nil {
			t.Fatal(err)
		}
		return string(fileOf(t, n, "sshd_config").Data)
	}
	if small, large := conf(2), conf(spec.MaxReplicas); small != large {
		t.Errorf("sshd_config differs between 2 and %d app nodes:\n%s", spec.MaxReplicas, lineDiff(small, large))
	}
}

// lineDiff lists the lines only a has (-) and only b has (+).
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// TestStorageSFTPLive starts sshd with the rendered config on loopback and
// logs in with sftp as the static and app nodes would. sshd needs the two
// accounts and a chroot whose every component is root's, so it runs in a
// private mount namespace where /srv (or /mnt) is the test's directory and
// /etc/passwd and /etc/shadow have the accounts added; nothing on the host
// changes. The client pins the rendered host key.
func TestStorageSFTPLive(t *testing.T) {
	hosttest.RequireRoot(t) // a mount namespace, and files owned by the site accounts
	for _, tool := range []string{"sshd", "ssh-keygen", "sftp", "ssh", "unshare", "mount"} {
		requireTool(t, tool)
	}
	mnt := ""
	for _, d := range []string{"/srv", "/mnt"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			mnt = d
			break
		}
	}
	hosttest.Require(t, mnt != "", "/srv or /mnt as a mount point (mkdir /srv)")
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// The layout as sshd sees it, under mnt; the test writes it under root.
	l := render.Layout{Conf: mnt + "/conf", Run: mnt + "/run", Log: mnt + "/log", Data: mnt + "/data", Site: mnt + "/site"}
	host := func(p string) string { return filepath.Join(root, strings.TrimPrefix(p, mnt)) }
	keys := t.TempDir()

	p := loadPlan(t, "default")
	moveToLoopback(p, p.Role(spec.RoleStorage)[0], plan.NetPrivate, "127.0.0.1")
	moveToLoopback(p, p.Node("app-1"), plan.NetPrivate, "127.0.0.1")
	moveToLoopback(p, p.Node("static"), plan.NetPrivate, "127.0.0.1")
	sec := storageSecrets(t, p, keys)
	n, err := render.RenderNode(p, p.Role(spec.RoleStorage)[0], render.Input{Layout: l, Secrets: sec})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(freePort(t, "127.0.0.1"))
	for _, d := range []string{l.Conf, l.Run, l.Log, l.Data + "/site/uploads"} {
		if err := os.MkdirAll(host(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range n.Files {
		data := f.Data
		if f.Path == "sshd_config" {
			data = []byte(strings.Replace(string(data), "ListenAddress 127.0.0.1:22\n", "ListenAddress 127.0.0.1:"+port+"\n", 1))
		}
		path := host(filepath.Join(l.Conf, f.Path))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	// The site as the driver lays it out: root's, but for the writable
	// path, which is site-rw's.
	const roUID, rwUID = 60001, 60002
	site := host(l.Data + "/site")
	if err := os.WriteFile(filepath.Join(site, "index.php"), []byte("<?php\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(site, "uploads"), rwUID, rwUID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, add string }{
		{"passwd", fmt.Sprintf("site-ro:x:%d:%d::/:/usr/sbin/nologin\nsite-rw:x:%d:%d::/:/usr/sbin/nologin\n", roUID, roUID, rwUID, rwUID)},
		{"shadow", "site-ro:*:20000::::::\nsite-rw:*:20000::::::\n"}, // '*': no password, not locked
	} {
		orig, err := os.ReadFile("/etc/" + f.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(keys, f.name), append(orig, f.add...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sshdPrivsepDir(t)
	argv := n.Services[0].Argv
	d := startDaemon(t, append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-ec",
		`mount --bind "$1" "$2"; mount --bind "$3/passwd" /etc/passwd; mount --bind "$3/shadow" /etc/shadow; shift 3; exec "$@"`,
		"sh", root, mnt, keys}, argv...)...)
	hostPub, _ := os.ReadFile(filepath.Join(keys, "host.pub"))
	knownHosts := filepath.Join(keys, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte("[127.0.0.1]:"+port+" "+string(hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	sshOpts := func(key string) []string {
		return []string{"-F", "/dev/null", "-i", filepath.Join(keys, key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
			"-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + knownHosts, "-o", "ConnectTimeout=30"}
	}
	sftp := func(key, user, batch string) (string, bool) {
		cmd := exec.Command("sftp", append(sshOpts(key), "-P", port, "-b", "-", user+"@127.0.0.1")...)
		cmd.Stdin = strings.NewReader(batch)
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}
	d.waitFor(t, "sshd accepting app-1 as site-rw", func() error {
		if out, ok := sftp("app-1", "site-rw", "ls\n"); !ok {
			return errors.New(out)
		}
		return nil
	})

	upload := filepath.Join(keys, "upload.txt")
	os.WriteFile(upload, []byte("uploaded\n"), 0o666)
	for _, c := range []struct {
		what, key, user, batch string
		ok                     bool
	}{
		{"app-1 writes uploads", "app-1", "site-rw", "put " + upload + " /uploads/up.txt\n", true},
		{"app-1 reads the site", "app-1", "site-rw", "get /index.php " + filepath.Join(keys, "got.php") + "\n", true},
		{"app-1 writes the site", "app-1", "site-rw", "put " + upload + " /index2.php\n", false},
		{"app-1 sees only the site", "app-1", "site-rw", "get /conf/sshd_config " + filepath.Join(keys, "x") + "\n", false},
		{"static reads the site", "static", "site-ro", "get /index.php " + filepath.Join(keys, "got2.php") + "\n", true},
		{"static writes uploads", "static", "site-ro", "put " + upload + " /uploads/ro.txt\n", false},
		{"static's key for site-rw", "static", "site-rw", "ls\n", false},
		{"app-1's key for site-ro", "app-1", "site-ro", "ls\n", false},
		{"app-2's key from app-1's address", "app-2", "site-rw", "ls\n", false},
		// A link in uploads would make a static server that follows links
		// (caddy) serve what it points at: the site's PHP, the node's files.
		{"app-1 plants a symlink", "app-1", "site-rw", "symlink /index.php /uploads/link.css\n", false},
		{"app-1 plants a hard link", "app-1", "site-rw", "ln /index.php /uploads/hard.css\n", false},
	} {
		if c.what == "static writes uploads" {
			// Only -R keeps site-ro out of a directory anyone may write.
			os.Chmod(filepath.Join(site, "uploads"), 0o777)
		}
		if out, ok := sftp(c.key, c.user, c.batch); ok != c.ok {
			t.Errorf("%s: ok = %v, want %v\n%s", c.what, ok, c.ok, out)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(site, "uploads", "up.txt"), &st); err != nil {
		t.Errorf("app-1's upload: %v", err)
	} else if st.Uid != rwUID || st.Mode&0o044 != 0o044 {
		t.Errorf("app-1's upload has uid %d and mode %o; want site-rw's, readable by site-ro", st.Uid, st.Mode&0o777)
	}
	for _, f := range []string{"index2.php", "uploads/ro.txt", "uploads/link.css", "uploads/hard.css"} {
		if _, err := os.Lstat(filepath.Join(site, f)); err == nil {
			t.Errorf("%s was written", f)
		}
	}
	out, _ := exec.Command("ssh", append(sshOpts("app-1"), "-p", port, "-T", "site-rw@127.0.0.1", "id")...).CombinedOutput()
	if strings.Contains(string(out), "uid=") {
		t.Errorf("site-rw ran a command: %s", out)
	}

	// A node whose root is an attacker's holds logins open without ever
	// authenticating, from its own address (127.0.0.2 here): it gets the
	// 3 that PerSourceMaxStartups allows it and no more, and the other
	// nodes still log in.
	dial := func() (net.Conn, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 30 * time.Second}
		c, err := d.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("connect from 127.0.0.2: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		banner, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return c, "no banner: " + err.Error()
		}
		return c, banner
	}
	for i := range 3 {
		c, banner := dial()
		defer c.Close()
		if !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Fatalf("unauthenticated login %d from 127.0.0.2: %q, want sshd's banner", i+1, banner)
		}
	}
	c, banner := dial()
	c.Close()
	if strings.HasPrefix(banner, "SSH-") {
		t.Errorf("a 4th unauthenticated login from the same address got sshd's banner %q; want it dropped", strings.TrimSpace(banner))
	}
	if out, ok := sftp("app-1", "site-rw", "ls\n"); !ok {
		t.Errorf("app-1 cannot log in while another address holds its 3 unauthenticated logins:\n%s", out)
	}
	d.stop(t)
}

// storageSecrets returns testSecrets with real keys, which sshd and ssh
// load: a host key and a client key for each node that mounts the storage.
// Each is written to dir under the node's name, and sshd's as "host".
func storageSecrets(t *testing.T, p *plan.Plan, dir string) render.Secrets {
	t.Helper()
	keygen := func(name, comment string) string {
		mustRun(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", filepath.Join(dir, name))
		return filepath.Join(dir, name)
	}
	sec := testSecrets(p)
	host, err := os.ReadFile(keygen("host", "host"))
	if err != nil {
		t.Fatal(err)
	}
	sec.StorageHostKey = host
	for node := range sec.StorageKeys {
		pub, err := os.ReadFile(keygen(node, "bulkhead-"+node) + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		sec.StorageKeys[node] = string(pub) // with its newline, as a file has it
	}
	return sec
}

// sshdPrivsepDir makes sure that /run/sshd exists, as a node's Setup does:
// sshd insists on its privilege separation directory, even for -t. A
// directory the test made is removed when it ends.
func sshdPrivsepDir(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		err := os.Mkdir("/run/sshd", 0o755)
		hosttest.Require(t, err == nil, "/run/sshd, sshd's privilege separation directory (mkdir /run/sshd): %v", err)
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}
}

// sshdEffective returns sshd's effective settings for user connecting
// from addr, keyed by lowercase keyword.
func sshdEffective(t *testing.T, conf, user, addr string) map[string][]string {
	t.Helper()
	out := mustRun(t, "/usr/sbin/sshd", "-T", "-f", conf, "-C", fmt.Sprintf("user=%s,host=%s,addr=%s", user, addr, addr))
	eff := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			eff[k] = append(eff[k], v)
		}
	}
	return eff
}

// TestStorageRejectsBadKeys renders the storage node with keys that would
// let a client out of its restrictions, or with keys missing.
func TestStorageRejectsBadKeys(t *testing.T) {
	p := loadPlan(t, "default")
	storage := p.Role(spec.RoleStorage)[0]
	for name, edit := range map[string]func(*render.Secrets){
		"key with options":   func(s *render.Secrets) { s.StorageKeys["app-1"] = `command="/bin/sh" ` + s.StorageKeys["app-1"] },
		"two keys in one":    func(s *render.Secrets) { s.StorageKeys["app-1"] += "\n" + s.StorageKeys["app-2"] },
		"missing client key": func(s *render.Secrets) { delete(s.StorageKeys, "static") },
		"missing host key":   func(s *render.Secrets) { s.StorageHostKey = nil },
		"not a key":          func(s *render.Secrets) { s.StorageKeys["app-2"] = "from=\"*\" ssh-ed25519" },
	} {
		s := testSecrets(p)
		edit(&s)
		if _, err := render.RenderNode(p, storage, render.Input{Layout: render.DefaultLayout(), Secrets: s}); err == nil {
			t.Errorf("rendered the sftp storage node with %s", name)
		}
	}
}

// TestStorageNFSClients reads ganesha.conf's exports and checks who may do
// what: the pseudo root and the site read-only to static and app nodes,
// each writable path read-write to the app nodes and read-only to static,
// nothing to anyone else.
func TestStorageNFSClients(t *testing.T) {
	p := loadPlan(t, "alt")
	storage := p.Role(spec.RoleStorage)[0]
	n, err := render.RenderNode(p, storage, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)})
	if err != nil {
		t.Fatal(err)
	}
	addrs := func(role string) string {
		var out []string
		for _, c := range p.Role(role) {
			out = append(out, c.Addr(plan.NetPrivate).String())
		}
		return strings.Join(out, ", ")
	}
	static, app := addrs(spec.RoleStatic), addrs(spec.RoleApp)
	want := map[string]map[string]string{
		"/":     {"MDONLY_RO": static + ", " + app},
		"/site": {"RO": static + " / " + app},
	}
	for _, w := range p.Site.Writable {
		want["/site/"+w] = map[string]string{"RW": app, "RO": static}
	}
	conf := string(fileOf(t, n, "ganesha.conf").Data)
	if got := ganeshaACL(conf); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("exports:\n got %v\nwant %v", got, want)
	}
	lines := confLines(conf)
	for _, l := range []string{
		"Bind_addr = " + storage.Addr(plan.NetPrivate).String() + ";",
		"Protocols = 4;",
		"Enable_UDP = false;",
		"Access_Type = None;",
		"Squash = All_Squash;",
		"Anonymous_Uid = 33;",
	} {
		if !slices.Contains(lines, l) {
			t.Errorf("ganesha.conf lacks %q", l)
		}
	}
}

// ganeshaACL maps each export's pseudo path to its CLIENT blocks: access
// type to the client lists (joined by " / " when several blocks grant the
// same access).
func ganeshaACL(conf string) map[string]map[string]string {
	out := map[string]map[string]string{}
	var pseudo, clients string
	for _, l := range confLines(conf) {
		v := strings.TrimSuffix(l[strings.Index(l, "=")+1:], ";")
		v = strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(l, "Pseudo ="):
			pseudo = v
			out[pseudo] = map[string]string{}
		case strings.HasPrefix(l, "Clients ="):
			clients = v
		case strings.HasPrefix(l, "Access_Type =") && clients != "":
			if old := out[pseudo][v]; old != "" {
				clients = old + " / " + clients
			}
			out[pseudo][v] = clients
			clients = ""
		}
	}
	return out
}

// TestStorageNFSLive starts nfs-ganesha with the rendered config on
// loopback, once as each kind of client would see it (a client's address
// moved to 127.0.0.1), and lists and writes files with libnfs: the static
// node reads but cannot write, an app node writes only the writable paths
// and what it writes belongs to www-data, and a stranger cannot even list.
func TestStorageNFSLive(t *testing.T) {
	hosttest.RequireRoot(t) // the writable paths are www-data's, as the driver makes them
	requireTool(t, "ganesha.nfsd")
	requireTool(t, "nfs-ls")
	requireTool(t, "nfs-cp")
	for _, c := range []struct {
		name, node      string // node moves to 127.0.0.1; none: a stranger
		list, writeable bool
	}{
		{"static", "static", true, false},
		{"app", "app-1", true, true},
		{"stranger", "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _, l := renderRole(t, "alt", spec.RoleStorage)
			moveToLoopback(p, p.Role(spec.RoleStorage)[0], plan.NetPrivate, "127.0.0.1")
			if c.node != "" {
				moveToLoopback(p, p.Node(c.node), plan.NetPrivate, "127.0.0.1")
			}
			n := rerenderRole(t, p, spec.RoleStorage, l, testSecrets(p))
			port := strconv.Itoa(freePort(t, "127.0.0.1"))
			conf := filepath.Join(l.Conf, "ganesha.conf")
			data := string(fileOf(t, n, "ganesha.conf").Data)
			if strings.Count(data, "NFS_Port = 2049;") != 1 {
				t.Fatalf("ganesha.conf does not set NFS_Port = 2049 exactly once")
			}
			if err := os.WriteFile(conf, []byte(strings.Replace(data, "NFS_Port = 2049;", "NFS_Port = "+port+";", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			// The site as the driver lays it out: root's, but for the
			// writable paths, which are www-data's.
			site := filepath.Join(l.Data, "site")
			if err := os.MkdirAll(site, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(site, "index.php"), []byte("<?php\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, w := range p.Site.Writable {
				if err := os.MkdirAll(filepath.Join(site, w), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(filepath.Join(site, w), 33, 33); err != nil {
					t.Fatal(err)
				}
			}
			upload := filepath.Join(t.TempDir(), "upload.txt")
			if err := os.WriteFile(upload, []byte("uploaded\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			url := func(path string) string { return "nfs://127.0.0.1" + path + "?version=4&nfsport=" + port }
			nfs := func(argv ...string) (string, bool) {
				out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
				return strings.TrimSpace(string(out)), err == nil
			}

			d := startDaemon(t, n.Services[0].Argv...)
			d.waitFor(t, "ganesha serving", func() error {
				if !strings.Contains(d.out.String(), "NFS SERVER INITIALIZED") {
					return errors.New("no NFS SERVER INITIALIZED in its output yet")
				}
				return nil
			})
			if strings.Contains(d.out.String(), "Config File (") {
				t.Errorf("ganesha found fault with its config:\n%s", d.out)
			}

			out, ok := nfs("nfs-ls", url("/site"))
			if ok != c.list || (ok && !strings.Contains(out, "index.php")) {
				t.Errorf("listing /site: ok = %v, want %v:\n%s", ok, c.list, out)
			}
			for _, w := range p.Site.Writable {
				out, ok := nfs("nfs-cp", upload, url(path.Join("/site", w, "upload.txt")))
				if ok != c.writeable {
					t.Errorf("writing %s: ok = %v, want %v:\n%s", w, ok, c.writeable, out)
				}
				if !ok {
					continue
				}
				var st syscall.Stat_t
				if err := syscall.Stat(filepath.Join(site, w, "upload.txt"), &st); err != nil {
					t.Errorf("the upload to %s is not on the storage node: %v", w, err)
				} else if st.Uid != 33 || st.Gid != 33 {
					t.Errorf("the upload to %s belongs to %d:%d, want www-data (33:33)", w, st.Uid, st.Gid)
				}
			}
			if out, ok := nfs("nfs-cp", upload, url("/site/index2.php")); ok {
				t.Errorf("%s wrote into the site outside its writable paths:\n%s", c.name, out)
			}
			if _, err := os.Stat(filepath.Join(site, "index2.php")); err == nil {
				t.Errorf("%s created a file in the site outside its writable paths", c.name)
			}
			d.stop(t)
		})
	}
}
