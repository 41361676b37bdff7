package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

type backupOptions struct {
	stackFlags
	// Output is the archive's path; "-" is standard output. Empty means
	// Dir/STACK-TIME.tar.zst.
	Output string
	// Dir holds the archives, named by stack and time; Keep, if above 0,
	// is how many of the stack's newest it keeps there.
	Dir  string
	Keep int
	// IncludeSecrets archives the stack's secrets, encrypted to the
	// passphrase in PassphraseFile or to the age Recipients.
	IncludeSecrets bool
	PassphraseFile string
	Recipients     []string
}

func backupCommand() *command {
	return &command{
		name:    "backup",
		args:    stackSynopsis + " [-o FILE | --dir DIR [--keep N]] [--include-secrets (--passphrase-file FILE | --recipient KEY...)]",
		summary: "write a consistent archive of the running stack's data and code",
		help: `
Backup writes one archive of what the stack needs back after its host is lost,
while the site keeps serving: the database's dump, made inside the db node in
one consistent snapshot (mariadb-dump --single-transaction, pg_dump), then the
uploads on the storage node, the live release's code and the stack file. The
dump comes first, so every upload a post in it names is in the archive.

The archive is a zstd-compressed tar with a manifest of every file's size and
SHA-256 (tar --zstd -xf reads it too), written to FILE.partial, synced and
renamed: FILE is whole or absent. By default it is ./STACK-TIME.tar.zst;
--dir DIR puts it in DIR under that name, and --keep N then removes all but
the stack's N newest there. -o - writes it to standard output.

The stack's secrets (database password, CA key, SSH keys) are left out unless
--include-secrets, and then only encrypted, with age: to a passphrase read
from --passphrase-file, or to the public keys --recipient names (age1...,
repeatable). 'bulkhead restore' puts an archive back.

Progress goes to standard error when it is a terminal.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o backupOptions
			o.stackFlags.bind(fs)
			fs.StringVar(&o.Output, "o", "", "write the archive to `FILE` (- for standard output)")
			fs.StringVar(&o.Dir, "dir", "", "write the archive into `DIR`, named STACK-TIME.tar.zst")
			fs.IntVar(&o.Keep, "keep", 0, "with --dir, keep only the stack's `N` newest archives there")
			fs.BoolVar(&o.IncludeSecrets, "include-secrets", false, "archive the stack's secrets too, encrypted")
			fs.StringVar(&o.PassphraseFile, "passphrase-file", "", "encrypt the secrets to the passphrase in `FILE`")
			fs.Var(listValue{&o.Recipients}, "recipient", "encrypt the secrets to the age public `KEY` (repeatable)")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("backup takes no arguments, got %q; name the archive with -o FILE", args[0])
				}
				if err := o.validate(); err != nil {
					return err
				}
				return runBackup(ctx, s, o)
			}
		},
	}
}

// validate checks the flags that go together.
func (o backupOptions) validate() error {
	switch {
	case o.Output != "" && o.Dir != "":
		return usageErrorf("-o names the archive and --dir the directory that gets one named by stack and time; give one of them")
	case o.Keep < 0:
		return usageErrorf("--keep %d: keep at least 1 archive", o.Keep)
	case o.Keep > 0 && o.Dir == "":
		return usageErrorf("--keep rotates the archives in a directory: give it with --dir DIR")
	case o.IncludeSecrets && o.PassphraseFile == "" && len(o.Recipients) == 0:
		return usageErrorf("--include-secrets stores the secrets only encrypted: give --passphrase-file FILE or --recipient KEY")
	case o.PassphraseFile != "" && len(o.Recipients) > 0:
		return usageErrorf("give --passphrase-file or --recipient, not both: age encrypts to a passphrase alone")
	case !o.IncludeSecrets && (o.PassphraseFile != "" || len(o.Recipients) > 0):
		return usageErrorf("--passphrase-file and --recipient encrypt the secrets, which only --include-secrets archives; add it")
	}
	return nil
}

// recipients are what the secrets are encrypted to.
func (o backupOptions) recipients() ([]age.Recipient, error) {
	if o.PassphraseFile != "" {
		pass, err := readPassphrase(o.PassphraseFile)
		if err != nil {
			return nil, err
		}
		r, err := age.NewScryptRecipient(pass)
		if err != nil {
			return nil, err
		}
		return []age.Recipient{r}, nil
	}
	var out []age.Recipient
	for _, k := range o.Recipients {
		r, err := age.ParseX25519Recipient(k)
		if err != nil {
			return nil, usageErrorf("--recipient %q: %v; give an age public key, age1...", k, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// readPassphrase reads a passphrase file: its first line, which must not
// be empty.
func readPassphrase(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("passphrase: %w", err)
	}
	pass, _, _ := strings.Cut(string(data), "\n")
	pass = strings.TrimSuffix(pass, "\r")
	if pass == "" {
		return "", fmt.Errorf("passphrase: %s holds no passphrase on its first line", file)
	}
	return pass, nil
}

func runBackup(ctx context.Context, s stdio, o backupOptions) error {
	began := time.Now()
	name, err := o.name()
	if err != nil {
		return err
	}
	var stackFile []byte
	if o.File != "" || o.Stack == "" {
		if _, stackFile, err = readStackFile(o.File, "pass -f FILE or --stack NAME"); err != nil {
			return err
		}
	}
	var recipients []age.Recipient
	if o.IncludeSecrets {
		if recipients, err = o.recipients(); err != nil {
			return err
		}
	}
	d := newDriver(s)
	snap, err := d.Snapshot(ctx, name)
	if err != nil {
		return err
	}
	defer snap.Close()
	if stackFile == nil {
		stackFile = snap.StackFile
	}
	if stackFile == nil {
		fmt.Fprintf(s.err, "note: bulkhead keeps no copy of %s's stack file (its last up predates that), so the archive holds none; pass -f FILE to include it\n", name)
	}
	src := backup.Source{
		Stack: name, Bulkhead: version(Version, buildInfo()),
		Release: snap.ReleaseDir, Uploads: snap.UploadsDir, UploadsRoot: snap.Uploads,
		StackFile: stackFile,
	}
	if o.IncludeSecrets {
		src.Secrets, src.Recipients = snap.Secrets, recipients
	}
	if o.Output == "-" {
		if isTerminal(s.out) {
			return usageErrorf("-o - writes the archive to standard output, which is a terminal here; redirect it, or give a file")
		}
		m, err := writeBackup(ctx, s, d, snap, src, func(src backup.Source, opts backup.WriteOptions) (*backup.Manifest, error) {
			return backup.Write(s.out, src, opts)
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(s.err, "backup of stack %s written to standard output: %s in %.1fs\n", name, size(m.Bytes()), time.Since(began).Seconds())
		return nil
	}
	path := o.Output
	if path == "" {
		dir := o.Dir
		if dir == "" {
			dir = "."
		}
		// Archives hold the database: only root reads the directory
		// made for them.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		path = filepath.Join(dir, backup.Name(name, began))
	}
	// A file of the site that changes while it is read makes the archive
	// fail its own check; a second reading, after the write, is whole.
	var m *backup.Manifest
	for attempt := 1; ; attempt++ {
		m, err = writeBackup(ctx, s, d, snap, src, func(src backup.Source, opts backup.WriteOptions) (*backup.Manifest, error) {
			return backup.WriteFile(path, src, opts)
		})
		if err == nil || !errors.Is(err, backup.ErrChanged) || attempt == 3 {
			break
		}
		fmt.Fprintf(s.err, "backup: %v; trying again\n", err)
	}
	if err != nil {
		return err
	}
	var rotated []string
	if o.Keep > 0 {
		if rotated, err = backup.Rotate(filepath.Dir(path), name, o.Keep); err != nil {
			return err
		}
	}
	printBackup(s, path, m, time.Since(began), o.IncludeSecrets, rotated)
	return nil
}

// writeBackup runs the database's dump in the db node, streaming into
// write's archive, with progress on a terminal. A dump that fails fails
// the archive.
func writeBackup(ctx context.Context, s stdio, d driver.Backend, snap *driver.Snapshot, src backup.Source,
	write func(backup.Source, backup.WriteOptions) (*backup.Manifest, error)) (*backup.Manifest, error) {
	opts := backup.WriteOptions{
		Skipped: func(name string, mode os.FileMode) {
			// A release holds a link for each writable path, into the
			// uploads the archive holds anyway.
			if rel, ok := strings.CutPrefix(name, "release/"); ok && mode&os.ModeSymlink != 0 && slices.Contains(snap.Plan.Site.Writable, rel) {
				return
			}
			fmt.Fprintf(s.err, "backup: left out %s: %v, neither a directory nor a regular file\n", name, mode.Type())
		},
	}
	if isTerminal(s.err) {
		start := time.Now()
		opts.Progress = func(done, total int64) {
			fmt.Fprintf(s.err, "\rbackup %s: %s archived (%.0fs)\033[K", src.Stack, size(done), time.Since(start).Seconds())
		}
		defer fmt.Fprintln(s.err)
	}
	db := snap.Plan.Role(spec.RoleDB)
	if len(db) == 0 {
		return write(src, opts)
	}
	desc, err := catalog.Lookup(db[0].Role, db[0].Software)
	if err != nil {
		return nil, err
	}
	if desc.Backup == nil {
		return write(src, opts)
	}
	argv, err := render.BackupVars(snap.Plan, db[0], render.DefaultLayout()).Expand(desc.Backup.Dump)
	if err != nil {
		return nil, fmt.Errorf("the dump command of %s: %w", desc.Software, err)
	}
	ver, err := dbVersion(ctx, d, src.Stack, db[0].Name, desc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var stderr tail
		err := d.Exec(ctx, src.Stack, db[0].Name, argv, nil, pw, &stderr)
		if err != nil {
			err = fmt.Errorf("%s in node %s: %w: %s", argv[0], db[0].Name, err, strings.TrimSpace(stderr.String()))
		}
		// nil closes the dump with EOF; an error fails the archive.
		pw.CloseWithError(err)
	}()
	src.DB = &backup.DB{Role: db[0].Role, Software: desc.Software, Version: ver, DumpFormat: desc.Backup.DumpFormat, DumpFile: desc.Backup.DumpFile}
	src.Dump, src.DumpLimit = pr, dumpLimit*db[0].Disk
	m, err := write(src, opts)
	if errors.Is(err, backup.ErrDumpTooLarge) {
		err = fmt.Errorf("%w: the limit is %d times the db node's disk (tiers.%s.disk), so that a db node cannot fill the host's disk through a backup; if the database is that large, raise the disk and run up, else look in node %s", err, dumpLimit, db[0].Role, db[0].Name)
	}
	// Whatever the archive's fate, the dump stops.
	pr.CloseWithError(errors.New("the archive was ended"))
	cancel()
	<-done
	return m, err
}

// dumpLimit is how many times its node's disk a database's dump may be:
// a dump's text may be larger than the tables it comes from (numbers
// written out, blobs in hex), but not without bound.
const dumpLimit = 4

// dbVersion asks the db node which version of its server it runs, with
// the catalog's Version command, so that a restore can tell whether its
// own server loads the dump.
func dbVersion(ctx context.Context, d driver.Backend, stack, node string, desc *catalog.Descriptor) (string, error) {
	var out, stderr tail
	if err := d.Exec(ctx, stack, node, desc.Backup.Version, nil, &out, &stderr); err != nil {
		return "", fmt.Errorf("ask node %s its %s version (%s): %w: %s", node, desc.Software, strings.Join(desc.Backup.Version, " "), err, strings.TrimSpace(stderr.String()))
	}
	v, err := desc.Backup.ParseVersion(out.String())
	if err != nil {
		return "", fmt.Errorf("node %s's %s version: %w", node, desc.Software, err)
	}
	return v, nil
}

// printBackup says what the archive holds.
func printBackup(s stdio, path string, m *backup.Manifest, took time.Duration, secrets bool, rotated []string) {
	var total int64
	if fi, err := os.Stat(path); err == nil {
		total = fi.Size()
	}
	parts := map[string]*struct {
		files int
		bytes int64
	}{"db": {}, "uploads": {}, "release": {}}
	for _, mb := range m.Members {
		top, _, _ := strings.Cut(mb.Path, "/")
		if p := parts[top]; p != nil && !mb.Dir {
			p.files++
			p.bytes += mb.Size
		}
	}
	fmt.Fprintf(s.out, "backup of stack %s: %s (%s, %s of data) in %.1fs\n", m.Stack, path, size(total), size(m.Bytes()), took.Seconds())
	if m.DB != nil {
		fmt.Fprintf(s.out, "  database: %s dump, %s, of %s %s\n", m.DB.Software, size(parts["db"].bytes), m.DB.Software, m.DB.Version)
	}
	fmt.Fprintf(s.out, "  uploads: %d files, %s\n", parts["uploads"].files, size(parts["uploads"].bytes))
	fmt.Fprintf(s.out, "  code: %d files, %s\n", parts["release"].files, size(parts["release"].bytes))
	if secrets {
		fmt.Fprintf(s.out, "  secrets: encrypted\n")
	} else {
		fmt.Fprintf(s.out, "  secrets: not included (--include-secrets)\n")
	}
	for _, r := range rotated {
		fmt.Fprintf(s.out, "  removed the older %s\n", r)
	}
}

// tail keeps the last KiB written to it: a tool's last words.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 1024; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

// isTerminal says whether w is a terminal: progress is for people, not
// for pipes and logs.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func buildInfo() *debug.BuildInfo {
	info, _ := debug.ReadBuildInfo()
	return info
}

// listValue is a flag that may be given more than once.
type listValue struct{ list *[]string }

func (v listValue) String() string {
	if v.list == nil {
		return ""
	}
	return strings.Join(*v.list, ",")
}

func (v listValue) Set(s string) error {
	*v.list = append(*v.list, s)
	return nil
}
