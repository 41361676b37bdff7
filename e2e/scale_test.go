package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestScale grows the app pool from 2 to 3 nodes and back with up: the new
// node serves, the edge balances onto it, the db lets it in; scaling down
// removes exactly its container, namespace and links.
func TestScale(t *testing.T) {
	pool := func(n string) string {
		return "tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: " + n + "\n"
	}
	s := newStack(t, "e2ec", 236, 18580, pool("2"))
	s.run("up")
	file := filepath.Join(s.dir, "bulkhead.yaml")
	setPool := func(n string) {
		data, _ := os.ReadFile(file)
		i := strings.Index(string(data), "tiers:")
		os.WriteFile(file, []byte(string(data)[:i]+pool(n)), 0o644)
	}

	setPool("3")
	s.run("up")
	served := map[string]bool{}
	hosttest.Eventually(t, 30*time.Second, "app-3 serving through the edge", func() bool {
		resp, err := http.Get("http://" + s.http + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		served[resp.Header.Get("X-Served-By")] = resp.StatusCode == 200
		return served["app-3"]
	})
	if out, err := s.in("app-3", "sh", "-c", "timeout 3 bash -c '</dev/tcp/"+s.privateNet+".5/3306'"); err != nil {
		t.Errorf("app-3 cannot reach the db: %v %s", err, out)
	}
	// The new node's rows and columns verify like the others'.
	if v, out, err := s.verify(t); err != nil || !v.Pass || !strings.Contains(out, `"to":"app-3"`) {
		t.Errorf("verify after scaling up (%v):\n%.2000s", err, out)
	}

	setPool("2")
	s.run("up")
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "bh-"+s.name+"-app-3") {
		t.Errorf("app-3's namespace survived scaling down:\n%s", out)
	}
	if out, _ := exec.Command("runc", "list", "-q").Output(); strings.Contains(string(out), "bh-"+s.name+"-app-3") {
		t.Errorf("app-3's container survived scaling down:\n%s", out)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), s.name+"-8p") {
		t.Errorf("app-3's veth survived scaling down")
	}
	if v, out, err := s.verify(t); err != nil || !v.Pass || strings.Contains(out, `"app-3"`) {
		t.Errorf("verify after scaling down (%v):\n%.2000s", err, out)
	}
	for range 6 {
		resp, err := http.Get("http://" + s.http + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") == "app-3" {
			t.Fatalf("after scaling down: %d from %s", resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	}
}
