package render_test

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/sendmail"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// testSecrets are fixed so that golden files are stable. They are test
// inputs, not defaults: nothing outside tests renders with them.
func testSecrets(p *plan.Plan) render.Secrets {
	s := render.Secrets{
		DBPassword:     "golden-db-password",
		StorageKeys:    map[string]string{},
		StorageHostKey: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\ngolden-host-key\n-----END OPENSSH PRIVATE KEY-----\n"),
		TLSCert:        []byte("-----BEGIN CERTIFICATE-----\ngolden-cert\n-----END CERTIFICATE-----\n"),
		TLSKey:         []byte("-----BEGIN PRIVATE KEY-----\ngolden-key\n-----END PRIVATE KEY-----\n"),
		MailPassword:   "golden-smarthost-password",
		MailCA:         []byte("-----BEGIN CERTIFICATE-----\ngolden-smarthost-ca\n-----END CERTIFICATE-----\n"),
	}
	for _, n := range p.Nodes {
		if n.Role == spec.RoleStatic || n.Role == spec.RoleApp {
			s.StorageKeys[n.Name] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGoldenKeyOf" + strings.ReplaceAll(n.Name, "-", "") + " bulkhead-" + n.Name
		}
	}
	return s
}

// loadPlan parses, validates and plans a stack in testdata/stacks, resolving
// storage "auto" to sftp as a kernel without NFS would.
func loadPlan(t testing.TB, name string) *plan.Plan {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "stacks", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return planFrom(t, data)
}

// planFrom builds the plan of a stack file's text.
func planFrom(t testing.TB, data []byte) *plan.Plan {
	t.Helper()
	st, err := spec.Parse("bulkhead.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate(st, spec.Env{}); err != nil {
		t.Fatal(err)
	}
	if s := st.ByRole(spec.RoleStorage); s != nil && s.Protocol == spec.ProtocolAuto {
		s.Protocol = spec.ProtocolSFTP
	}
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stackCases(t testing.TB) []string {
	matches, err := filepath.Glob(filepath.Join("testdata", "stacks", "*.yaml"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no stacks in testdata/stacks: %v", err)
	}
	var out []string
	for _, m := range matches {
		out = append(out, strings.TrimSuffix(filepath.Base(m), ".yaml"))
	}
	return out
}

// TestGolden renders every stack in testdata/stacks with the default layout
// and compares each file with testdata/golden/STACK/NODE/FILE. Run with
// -update to rewrite them, then read the diff.
func TestGolden(t *testing.T) {
	for _, c := range stackCases(t) {
		t.Run(c, func(t *testing.T) {
			p := loadPlan(t, c)
			nodes, err := render.Render(p, render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)})
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "golden", c)
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			}
			want := map[string]bool{}
			for _, n := range nodes {
				svcs, err := json.MarshalIndent(n.Services, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				files := append(n.Files, render.File{Path: "services.json", Data: append(svcs, '\n')})
				for _, f := range files {
					rel := filepath.Join(n.Name, f.Path)
					want[rel] = true
					golden(t, filepath.Join(dir, rel), f.Data)
				}
			}
			// A golden file that nothing renders any more is stale.
			filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dir, path)
					if !want[rel] {
						t.Errorf("%s: golden file is no longer rendered; run go test -update", path)
					}
				}
				return nil
			})
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: %v (run go test -update to create it)", path, err)
		return
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from the rendered file (run go test -update and read the diff):\n%s", path, firstDiff(string(want), string(got)))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, a, b)
		}
	}
	return ""
}

// TestRenderDeterministic renders the same plan twice and expects the same
// bytes: map iteration must never leak into output.
func TestRenderDeterministic(t *testing.T) {
	for _, c := range stackCases(t) {
		p := loadPlan(t, c)
		in := render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)}
		a, err := render.Render(p, in)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			b, err := render.Render(p, in)
			if err != nil {
				t.Fatal(err)
			}
			for i := range a {
				for j := range a[i].Files {
					if string(a[i].Files[j].Data) != string(b[i].Files[j].Data) {
						t.Fatalf("%s: %s/%s differs between two renders", c, a[i].Name, a[i].Files[j].Path)
					}
				}
			}
		}
	}
}

// TestSecretsAreInputs renders with two different passwords and expects the
// password to appear only where it is given, never as a constant.
func TestSecretsAreInputs(t *testing.T) {
	p := loadPlan(t, "default")
	for _, pw := range []string{"first-Secret-1", "second-Secret-2"} {
		nodes, err := render.Render(p, render.Input{Layout: render.DefaultLayout(), Secrets: withPassword(testSecrets(p), pw)})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range nodes {
			for _, f := range n.Files {
				if strings.Contains(string(f.Data), "golden-db-password") {
					t.Errorf("%s/%s holds a password that was not given", n.Name, f.Path)
				}
				found = found || strings.Contains(string(f.Data), pw)
			}
		}
		if !found {
			t.Errorf("password %q appears in no rendered file", pw)
		}
	}
}

