package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestContainment is the drill of issue #9: root inside a node (app-1,
// storage, db) attacks the host, its disk and the other nodes, class by
// class, and every attack must be contained. The stack must verify clean
// afterwards.
func TestContainment(t *testing.T) {
	s := newStack(t, "e2ek", 230, 18980, unwatched)
	s.run("up")
	root := filepath.Join("/var/lib/bulkhead", s.name)
	attacker := buildAttacker(t)
	drilled := []string{"app-1", "storage", "db"}
	for _, n := range drilled {
		s.put(t, n, attacker, "/tmp/attack")
	}

	t.Run("root in a node is not root on the host", func(t *testing.T) {
		for _, n := range drilled {
			out, err := s.in(n, "cat", "/proc/self/uid_map", "/proc/self/gid_map")
			if err != nil {
				t.Fatalf("%s: %v %s", n, err, out)
			}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(l)
				if len(f) != 3 || f[0] != "0" || f[1] == "0" || f[1] == "" {
					t.Errorf("%s maps its root as %q: want 0 mapped to an unprivileged host id", n, l)
				}
			}
			// The agent, PID 1, runs as that id on the host.
			if uid := hostUID(t, "bh-"+s.name+"-"+n); uid == 0 {
				t.Errorf("%s: its PID 1 runs as host uid 0", n)
			}
		}
	})

	t.Run("every node runs under a seccomp filter", func(t *testing.T) {
		for _, n := range nodes {
			out, err := s.in(n, "grep", "^Seccomp:", "/proc/1/status")
			if err != nil || strings.Fields(out)[1] != "2" {
				t.Errorf("%s: %v %q, want Seccomp: 2 (filter mode)", n, err, out)
			}
		}
	})

	t.Run("syscalls and keyrings", func(t *testing.T) {
		// Storage's sshd needs chroot (CAP_SYS_CHROOT) for its SFTP jail.
		allowed := map[string]map[string]bool{"storage": {"chroot": true}}
		for _, n := range drilled {
			out, _ := s.in(n, "/tmp/attack")
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) < 20 {
				t.Fatalf("%s: the attacker ran %d attacks:\n%s", n, len(lines), out)
			}
			for _, l := range lines {
				name, verdict, _ := strings.Cut(l, ": ")
				if allowed[n][name] {
					continue
				}
				if !strings.HasPrefix(verdict, "denied") {
					t.Errorf("%s: %s", n, l)
				}
			}
		}
	})

	t.Run("links: container output cannot be redirected onto the host", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "written-by-app-1")
		plant := fmt.Sprintf("for d in /var/log/bulkhead /var/lib/bulkhead /run/bulkhead; do ln -sf %s $d/container.log || exit 1; done", target)
		if out, err := s.in("app-1", "sh", "-c", plant); err != nil {
			t.Fatalf("plant: %v %s", err, out)
		}
		s.in("app-1", "kill", "-TERM", "1") // the exec dies with the container
		s.waitHealthy(t, "app-1")
		if _, err := os.Lstat(target); err == nil {
			t.Errorf("the host created %s through a link planted by app-1", target)
		}
	})

	t.Run("links: the site mount points cannot be replaced", func(t *testing.T) {
		for _, script := range []string{
			"umount /srv/shared",
			"ln -s /etc /srv/shared.new && mv -T /srv/shared.new /srv/shared",
			"mv /srv/shared /srv/shared.old",
			"umount /srv/releases",
			"mv /srv/releases /srv/releases.old",
			"touch /srv/planted",
		} {
			if out, err := s.in("app-1", "sh", "-c", script); err == nil {
				t.Errorf("app-1: %q succeeded: %s", script, out)
			}
		}
		srv := filepath.Join(root, "nodes", "app-1", "srv")
		for _, dir := range []string{"shared", "releases"} {
			if fi, err := os.Lstat(filepath.Join(srv, dir)); err != nil || !fi.IsDir() {
				t.Errorf("srv/%s on the host is not the mount point any more: %v %v", dir, fi, err)
			}
		}
	})

	t.Run("releases: root in an app node cannot change the code", func(t *testing.T) {
		for _, script := range []string{
			"echo '<?php echo \"DEFACED\";' > /srv/releases/*/index.php",
			"touch /srv/releases/*/planted.php",
			"rm -f /srv/releases/*/index.php",
			"chmod 666 /srv/releases/*/index.php",
			"mkdir /srv/releases/planted",
		} {
			if out, err := s.in("app-1", "sh", "-c", script); err == nil {
				t.Errorf("app-1: %q succeeded: %s", script, out)
			}
		}
		for range 4 { // both app nodes, whichever answers
			resp, err := http.Get("http://" + s.http + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.Contains(string(body), "DEFACED") {
				t.Errorf("GET / after app-1's attempts: %d %.200s", resp.StatusCode, body)
			}
		}
	})

	t.Run("links: logs are not read through a link", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "host-secret")
		os.WriteFile(secret, []byte("HOST-SECRET-LINE\n"), 0o600)
		if out, err := s.in("app-1", "ln", "-sf", secret, "/var/log/bulkhead/evil.log"); err != nil {
			t.Fatalf("plant: %v %s", err, out)
		}
		out, _ := s.exec("logs", "app-1", "-n", "5")
		if strings.Contains(out, "HOST-SECRET-LINE") {
			t.Errorf("bulkhead logs followed app-1's link to a host file:\n%s", out)
		}
		s.in("app-1", "rm", "-f", "/var/log/bulkhead/evil.log")
	})

	t.Run("links: the host does not follow a planted agent socket", func(t *testing.T) {
		// The stack's supervisor socket is a unix socket the node must
		// not make the host talk to.
		sock := filepath.Join(root, "supervisor.sock")
		out, err := s.in("app-1", "sh", "-c", "ln -sf "+sock+" /run/bulkhead/agent.sock.planted && mv -f /run/bulkhead/agent.sock.planted /run/bulkhead/agent.sock")
		if err != nil {
			t.Fatalf("plant: %v %s", err, out)
		}
		out, _ = s.exec("status")
		if !regexp.MustCompile(`(?mi)^app-1\s+running\s+\S+\s+unhealthy`).MatchString(out) {
			t.Errorf("status through a planted socket link: want app-1 running but unhealthy (its agent unreachable):\n%s", out)
		}
		s.in("app-1", "kill", "-TERM", "1")
		s.waitHealthy(t, "app-1")
	})

	t.Run("links: storage cannot make site sync write outside", func(t *testing.T) {
		dir := t.TempDir()
		// A compromised storage node plants links to a host directory
		// and a host file where a site's code would be.
		script := fmt.Sprintf("cd /var/lib/bulkhead/site && ln -s %s lib && ln -s %s/index.php index.php", dir, dir)
		if out, err := s.in("storage", "sh", "-c", script); err != nil {
			t.Fatalf("plant: %v %s", err, out)
		}
		out, _ := s.exec("up")
		entries, _ := os.ReadDir(dir)
		if len(entries) > 0 {
			t.Errorf("up wrote %d files into a host directory through storage's links:\n%s", len(entries), out)
		}
		if !regexp.MustCompile(`removed.*index\.php`).MatchString(out) || !strings.Contains(out, "lib") {
			t.Errorf("up did not name the links it removed from storage:\n%s", out)
		}
		resp, err := http.Get("http://" + s.http + "/")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("GET / after the repair: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
	})

	t.Run("storage cannot change the code others run", func(t *testing.T) {
		// Storage holds only the writable paths: code it writes is
		// served by nobody, and the next up removes it.
		if out, err := s.in("storage", "sh", "-c", "echo '<?php echo \"DEFACED\";' > /var/lib/bulkhead/site/index.php"); err != nil {
			t.Fatalf("tamper: %v %s", err, out)
		}
		for range 4 {
			resp, err := http.Get("http://" + s.http + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.Contains(string(body), "DEFACED") {
				t.Errorf("GET / after storage wrote index.php: %d %.200s", resp.StatusCode, body)
			}
		}
		out := s.run("up")
		if !regexp.MustCompile(`removed.*index\.php`).MatchString(out) {
			t.Errorf("up did not name the file it removed from storage:\n%s", out)
		}
	})

	t.Run("disk: a node fills only its own space", func(t *testing.T) {
		before := freeBytes(t, "/var/lib/bulkhead")
		for _, dir := range []string{"/var/log/bulkhead", "/var/lib/bulkhead", "/tmp", "/run/bulkhead"} {
			out, err := s.in("app-1", "sh", "-c", "dd if=/dev/zero of="+dir+"/fill bs=1M count=1200 2>&1")
			if err == nil || !strings.Contains(out, "No space left on device") {
				t.Errorf("app-1 wrote 1200M into %s: %v %s", dir, err, lastLine(out))
			}
		}
		// Through the container's output (PID 1's stdout), too.
		out, err := s.in("app-1", "sh", "-c", "dd if=/dev/zero of=/proc/1/fd/1 bs=1M count=1200 2>&1")
		if err == nil {
			t.Errorf("app-1 wrote 1200M to its container output: %s", lastLine(out))
		}
		if used := before - freeBytes(t, "/var/lib/bulkhead"); used > 1200<<20 {
			t.Errorf("app-1 took %d MB of the host's disk", used>>20)
		}
		// The site still stores a post while app-1 is full.
		post(t, s, "written while app-1 is full")
		for _, dir := range []string{"/var/log/bulkhead", "/var/lib/bulkhead", "/tmp", "/run/bulkhead"} {
			s.in("app-1", "rm", "-f", dir+"/fill")
		}
	})

	t.Run("pids: a fork bomb stays in its node", func(t *testing.T) {
		// 700 processes that live 8 s each, against a limit of 512.
		out, _ := s.in("app-1", "sh", "-c", "for i in $(seq 700); do sleep 8 & done 2>&1 | tail -1")
		if !strings.Contains(out, "Resource temporarily unavailable") && !strings.Contains(out, "Cannot fork") {
			t.Errorf("app-1 started 700 processes: %s", out)
		}
		id := "bh-" + s.name + "-app-1"
		if n, _ := strconv.Atoi(cgroupValue(t, id, "pids/pids.current")); n > 512 {
			t.Errorf("app-1 holds %d processes, over its limit of 512", n)
		}
		// While app-1 is full, the site answers from the rest of the pool.
		hosttest.Eventually(t, 20*time.Second, "the site serving while app-1 is out of pids", func() bool {
			resp, err := http.Get("http://" + s.http + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		hosttest.Eventually(t, 30*time.Second, "app-1's fork bomb over", func() bool {
			n, _ := strconv.Atoi(cgroupValue(t, id, "pids/pids.current"))
			return n < 100
		})
		post(t, s, "written after the fork bomb in app-1")
	})

	t.Run("cpu: every node has the plan's CPU weight", func(t *testing.T) {
		out, _, err := s.stdout("plan", "--output", "json")
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			Nodes []struct {
				Name      string `json:"name"`
				CPUWeight int    `json:"cpu_weight"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatal(err)
		}
		for _, n := range p.Nodes {
			want := n.CPUWeight * 1024 / 100
			got, err := strconv.Atoi(cgroupValue(t, "bh-"+s.name+"-"+n.Name, "cpu/cpu.shares"))
			if err != nil || n.CPUWeight == 0 || got != want {
				t.Errorf("%s cpu.shares = %d (%v), want %d (weight %d)", n.Name, got, err, want, n.CPUWeight)
			}
		}
	})

	t.Run("other nodes' files and processes", func(t *testing.T) {
		for _, n := range drilled {
			out, _ := s.in(n, "sh", "-c", "cat /proc/mounts; ls -R /var/lib/bulkhead 2>/dev/null | head -200")
			for _, other := range nodes {
				if other != n && strings.Contains(out, "/nodes/"+other+"/") {
					t.Errorf("%s sees %s's files:\n%s", n, other, out)
				}
			}
			// The host's processes do not exist for a node.
			if out, err := s.in(n, "kill", "-0", strconv.Itoa(os.Getpid())); err == nil {
				t.Errorf("%s can signal the host's pid %d: %s", n, os.Getpid(), out)
			}
		}
		if out, err := s.in("app-1", "cat", "/var/lib/bulkhead/mysql/mysql.ibd"); err == nil {
			t.Errorf("app-1 reads db's files: %s", out)
		}
	})

	t.Run("the host's files and sockets", func(t *testing.T) {
		// Each script prints BREACH only if the attack worked.
		for _, n := range drilled {
			for _, script := range []string{
				"touch /etc/passwd 2>/dev/null && echo BREACH",
				"touch /usr/bin/planted 2>/dev/null && echo BREACH",
				"echo 1 2>/dev/null > /proc/sys/net/ipv4/ip_forward && echo BREACH",
				"echo h 2>/dev/null > /proc/sysrq-trigger && echo BREACH",
				"head -c1 /proc/kcore 2>/dev/null | grep -q . && echo BREACH",
				"ls /sys/fs/cgroup/memory >/dev/null 2>&1 && echo BREACH",
				"ls /sys/class/net >/dev/null 2>&1 && echo BREACH",
				"cat /etc/shadow >/dev/null 2>&1 && echo BREACH",
				"ls /var/lib/bulkhead/../../../root >/dev/null 2>&1 && echo BREACH",
				"ls /bulkhead/../var/run/netns >/dev/null 2>&1 && echo BREACH",
			} {
				if out, _ := s.in(n, "sh", "-c", script); strings.Contains(out, "BREACH") {
					t.Errorf("%s: %q worked", n, script)
				}
			}
		}
	})

	t.Run("the network: only the role's flows", func(t *testing.T) {
		gw := s.privateNet + ".1"
		for _, c := range []struct{ from, to string }{
			{"app-1", gw + "/22"},                  // the host
			{"app-1", s.privateNet + ".5/22"},      // db, off its port
			{"app-1", s.privateNet + ".3/80"},      // static
			{"storage", s.privateNet + ".4/11211"}, // cache
			{"db", s.privateNet + ".6/22"},         // storage
		} {
			if out, err := s.in(c.from, "sh", "-c", "timeout 2 bash -c '</dev/tcp/"+c.to+"'"); err == nil {
				t.Errorf("%s reached %s: %s", c.from, c.to, out)
			}
		}
	})

	t.Run("the network: a node cannot send as another", func(t *testing.T) {
		app2, cache := s.privateNet+".8", s.privateNet+".4"
		// IP_TRANSPARENT (19) needs NET_ADMIN; IP_FREEBIND (15) needs
		// nothing, but the kernel routes no connection from an address
		// that is not the node's own.
		spoof := func(opt int) string {
			return fmt.Sprintf(`import socket
s = socket.socket()
s.setsockopt(socket.SOL_IP, %d, 1)
s.bind(("%s", 40999))
s.settimeout(2)
try:
    s.connect(("%s", 11211))
    print("connected")
except Exception as e:
    print("no answer:", e)
`, opt, app2, cache)
		}
		// From inside app-1, as its root: app-2's address, to cache, which
		// app-2 may reach.
		for _, opt := range []int{15, 19} {
			if out, _ := s.in("app-1", "python3", "-c", spoof(opt)); strings.Contains(out, "connected") {
				t.Errorf("app-1 sending as app-2 (option %d): %s", opt, out)
			}
		}
		// A node that got NET_ADMIN back (a kernel bug): the host, in
		// app-1's network namespace, sends that SYN for it. It must die on
		// the fabric, so cache's conntrack never sees it.
		out, err := exec.Command("ip", "netns", "exec", "bh-"+s.name+"-app-1", "python3", "-c", spoof(19)).CombinedOutput()
		if err != nil || strings.Contains(string(out), "connected") {
			t.Errorf("the spoofed SYN from app-1's namespace: %v %s", err, out)
		}
		ct, err := exec.Command("ip", "netns", "exec", "bh-"+s.name+"-cache", "cat", "/proc/net/nf_conntrack").CombinedOutput()
		if err != nil {
			t.Fatalf("cache's conntrack: %v %s", err, ct)
		}
		if strings.Contains(string(ct), "src="+app2+" dst="+cache+" sport=40999") {
			t.Errorf("a SYN from app-1's veth with app-2's address reached cache:\n%s", grep(string(ct), "sport=40999"))
		}
	})

	t.Run("uploads never run as code", func(t *testing.T) { uploadsNeverRun(t, s) })

	t.Run("verify passes after the drill", func(t *testing.T) {
		v, out, err := s.verify(t)
		if err != nil || !v.Pass {
			t.Fatalf("verify after the drill: %v\n%s", err, out)
		}
	})
}

// buildAttacker builds the drill's attacker for the nodes: static, so that
// it needs nothing of the node's libraries.
func buildAttacker(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "attack")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/attack")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the attacker: %v\n%s", err, b)
	}
	return out
}

// put copies a host file into a node's writable /tmp, as an attacker's
// download would.
func (s *stack) put(t *testing.T, node, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "exec", node, "--", "sh", "-c", "cat > "+dst+" && chmod 755 "+dst)
	cmd.Dir, cmd.Stdin = s.dir, f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy %s into %s: %v %s", src, node, err, out)
	}
}

// waitHealthy waits until status says node runs and is healthy.
func (s *stack) waitHealthy(t *testing.T, node string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(node) + `\s+running\s+\S+\s+healthy`)
	hosttest.Eventually(t, 60*time.Second, node+" running and healthy", func() bool {
		out, err := s.exec("status")
		return err == nil && re.MatchString(out)
	})
}

// hostUID is the host uid that a container's PID 1 runs as.
func hostUID(t *testing.T, id string) int {
	t.Helper()
	out, err := exec.Command("runc", "state", id).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid := regexp.MustCompile(`"pid": (\d+)`).FindSubmatch(out)
	if pid == nil {
		t.Fatalf("no pid in runc state %s", out)
	}
	st, err := os.ReadFile("/proc/" + string(pid[1]) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)`).FindSubmatch(st)
	uid, _ := strconv.Atoi(string(m[1]))
	return uid
}

func freeBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// post writes a post through the published port, as a visitor would, and
// checks that it is listed.
func post(t *testing.T, s *stack, title string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "http://" + s.http
	page := func() string {
		resp, err := c.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// A node the drill just exhausted may still fail its first requests;
	// the site must serve the form from the rest of the pool within the
	// edge's health checks.
	var token []string
	hosttest.Eventually(t, 30*time.Second, "the form with a CSRF token", func() bool {
		token = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page())
		return token != nil
	})
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.WriteField("csrf", token[1])
	w.WriteField("title", title)
	w.WriteField("body", "posted by the containment drill")
	w.Close()
	resp, err := c.Post(base+"/posts", w.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /posts = %d", resp.StatusCode)
	}
	hosttest.Eventually(t, 30*time.Second, "the post "+title+" listed", func() bool {
		return strings.Contains(page(), title)
	})
}

// uploadsNeverRun plants a PHP file in the uploads, as a compromised app
// node (or an upload filter's bug) would, and asks the edge for it in
// every disguise: no answer may carry the output of running it.
func uploadsNeverRun(t *testing.T, s *stack) {
	t.Helper()
	plant := `printf '<?php echo "EXEC"."UTED";' > /srv/shared/uploads/x.php && cp /srv/shared/uploads/x.php /srv/shared/uploads/x.jpg`
	if out, err := s.in("app-1", "sh", "-c", plant); err != nil {
		t.Fatalf("plant uploads/x.php: %v %s", err, out)
	}
	defer s.in("app-1", "rm", "-f", "/srv/shared/uploads/x.php", "/srv/shared/uploads/x.jpg")
	for _, path := range []string{
		"/uploads/x.php", "/%75ploads/x.php", "/uploads/x.php/", "/uploads/x.jpg/x.php",
		"/uploads/x.PHP", "/%2575ploads/x.php", "/assets/../uploads/x.php", "/uploads/%2e%2e/uploads/x.php",
		"//uploads/x.php", "/./uploads/x.php", "/uploads%2fx.php", "/index.php/../uploads/x.php",
	} {
		// Raw, so that no client normalises the path first.
		conn, err := net.DialTimeout("tcp", s.http, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path)
		reply, _ := io.ReadAll(conn)
		conn.Close()
		status, _, _ := strings.Cut(string(reply), "\r\n")
		if strings.Contains(string(reply), "EXECUTED") {
			t.Errorf("GET %s ran the uploaded PHP: %s", path, status)
		}
		if strings.HasPrefix(status, "HTTP/1.1 5") || status == "" {
			t.Errorf("GET %s = %q, want a 2xx-4xx answer", path, status)
		}
	}
}

// linksNeverFollowed: root in storage makes the links the site mount
// shows, and runs the server that says where they lead; Caddy on static
// follows links. One under the uploads to a file of the static node's own
// (its /proc/self/status) must not be served, whatever static runs.
func linksNeverFollowed(t *testing.T, s *stack) {
	t.Helper()
	const leak = "/var/lib/bulkhead/site/uploads/leak.css"
	if out, err := s.in("storage", "ln", "-sfn", "/proc/self/status", leak); err != nil {
		t.Fatalf("plant the link on storage: %v %s", err, out)
	}
	defer s.in("storage", "rm", "-f", leak)
	hosttest.Eventually(t, 30*time.Second, "the link through static's site mount", func() error {
		out, err := s.in("static", "stat", "-c", "%F", "/srv/shared/uploads/leak.css")
		if err != nil || strings.TrimSpace(out) != "symbolic link" {
			return fmt.Errorf("stat in static: %v %s", err, out)
		}
		return nil
	})
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + s.http + "/uploads/leak.css")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode == 200 || strings.Contains(string(body), "Uid:") {
		t.Errorf("GET /uploads/leak.css, a link storage planted to static's /proc/self/status: %d %q; want it refused", resp.StatusCode, body)
	}
	t.Logf("GET /uploads/leak.css, storage's link: %d", resp.StatusCode)
}
