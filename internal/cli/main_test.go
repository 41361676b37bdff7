package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// TestExitCodes checks the exit status of each kind of outcome: 0 ok, 1 the
// command failed, 2 a usage mistake or an invalid stack file.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid := write("valid.yaml", "site:\n  dir: .\n")
	invalid := write("invalid.yaml", "networks:\n  private: 837.234.1.10/24\n")
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, exitOK},
		{[]string{"-h"}, exitOK},
		{[]string{"help"}, exitOK},
		{[]string{"help", "plan"}, exitOK},
		{[]string{"plan", "-h"}, exitOK},
		{[]string{"version"}, exitOK},
		{[]string{"plan", "-f", valid}, exitOK},
		{[]string{}, exitUsage},
		{[]string{"foo"}, exitUsage},
		{[]string{"--foo"}, exitUsage},
		{[]string{"help", "foo"}, exitUsage},
		{[]string{"plan", "--foo"}, exitUsage},
		{[]string{"plan", "--output", "yaml"}, exitUsage},
		{[]string{"plan", "stray"}, exitUsage},
		{[]string{"version", "stray"}, exitUsage},
		{[]string{"plan", "-f", invalid}, exitUsage},
		{[]string{"plan", "-f", filepath.Join(dir, "missing.yaml")}, exitFailure},
		{[]string{"init", filepath.Join(dir, "valid.yaml")}, exitFailure}, // a file, not a directory
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		got := Main(context.Background(), tt.args, &out, &errOut)
		if got != tt.want {
			t.Errorf("bulkhead %q exited %d, want %d; stderr:\n%s", tt.args, got, tt.want, errOut.String())
		}
	}
}

func TestVersion(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		set  string
		info *debug.BuildInfo
		want string
	}{
		{"v1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}}, "v1.2.3"},
		{"", nil, devVersion},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, devVersion},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v0.2.0"}}, "v0.2.0"},
		{"", &debug.BuildInfo{
			Main:     debug.Module{Version: "v0.0.0-20261126042828-e121d2172b2a+dirty"},
			Settings: settings("vcs.revision", "e121d2172b2a733e62f4cc253e7cc926cba2eb2b", "vcs.modified", "true"),
		}, devVersion + "+e121d2172b2a.dirty"},
		{"", &debug.BuildInfo{
			Main:     debug.Module{Version: "(devel)"},
			Settings: settings("vcs.revision", "e121d2172b2a733e62f4cc253e7cc926cba2eb2b", "vcs.modified", "false"),
		}, devVersion + "+e121d2172b2a"},
	}
	for _, tt := range tests {
		if got := version(tt.set, tt.info); got != tt.want {
			t.Errorf("version(%q, %+v) = %q, want %q", tt.set, tt.info, got, tt.want)
		}
	}
}
