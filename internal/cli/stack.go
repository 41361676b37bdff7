package cli

import (
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/driver/local"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// driverRoot is where the local driver keeps stacks; tests point it
// elsewhere.
var driverRoot = local.DefaultRoot

// newDriver is the backend the verbs act through: the local driver.
// Tests put a fake here.
var newDriver = func(s stdio) driver.Backend {
	return &local.Driver{
		Root:     driverRoot,
		Log:      slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: logLevel()})),
		Progress: s.err,
	}
}

// logLevel is warnings, or everything with BULKHEAD_DEBUG=1: then the
// driver also says how long each step of up took, to profile it with.
func logLevel() slog.Level {
	if os.Getenv("BULKHEAD_DEBUG") == "1" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// loadStack is loadPlan plus the stack it was built from and the site
// directory as an absolute path.
func loadStack(s stdio, file string) (*spec.Stack, *plan.Plan, string, error) {
	return loadStackWith(s, file, dirExists)
}

// loadStackWith is loadStack with siteOK saying whether the site directory
// may be what it is: restore writes a missing one.
func loadStackWith(s stdio, file string, siteOK func(string) bool) (*spec.Stack, *plan.Plan, string, error) {
	st, err := loadSpecWith(s, file, false, siteOK)
	if err != nil {
		return nil, nil, "", err
	}
	p, err := plan.Build(st)
	if err != nil {
		return nil, nil, "", err
	}
	if file == "" {
		file = defaultFile
	}
	site := p.Site.Dir
	if !filepath.IsAbs(site) {
		site = filepath.Join(filepath.Dir(file), site)
	}
	site, err = filepath.Abs(site)
	return st, p, site, err
}

// surgePlan is st's plan with one more app node: a rolling deploy brings
// it up with the new release first (see driver.UpOptions.Surge). Nil for a
// stack without an app tier.
func surgePlan(st *spec.Stack) (*plan.Plan, error) {
	c := *st
	c.Tiers = maps.Clone(st.Tiers)
	for name, t := range c.Tiers {
		if t.Role == spec.RoleApp {
			more := *t
			more.Replicas = max(t.Replicas, 1) + 1
			c.Tiers[name] = &more
			return plan.Build(&c)
		}
	}
	return nil, nil
}

// freeSpace returns the bytes free to unprivileged users on the filesystem
// that holds dir. Root may dig into the blocks reserved beyond that, but
// those keep the host itself running when the disk fills. Tests replace it.
var freeSpace = func(dir string) (int64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, err
	}
	return int64(fs.Bavail) * int64(fs.Bsize), nil
}

// checkDisk refuses a stack whose nodes' disks do not fit in the free
// space where the driver keeps its data, root or, before the first up
// made it, its nearest existing parent. The errors are spec.Errors, placed
// at the tiers' disk fields, so up exits 2 as for any invalid stack file.
//
// As of this commit the check counts every node's whole disk, even the
// images an earlier up made, which need no new space; so a stack that
// fills most of its host can be refused on a second up. The driver, which
// knows which images exist, is the place to subtract them.
func checkDisk(st *spec.Stack, root string) error {
	dir := root
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	free, err := freeSpace(dir)
	if err != nil {
		return fmt.Errorf("measure free space for the nodes' disks in %s: %w", dir, err)
	}
	return st.CheckDisk(free, root)
}

// stackFlags are the flags of every verb that works on a stack. They are
// defined here once, so that they read the same on every verb, and Main lets
// them come before the verb too ("bulkhead -f x.yaml status"), as docker
// compose does.
type stackFlags struct {
	// File is the stack file; empty means ./bulkhead.yaml.
	File string
	// Stack is the stack's name, for verbs that need nothing else.
	Stack string
}

// stackSynopsis is how verbs' synopses show the stack flags.
const stackSynopsis = "[-f FILE | --stack NAME]"

func (f *stackFlags) bind(fs *flag.FlagSet) {
	usage := "read the stack from `FILE` instead of ./" + defaultFile
	fs.StringVar(&f.File, "f", "", usage)
	fs.StringVar(&f.File, "file", "", usage)
	fs.Var(nameValue{&f.Stack}, "stack", "the stack called `NAME`; with -f too, the file must be that stack")
}

// name names the stack a verb acts on: --stack if given, else the name in
// the stack file. Only the name is needed, so a file that no longer
// validates can still be taken down.
func (f stackFlags) name() (string, error) {
	if f.Stack != "" && f.File == "" {
		return f.Stack, nil
	}
	file, data, err := readStackFile(f.File, "pass -f FILE or --stack NAME")
	if err != nil {
		return "", err
	}
	st, err := spec.Parse(file, data)
	if err != nil {
		return "", err
	}
	return st.Name, f.check(file, st.Name)
}

// check refuses a stack file whose stack is not the one --stack names, so
// that a script which passes both never acts on the other one.
func (f stackFlags) check(file, name string) error {
	if f.Stack == "" || f.Stack == name {
		return nil
	}
	if file == "" {
		file = defaultFile
	}
	return usageErrorf("--stack %s, but %s is the stack %s; pass one of them, or both naming the same stack", f.Stack, file, name)
}

// nameValue is a flag that holds a stack name. The name becomes part of
// paths under the driver's root, so it is checked before anything uses it.
type nameValue struct{ name *string }

func (v nameValue) String() string {
	if v.name == nil {
		return ""
	}
	return *v.name
}

func (v nameValue) Set(s string) error {
	if !spec.NameChars(s) {
		return fmt.Errorf("a stack name has lowercase letters, digits and inner dashes, starting with a letter")
	}
	*v.name = s
	return nil
}
