package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReboot simulates a reboot of the host under a running stack: every
// process of the stack is killed by PID from its journal, and its
// containers, mounts, disks, namespaces, links and firewall tables are
// removed behind bulkhead's back, with runc, umount, losetup, ip and nft,
// as a reboot loses them. The boot entry point must then bring the stack
// back: the site answers, verify passes, and the database row and the
// upload written before are still there. A stack taken down stays down.
func TestReboot(t *testing.T) {
	s := newStack(t, "e2eb", 245, 18640, unwatched)
	s.run("up")
	sql := []string{"exec", "db", "--", "mariadb", "--defaults-file=/etc/bulkhead/my.cnf", "site", "-N", "-e"}
	s.run(append(sql, "CREATE TABLE boot_check (x INT); INSERT INTO boot_check VALUES (42)")...)
	s.run("exec", "app-1", "--", "sh", "-c", "echo kept > /srv/shared/uploads/boot.txt")

	rebootStack(t, s.name)
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get("http://" + s.http + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("after the simulated reboot the site still answers %d", resp.StatusCode)
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil || strings.Contains(string(out), "bh-"+s.name+"-") {
		t.Fatalf("the simulated reboot left namespaces (%v):\n%s", err, out)
	}

	out := s.run("boot")
	if !strings.Contains(out, "back up: ") || !strings.Contains(out, s.name) {
		t.Errorf("boot did not name %s:\n%s", s.name, out)
	}
	resp, err := c.Get("http://" + s.http + "/")
	if err != nil {
		t.Fatalf("after boot: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after boot GET / = %d", resp.StatusCode)
	}
	if got := strings.TrimSpace(s.run(append(sql, "SELECT x FROM boot_check")...)); !strings.HasSuffix(got, "42") {
		t.Errorf("the row written before the reboot: %q", got)
	}
	if got := s.run("exec", "app-1", "--", "cat", "/srv/shared/uploads/boot.txt"); !strings.Contains(got, "kept") {
		t.Errorf("the upload written before the reboot: %q", got)
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass {
		t.Errorf("verify after boot (%v): failures %q\n%.3000s", err, v.Failures, out)
	}

	// Down means down: boot does not bring the stack back.
	s.run("down")
	s.run("boot")
	if resp, err := c.Get("http://" + s.http + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("boot brought back a stack that was taken down: GET / = %d", resp.StatusCode)
	}
}

// rebootStack removes what stack's journal lists with the system's own
// tools, as a reboot would, without bulkhead.
func rebootStack(t *testing.T, stack string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("/var/lib/bulkhead", stack, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Objects []struct{ Kind, Name, Detail string } `json:"objects"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	run := func(argv ...string) {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Logf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	// The supervisor and its keeper restart each other: a reboot ends both
	// at once, so both stop before either is killed.
	var pair []string
	for _, o := range j.Objects {
		if o.Kind == "process" || o.Kind == "keeper" {
			pair = append(pair, o.Name)
		}
	}
	if len(pair) > 0 {
		run(append([]string{"kill", "-STOP"}, pair...)...)
		run(append([]string{"kill", "-KILL"}, pair...)...)
	}
	for _, kind := range []string{"container", "mount", "volume", "netns", "veth", "bridge", "nft-table"} {
		for _, o := range j.Objects {
			if o.Kind != kind {
				continue
			}
			switch kind {
			case "container":
				run("runc", "kill", o.Name, "KILL")
				run("runc", "delete", "-f", o.Name)
			case "mount":
				run("umount", "-R", "-l", o.Name)
			case "volume":
				run("umount", "-l", o.Name)
				out, _ := exec.Command("losetup", "-j", o.Detail, "-O", "NAME", "-n").Output()
				for _, l := range strings.Fields(string(out)) {
					run("losetup", "-d", l)
				}
			case "netns":
				run("ip", "netns", "delete", o.Name)
				if pin := filepath.Join("/run/bulkhead/userns", o.Name); fileExists(pin) {
					run("umount", pin)
					os.Remove(pin)
				}
			case "veth", "bridge":
				if fileExists(filepath.Join("/sys/class/net", o.Name)) {
					run("ip", "link", "delete", o.Name)
				}
			case "nft-table":
				run(append([]string{"nft", "delete", "table"}, strings.Fields(o.Name)...)...)
			}
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
