package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveHTTP serves h on a new unix socket at path until the test ends.
func serveHTTP(t *testing.T, path string, h http.HandlerFunc) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// TestQueryRefusesPlantedSocket: agent.sock sits in the node's run dir,
// which the node can write. Root in the node could replace it with a link
// to another socket on the host; the host must refuse rather than talk to
// whatever that is.
func TestQueryRefusesPlantedSocket(t *testing.T) {
	other := filepath.Join(t.TempDir(), "other.sock")
	serveHTTP(t, other, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"node":"impostor","healthy":true,"services":[]}`)
	})
	for _, tc := range []struct {
		name  string
		plant func(path string) error
		want  string
	}{
		{"absolute link", func(path string) error { return os.Symlink(other, path) }, "symbolic link"},
		{"relative link", func(path string) error {
			rel, _ := filepath.Rel(filepath.Dir(path), other)
			return os.Symlink(rel, path)
		}, "symbolic link"},
		{"a file", func(path string) error { return os.WriteFile(path, nil, 0o600) }, "not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.sock")
			if err := tc.plant(path); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := Query(ctx, path)
			if err == nil {
				t.Fatalf("Query through a planted %s answered %+v; want a refusal", tc.name, st)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "agent.sock") {
				t.Errorf("error should name agent.sock and say %q: %v", tc.want, err)
			} else {
				t.Log(err)
			}
			if _, err := Logs(ctx, path, "s", 1); err == nil {
				t.Errorf("Logs through a planted %s answered", tc.name)
			}
		})
	}
}

// TestReplyBounded: a node controls what its agent answers. A reply larger
// than the host will hold is cut off with an error, not read whole.
func TestReplyBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	serveHTTP(t, path, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status":
			fmt.Fprintf(w, `{"node":"%s","healthy":true}`, strings.Repeat("x", 2<<20))
		case "/logs":
			line := strings.Repeat("y", 8<<10) + "\n"
			for range 2000 { // 16 MiB
				if _, err := fmt.Fprint(w, line); err != nil {
					return
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := Query(ctx, path); err == nil || !strings.Contains(err.Error(), "larger than") {
		n := 0
		if st != nil {
			n = len(st.Node)
		}
		t.Errorf("Query of a 2 MiB reply: node name of %d bytes, err %v; want it cut off with an error", n, err)
	}
	if lines, err := Logs(ctx, path, "s", 0); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Logs of a 16 MiB reply: %d lines, err %v; want it cut off with an error", len(lines), err)
	}
}
