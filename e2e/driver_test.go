package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

var nodes = []string{"edge", "static", "cache", "db", "storage", "app-1", "app-2"}

// TestDriver brings the default stack up and checks what issue #3 asks of
// the local driver: idempotent up, the rulesets, the isolation facts from
// inside the nodes, no route off the host, self-healing, and a down that
// leaves nothing.
func TestDriver(t *testing.T) {
	s := newStack(t, "e2ed", 231, 18080, unwatched)
	out := s.run("up")
	if !strings.Contains(out, "http://"+s.http+"/") {
		t.Fatalf("up does not print the URL:\n%s", out)
	}

	t.Run("up again changes nothing", func(t *testing.T) {
		before := rulesets(t, s)
		out := s.run("up")
		if !strings.Contains(out, "up to date") || !strings.Contains(out, "nothing changed") {
			t.Errorf("second up did not say it changed nothing:\n%s", out)
		}
		after := rulesets(t, s)
		for _, n := range nodes {
			if before[n] != after[n] {
				t.Errorf("%s: ruleset changed by the second up:\n%s\n---\n%s", n, before[n], after[n])
			}
			// The kernel holds exactly the rendered ruleset: load the
			// rendered file into a scratch namespace and compare listings.
			file := filepath.Join("/var/lib/bulkhead", s.name, "nodes", n, "conf", "nftables.nft")
			if want := canonical(t, file); after[n] != want {
				t.Errorf("%s: ruleset in the node differs from the rendered one:\n%s\n---\n%s", n, after[n], want)
			}
		}
	})

	t.Run("a node cannot change its firewall", func(t *testing.T) {
		out, err := s.in("app-1", "nft", "flush", "ruleset")
		if err == nil || !strings.Contains(out, "Operation not permitted") {
			t.Errorf("nft flush ruleset inside app-1: err=%v\n%s", err, out)
		}
	})

	t.Run("a node sees no host secrets", func(t *testing.T) {
		for _, path := range []string{"/etc/shadow", "/root"} {
			if out, err := s.in("app-1", "cat", path); err == nil {
				t.Errorf("app-1 can read %s:\n%s", path, out)
			}
		}
		// db's data directory is the host's .../nodes/db/data; from app-1
		// neither it nor another node's anything is reachable.
		out, _ := s.in("app-1", "sh", "-c", "ls -a /var/lib/bulkhead; ls /var/lib/bulkhead/mysql 2>&1; cat /proc/mounts")
		if strings.Contains(out, "ibdata1") || strings.Contains(out, "nodes/db") || strings.Contains(out, "/nodes/storage/") {
			t.Errorf("app-1 sees another node's data:\n%s", out)
		}
	})

	t.Run("a node has few privileges and a read-only root", func(t *testing.T) {
		for _, n := range nodes {
			out, err := s.in(n, "grep", "^CapEff:", "/proc/self/status")
			if err != nil {
				t.Fatal(err, out)
			}
			caps, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(out, "CapEff:")), 16, 64)
			if err != nil {
				t.Fatal(err, out)
			}
			// CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_SYS_PTRACE 19, CAP_SYS_ADMIN 21.
			for name, bit := range map[string]uint{"NET_ADMIN": 12, "NET_RAW": 13, "SYS_PTRACE": 19, "SYS_ADMIN": 21} {
				if caps&(1<<bit) != 0 {
					t.Errorf("%s has CAP_%s", n, name)
				}
			}
			if out, err := s.in(n, "touch", "/usr/bin/x", "/x"); err == nil || !strings.Contains(out, "Read-only file system") {
				t.Errorf("%s can write its root: %v %s", n, err, out)
			}
		}
		// The db's cgroup holds the stack file's limits (1G, 512 pids),
		// the memory's with swap: none of it may go to the host's swap.
		for ctl, want := range map[string]string{"memory/memory.limit_in_bytes": "1073741824", "memory/memory.memsw.limit_in_bytes": "1073741824", "pids/pids.max": "512"} {
			if got := cgroupValue(t, "bh-"+s.name+"-db", ctl); got != want {
				t.Errorf("db %s = %s, want %s", ctl, got, want)
			}
		}
	})

	t.Run("each node is its own host", func(t *testing.T) {
		for _, n := range nodes {
			if out, err := s.in(n, "hostname"); err != nil || strings.TrimSpace(out) != n {
				t.Errorf("hostname in %s = %q, %v", n, out, err)
			}
		}
	})

	t.Run("logs and status", func(t *testing.T) {
		out := s.run("logs", "db", "-n", "5")
		if !strings.Contains(out, "mariadb: ") {
			t.Errorf("logs db shows no mariadb lines:\n%s", out)
		}
		st := status(t, s)
		for _, n := range nodes {
			if st[n].State != "running" || !st[n].Healthy {
				t.Errorf("status of %s: %+v", n, st[n])
			}
		}
	})

	t.Run("a node sees only its own processes", func(t *testing.T) {
		out, err := s.in("cache", "ps", "-eo", "comm")
		if err != nil {
			t.Fatal(err, out)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			switch strings.TrimSpace(l) {
			case "bulkhead", "memcached", "ps":
			default:
				t.Errorf("cache sees process %q:\n%s", l, out)
			}
		}
	})

	t.Run("allowed and denied connections", func(t *testing.T) {
		cache := s.privateNet + ".4"
		probe := "timeout 3 bash -c '</dev/tcp/" + cache + "/11211'"
		if out, err := s.in("app-1", "sh", "-c", probe); err != nil {
			t.Errorf("app-1 -> cache:11211 (allowed) failed: %v %s", err, out)
		}
		// Denied probes wait out their timeout; run them side by side.
		var wg sync.WaitGroup
		for _, from := range []string{"static", "edge", "db", "storage"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, err := s.in(from, "sh", "-c", probe); err == nil {
					t.Errorf("%s -> cache:11211 (denied) connected: %s", from, out)
				}
			}()
		}
		wg.Wait()
		db := s.privateNet + ".5"
		if _, err := s.in("edge", "sh", "-c", "timeout 3 bash -c '</dev/tcp/"+db+"/3306'"); err == nil {
			t.Error("edge -> db:3306 (denied) connected")
		}
		if out, err := s.in("app-2", "sh", "-c", "timeout 3 bash -c '</dev/tcp/"+db+"/3306'"); err != nil {
			t.Errorf("app-2 -> db:3306 (allowed) failed: %v %s", err, out)
		}
	})

	t.Run("no route off the host", func(t *testing.T) {
		// A route lookup sends no packet.
		for _, n := range nodes {
			out, err := exec.Command("ip", "-n", "bh-"+s.name+"-"+n, "route", "get", "203.0.113.1").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "unreachable") {
				t.Errorf("%s has a route off the stack: %s", n, out)
			}
		}
		for _, a := range []string{s.privateNet + ".200", strings.Replace(s.privateNet, ".0", ".1", 1) + ".10"} {
			out, err := exec.Command("ip", "route", "get", a).CombinedOutput()
			if err != nil || !regexp.MustCompile(` dev `+s.name+`-(pri|pub) `).Match(out) {
				t.Errorf("host routes %s elsewhere than the stack's bridge: %s", a, out)
			}
		}
	})

	t.Run("the agent restarts a dead daemon", func(t *testing.T) {
		pid, restarts := service(t, s, "cache", "memcached")
		if out, err := s.in("cache", "kill", "-9", strconv.Itoa(pid)); err != nil {
			t.Fatal(err, out)
		}
		hosttest.Eventually(t, 30*time.Second, "memcached restarted by the agent", func() bool {
			// Retried: an agent slow to answer leaves its services out.
			p, r, _ := serviceRunning(t, s, "cache", "memcached")
			return r == restarts+1 && p != 0 && p != pid
		})
	})

	t.Run("the supervisor restarts a dead node", func(t *testing.T) {
		id := "bh-" + s.name + "-static"
		if out, err := exec.Command("runc", "kill", id, "KILL").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		hosttest.Eventually(t, 30*time.Second, "static running and healthy again", func() bool {
			out, err := s.exec("status")
			return err == nil && regexp.MustCompile(`(?m)^static\s+running\s+\S+\s+healthy`).MatchString(out)
		})
	})

	t.Run("down removes everything, keeps data", func(t *testing.T) {
		s.run("down")
		s.assertGone()
		// The database is in db's disk image, which down unmounts and
		// keeps: look inside, read-only.
		img := filepath.Join("/var/lib/bulkhead", s.name, "nodes", "db", "disk.img")
		dir := t.TempDir()
		if out, err := exec.Command("mount", "-o", "loop,ro,noexec,nosuid,nodev", img, dir).CombinedOutput(); err != nil {
			t.Fatalf("mount db's disk image: %v %s", err, out)
		}
		defer exec.Command("umount", dir).Run()
		if _, err := os.Stat(filepath.Join(dir, "data", "mysql")); err != nil {
			t.Errorf("down lost the database: %v", err)
		}
	})
}

