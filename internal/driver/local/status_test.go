package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// logsFixture is a stack "s" with one node "app-1" whose log dir, which the
// node can write, holds an ordinary log; and a secret outside it.
func logsFixture(t *testing.T) (d *Driver, logDir, secret string) {
	t.Helper()
	d = &Driver{Root: t.TempDir()}
	ps := d.paths("s")
	write(t, ps.plan(), `{"nodes":[{"name":"app-1"}]}`)
	logDir = ps.node("app-1").log()
	write(t, filepath.Join(logDir, "php.log"), "php line\n")
	secret = filepath.Join(t.TempDir(), "secret")
	write(t, secret, "host secret\n")
	return d, logDir, secret
}

// TestLogsRefusesPlantedLinks: root in a node can put a link among its
// logs. Logs must not print what it points to, and must say which node and
// which file it refused.
func TestLogsRefusesPlantedLinks(t *testing.T) {
	for _, tc := range []struct {
		name, service, plant string
		target               func(secret string) string
	}{
		{"all logs, absolute link", "", "evil.log", func(s string) string { return s }},
		{"one service, relative link", "evil", "evil.log", func(s string) string {
			rel, _ := filepath.Rel("/", s)
			return strings.Repeat("../", 32) + rel
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, logDir, secret := logsFixture(t)
			if err := os.Symlink(tc.target(secret), filepath.Join(logDir, tc.plant)); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := d.Logs(context.Background(), "s", "app-1", tc.service, 10, false, &out)
			if strings.Contains(out.String(), "host secret") {
				t.Errorf("Logs printed the file a planted link points to:\n%s", out.String())
			}
			if err == nil || !strings.Contains(err.Error(), "app-1") || !strings.Contains(err.Error(), tc.plant) || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("want an error naming the node, %s and the link; got %v", tc.plant, err)
			}
			if tc.service == "" && !strings.Contains(out.String(), "php: php line") {
				t.Errorf("the ordinary logs were not printed:\n%s", out.String())
			}
		})
	}
}

// TestLogsServiceName: a service name cannot reach out of the log dir.
func TestLogsServiceName(t *testing.T) {
	d, _, secret := logsFixture(t)
	climb := strings.Repeat("../", 32) + strings.TrimPrefix(secret, "/")
	os.Rename(secret, secret+".log")
	for _, service := range []string{climb, "../php", "a/b", "..", ".", "php/"} {
		var out bytes.Buffer
		err := d.Logs(context.Background(), "s", "app-1", service, 10, false, &out)
		if err == nil || !strings.Contains(err.Error(), "service") {
			t.Errorf("service %q: want a refusal of the name, got %v", service, err)
		}
		if strings.Contains(out.String(), "host secret") {
			t.Errorf("service %q printed the host's secret", service)
		}
	}
	var out bytes.Buffer
	if err := d.Logs(context.Background(), "s", "app-1", "php", 10, false, &out); err != nil || out.String() != "php: php line\n" {
		t.Errorf("Logs php = %q, %v", out.String(), err)
	}
}