// renderRole renders the first node of role in stack c with testSecrets and
// writes it out as writeNode does.
func renderRole(t *testing.T, c, role string) (*plan.Plan, render.Node, render.Layout) {
	t.Helper()
	p := loadPlan(t, c)
	nodes := p.Role(role)
	if len(nodes) == 0 {
		t.Fatalf("stack %s has no %s node", c, role)
	}
	n, l := writeNode(t, p, nodes[0].Name, testSecrets(p))
	return p, n, l
}

// writeNode renders node name of p, which the test may have changed, with
// sec and a layout rooted in a temporary directory, writes its files there
// and creates the directories daemons expect, so that a daemon's own offline
// check can read the config as it would inside the node. The temporary
// directories are opened to other users, as /etc and /var/lib are in a node,
// so that daemons which drop root (www-data, redis, mysql) can reach the
// layout.
func writeNode(t *testing.T, p *plan.Plan, name string, sec render.Secrets) (render.Node, render.Layout) {
	t.Helper()
	return writeNodeOn(t, p, name, sec, nil)
}

// writeNodeOn is writeNode for a node rendered as a pod of cluster, or as
// the local driver's node if cluster is nil.
func writeNodeOn(t *testing.T, p *plan.Plan, name string, sec render.Secrets, cluster *render.Cluster) (render.Node, render.Layout) {
	t.Helper()
	pn := p.Node(name)
	if pn == nil {
		t.Fatalf("no node %s", name)
	}
	root := t.TempDir()
	for d := root; d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l := render.Layout{
		Conf: filepath.Join(root, "conf"), Run: filepath.Join(root, "run"), Log: filepath.Join(root, "log"),
		Data: filepath.Join(root, "data"), Site: filepath.Join(root, "site"), Shared: filepath.Join(root, "shared"),
		Agent: filepath.Join(root, "bulkhead"),
	}
	// The agent binary, for PHP's mail(): this test binary, which runs
	// the sink when called as sendmail (TestMain), where www-data can run it.
	self, err := os.ReadFile(testBinary())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.Agent, self, 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := render.RenderNode(p, pn, render.Input{Layout: l, Secrets: sec, Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{l.Conf, filepath.Join(l.Conf, render.SecretsDir), l.Run, l.Log, l.Data, l.Site, l.Shared} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFiles(t, l, n)
	return n, l
}

// rerenderRole renders the first node of role again, with a changed plan or
// secrets, and writes its files over the ones renderRole wrote, as the
// driver does before it restarts or reloads a daemon.
func rerenderRole(t *testing.T, p *plan.Plan, role string, l render.Layout, s render.Secrets) render.Node {
	t.Helper()
	n, err := render.RenderNode(p, p.Role(role)[0], render.Input{Layout: l, Secrets: s})
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, l, n)
	return n
}

// writeFiles writes n's files under l.Conf with their modes. A file already
// there is removed first: a secret is read-only, and WriteFile would keep an
// old file's mode.
func writeFiles(t *testing.T, l render.Layout, n render.Node) {
	t.Helper()
	for _, f := range n.Files {
		path := filepath.Join(l.Conf, f.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f.Data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
}

// fileOf returns the file n renders at path.
func fileOf(t *testing.T, n render.Node, path string) render.File {
	t.Helper()
	for _, f := range n.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("%s renders no %s", n.Name, path)
	return render.File{}
}

// withSoftware returns a stack's plan with the first node of role switched
// to software, and that node, so that each renderer of a role is checked in
// every test stack, with and without a DMZ.
func withSoftware(t *testing.T, stack, role, software string) (*plan.Plan, *plan.Node) {
	t.Helper()
	p := loadPlan(t, stack)
	n := p.Role(role)[0]
	n.Software = software
	return p, n
}

// confLines returns a config's lines without comments and with runs of
// blanks squeezed to one space.
func confLines(conf string) []string {
	var out []string
	for _, line := range strings.Split(conf, "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if f := strings.Fields(line); len(f) > 0 {
			out = append(out, strings.Join(f, " "))
		}
	}
	return out
}

// requireTool finds a daemon's binary (see hosttest.Require).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	hosttest.Require(t, false, "%s (apt-get install the package that has it; .ci/run lists them)", name)
	return ""
}

func withPassword(s render.Secrets, pw string) render.Secrets {
	s.DBPassword = pw
	return s
}

// TestMain runs the sendmail sink when the test binary is called as the
// node's agent binary is by PHP's mail() ("sendmail -t -i"), and the tests
// otherwise.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "sendmail" {
		sendmail.Sink(os.Stdin, os.Stderr, os.Args[2:])
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testBinary() string {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return self
}
