package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

var update = flag.Bool("update", false, "rewrite the files that testdata/script compares output with")

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"bulkhead": func() {
			// Scripts choose the kernel they run on, so that their output
			// is the same on every machine.
			canMountNFS = func() (bool, string) {
				if os.Getenv("BULKHEAD_TEST_NFS") == "yes" {
					return true, "this kernel can mount nfs4"
				}
				return false, "this kernel has no NFS client"
			}
			// And the driver's root, so that they never see the stacks
			// that run on this host.
			if root := os.Getenv("BULKHEAD_TEST_ROOT"); root != "" {
				driverRoot = root
			}
			os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
		},
	})
}

// TestScript runs the scripts in testdata/script. Run with -update to
// rewrite the files their cmp commands compare against.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		UpdateScripts:       *update,
		Cmds:                map[string]func(*testscript.TestScript, bool, []string){"jsonpath": jsonpath},
		Setup: func(env *testscript.Env) error {
			env.Setenv("BULKHEAD_TEST_ROOT", filepath.Join(env.WorkDir, ".driver"))
			return nil
		},
	})
}

// jsonpath FILE PATH WANT checks that the JSON value at PATH in FILE prints
// as WANT. PATH is dotted: object keys, list indexes, and "#" for a list's
// or object's length, as in "nodes.#" or "nodes.0.name".
func jsonpath(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: jsonpath FILE PATH WANT")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &v); err != nil {
		ts.Fatalf("%s: %v", args[0], err)
	}
	for _, k := range strings.Split(args[1], ".") {
		switch x := v.(type) {
		case map[string]any:
			if k == "#" {
				v = float64(len(x))
				continue
			}
			var ok bool
			if v, ok = x[k]; !ok {
				ts.Fatalf("%s: no key %q", args[1], k)
			}
		case []any:
			if k == "#" {
				v = float64(len(x))
				continue
			}
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				ts.Fatalf("%s: %q is not an index of a list of %d", args[1], k, len(x))
			}
			v = x[i]
		default:
			ts.Fatalf("%s: %q goes into a %T", args[1], k, v)
		}
	}
	got := fmt.Sprint(v)
	if f, ok := v.(float64); ok {
		got = strconv.FormatFloat(f, 'f', -1, 64) // sizes in bytes, not 2.68435456e+08
	}
	if (got == args[2]) == neg {
		ts.Fatalf("%s is %q, want %s%q", args[1], got, map[bool]string{true: "not ", false: ""}[neg], args[2])
	}
}

// TestParseExec checks that exec's flags are taken only before its command,
// and that the command, "-f" and "--" in it included, is passed on as given.
func TestParseExec(t *testing.T) {
	tests := []struct {
		args      []string
		file, pos string
	}{
		{[]string{"app-1", "--", "ls", "-f"}, "", "app-1|ls|-f"},
		{[]string{"app-1", "-f", "x.yaml", "--", "ls", "-f", "y"}, "x.yaml", "app-1|ls|-f|y"},
		{[]string{"-f", "x.yaml", "app-1", "--file", "z.yaml", "--", "sh", "-c", "a -- b"}, "z.yaml", "app-1|sh|-c|a -- b"},
		{[]string{"app-1", "ls", "-f", "--", "-f", "y"}, "", "app-1|ls|-f|--|-f|y"},
		{[]string{"--file=x.yaml", "app-1", "ls", "--stack", "s"}, "x.yaml", "app-1|ls|--stack|s"},
	}
	for _, tt := range tests {
		fs := execCommand().flagSet()
		var o execOptions
		o.stackFlags.bind(fs)
		pos, err := parse(fs, tt.args, execCommand().command)
		if err != nil {
			t.Errorf("parse %q: %v", tt.args, err)
			continue
		}
		if got := strings.Join(pos, "|"); got != tt.pos || o.File != tt.file {
			t.Errorf("parse %q: file %q, arguments %q; want file %q, arguments %q", tt.args, o.File, got, tt.file, tt.pos)
		}
	}
}