// rulesets lists `nft --numeric list ruleset` in every node.
func rulesets(t *testing.T, s *stack) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range nodes {
		b, err := exec.Command("ip", "netns", "exec", "bh-"+s.name+"-"+n, "nft", "--numeric", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v %s", n, err, b)
		}
		out[n] = string(b)
	}
	return out
}

// canonical loads a rendered ruleset file into a scratch namespace and
// lists it the way nft prints it.
func canonical(t *testing.T, file string) string {
	t.Helper()
	b, err := exec.Command("unshare", "--net", "sh", "-c", "nft -f \"$1\" && nft --numeric list ruleset", "sh", file).CombinedOutput()
	if err != nil {
		t.Fatalf("load %s: %v %s", file, err, b)
	}
	return string(b)
}

type nodeStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Healthy  bool   `json:"healthy"`
	Services []struct {
		Name     string `json:"name"`
		State    string `json:"state"`
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
	} `json:"services"`
}

// status is `bulkhead status --output json`.
func status(t *testing.T, s *stack) map[string]nodeStatus {
	t.Helper()
	out, _ := s.exec("status", "--output", "json")
	var st struct {
		Nodes []nodeStatus `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --output json: %v\n%s", err, out)
	}
	m := map[string]nodeStatus{}
	for _, n := range st.Nodes {
		m[n.Name] = n
	}
	return m
}

// service is one service's status as its node's agent reports it; its
// node's agent must answer (see serviceRunning for a poll).
func service(t *testing.T, s *stack, node, name string) (pid, restarts int) {
	t.Helper()
	for _, sv := range status(t, s)[node].Services {
		if sv.Name == name {
			return sv.PID, sv.Restarts
		}
	}
	t.Fatalf("no service %s on %s", name, node)
	return 0, 0
}

// TestFailedUp: an up that cannot publish its port says why and leaves the
// host as it found it.
func TestFailedUp(t *testing.T) {
	s := newStack(t, "e2ef", 232, 18180, unwatched)
	listen(t, s.http)
	out, err := s.exec("up")
	if err == nil {
		t.Fatalf("up succeeded with its port taken:\n%s", out)
	}
	if !strings.Contains(out, "cannot publish on "+s.http) || !strings.Contains(out, "address already in use") {
		t.Errorf("up does not say the port is taken:\n%s", out)
	}
	s.assertGone()
	if _, err := os.Stat(filepath.Join("/var/lib/bulkhead", s.name)); !os.IsNotExist(err) {
		t.Errorf("a failed first up left its state directory: %v", err)
	}
}

// TestInterruptedUp: Ctrl-C in the middle of a first up leaves nothing
// behind, or something down can finish.
func TestInterruptedUp(t *testing.T) {
	s := newStack(t, "e2ei", 233, 18280, unwatched)
	cmd := exec.Command(bin, "up")
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the namespaces are being made.
	hosttest.Eventually(t, 60*time.Second, "up creating namespaces", func() bool {
		out, _ := exec.Command("ip", "netns", "list").Output()
		return strings.Contains(string(out), "bh-"+s.name+"-")
	})
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	if out, err := s.exec("down"); err != nil && !strings.Contains(out, "no stack") {
		t.Fatalf("down after an interrupted up: %v\n%s", err, out)
	}
	s.assertGone()
}

// cgroupValue reads a cgroup v1 file (controller/file) of a container's
// PID 1.
func cgroupValue(t *testing.T, id, file string) string {
	t.Helper()
	out, err := exec.Command("runc", "state", id).Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Pid int }
	json.Unmarshal(out, &st)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	ctl, name, _ := strings.Cut(file, "/")
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && strings.Contains(","+f[1]+",", ","+ctl+",") {
			v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctl, f[2], name))
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(v))
		}
	}
	t.Fatalf("no %s cgroup for %s", ctl, id)
	return ""
}
