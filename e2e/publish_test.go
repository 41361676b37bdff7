package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestPublishRealClient: the published ports are the kernel's (#14). A
// visitor on another machine, here a namespace of the test's own behind a
// veth whose host end the stack publishes http on, reaches the edge with
// its own address: the edge logs it, and the app sees it in
// X-Forwarded-For. A client on the host's loopback (https on 127.0.0.1)
// reaches the edge as the public network's gateway, since the edge could
// not answer 127.0.0.1. verify passes with a published address beyond
// loopback, the supervisor listens on nothing, and down puts back the
// forwarding setting up changed on the veth.
func TestPublishRealClient(t *testing.T) {
	hosttest.RequireRoot(t)
	const (
		ns     = "bh-pub-client"
		link   = "bh-pub-h"
		hostIP = "10.253.9.1"
		client = "10.253.9.2"
	)
	// The visitor's machine: only its /30 is routed, on the host and in
	// it, so nothing leaves the host. Removed last, after the stack.
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", link).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	ip("netns", "add", ns)
	ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
	ip("addr", "add", hostIP+"/30", "dev", link)
	ip("link", "set", link, "up")
	ip("-n", ns, "addr", "add", client+"/30", "dev", "eth0")
	ip("-n", ns, "link", "set", "eth0", "up")
	ip("-n", ns, "link", "set", "lo", "up")
	fwd := "/proc/sys/net/ipv4/conf/" + link + "/forwarding"
	before, err := os.ReadFile(fwd)
	if err != nil {
		t.Fatal(err)
	}

	s := newStack(t, "e2epub", 253, 19120, unwatched)
	s.http = hostIP + ":19120"
	file := "name: e2epub\nnetworks:\n  private: 10.253.0.0/24\n  public: 10.253.1.0/28\npublish:\n  http: " + s.http + "\n  https: " + s.https + "\n" + unwatched
	if err := os.WriteFile(filepath.Join(s.dir, "bulkhead.yaml"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	s.run("up")

	// From the visitor's machine, to the address published beyond
	// loopback.
	probe := fmt.Sprintf("/publish-probe-%d", time.Now().UnixNano())
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10",
		"http://"+s.http+probe).CombinedOutput()
	if err != nil || len(out) != 3 || out[0] == '0' {
		t.Fatalf("a visitor's request to the published %s: %v: %q", s.http, err, out)
	}
	// From the host's loopback, to https.
	hprobe := probe + "-loopback"
	if out, err := exec.Command("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "https://"+s.https+hprobe).CombinedOutput(); err != nil || len(out) != 3 || out[0] == '0' {
		t.Fatalf("a loopback request to the published %s: %v: %q", s.https, err, out)
	}
	// The edge buffers its access log and flushes it within a second.
	var edgeLog string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		edgeLog, err = s.in("edge", "cat", "/var/log/bulkhead/access.log")
		if err != nil {
			t.Fatalf("the edge's access log: %v\n%s", err, edgeLog)
		}
		if grep(edgeLog, probe+" ") != "" && grep(edgeLog, hprobe+" ") != "" || time.Now().After(deadline) {
			break
		}
	}
	if line := grep(edgeLog, probe+" "); !strings.HasPrefix(line, client+" ") {
		t.Errorf("the edge logged the visitor's request as %q, want from %s", line, client)
	}
	if line := grep(edgeLog, hprobe+" "); !strings.HasPrefix(line, "10.253.1.1 ") {
		t.Errorf("the edge logged the loopback request as %q, want from the public gateway 10.253.1.1", line)
	}
	// The app behind the edge logs the address X-Forwarded-For gives it.
	var appLogs string
	for _, app := range []string{"app-1", "app-2"} {
		l, _ := s.in(app, "sh", "-c", "cat /var/log/bulkhead/*.log")
		appLogs += l
	}
	if line := grep(appLogs, probe+" "); !strings.HasPrefix(line, client+" ") {
		t.Errorf("the app logged the visitor's request as %q, want from %s (X-Forwarded-For)", line, client)
	}

	vout, err := s.exec("verify")
	if err != nil {
		t.Fatalf("verify with http published beyond loopback failed (%v):\n%s", err, vout)
	}
	for _, want := range []string{"published ports reach only the edge: " + s.http + " -> edge 10.253.1.2:80", "the supervisor listens on no port", "edge answers visitors via 10.253.1.1"} {
		if !strings.Contains(vout, want) {
			t.Errorf("verify's report lacks %q:\n%s", want, vout)
		}
	}
	if got, _ := os.ReadFile(fwd); strings.TrimSpace(string(got)) != "1" {
		t.Errorf("forwarding on %s while published: %q, want 1", link, got)
	}

	s.run("down", "--purge")
	if got, _ := os.ReadFile(fwd); string(got) != string(before) {
		t.Errorf("forwarding on %s after down: %q, want the %q up found", link, got, before)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-m", "3", "http://"+s.http+"/").CombinedOutput(); err == nil {
		t.Errorf("the published %s still answers after down: %q", s.http, out)
	}
}
