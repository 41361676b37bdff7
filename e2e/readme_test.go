package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestReadmeCommand runs README's quick-start command exactly as written, in
// a clean state, and checks that the default stack comes up and says where.
func TestReadmeCommand(t *testing.T) {
	hosttest.RequireRoot(t)
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "<!-- up-command")
	if !ok {
		t.Fatal("README has no up-command marker")
	}
	_, block, _ := strings.Cut(after, "```sh\n")
	line, _, _ := strings.Cut(block, "\n")
	if !strings.Contains(line, "bulkhead up") {
		t.Fatalf("README's marked command does not bring a stack up: %q", line)
	}
	if _, err := os.Stat("/var/lib/bulkhead/bulkhead"); err == nil {
		t.Fatal("a stack called bulkhead already exists on this host; the README command needs a clean state (bulkhead down --purge --stack bulkhead)")
	}
	home := t.TempDir()
	t.Cleanup(func() {
		cmd := exec.Command("/usr/local/bin/bulkhead", "down", "--purge", "-f", filepath.Join(home, "demo", "bulkhead.yaml"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("down --purge: %v\n%s", err, out)
		}
		(&stack{t: t, name: "bulkhead"}).assertGone()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	if !strings.Contains(string(out), "http://127.0.0.1:8080/") {
		t.Fatalf("the command does not print the URL:\n%s", out)
	}
	resp, err := http.Get("http://127.0.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "app-") {
		t.Fatalf("GET / = %d from %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
	}
}
