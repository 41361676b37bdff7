package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/spec"
	"github.com/bulkhead/bulkhead/internal/verify"
)

type restoreOptions struct {
	stackFlags
	// Force lets the restore replace the data of a stack that is down.
	Force bool
	// PassphraseFile or IdentityFile open the archive's secrets.
	PassphraseFile, IdentityFile string
	NoInstall                    bool
	Wait                         time.Duration
}

func restoreCommand() *command {
	return &command{
		name:    "restore",
		args:    "ARCHIVE [-f FILE] [--force] [--passphrase-file FILE | --identity FILE] [--no-install] [--wait DURATION]",
		summary: "bring a stack back from a backup archive, here or on another host",
		help: `
Restore brings the stack of the stack file (./bulkhead.yaml, or -f FILE) back
from ARCHIVE, which 'bulkhead backup' wrote: its database, its uploads and its
code. The stack must be down or new. Another stack file (another name,
subnets and ports) restores the same archive into a second stack beside the
first, or on another host: that is how a stack moves.

Restore checks all of the archive before it changes anything: that it is a
whole bulkhead archive, every file against its manifest's SHA-256, that the
stack's database can load its dump (a MariaDB dump into PostgreSQL is refused),
and with --passphrase-file or --identity that they open its secrets. A bad
archive changes nothing on this host. A stack that is down but still holds
data (its database and uploads, which down keeps) is refused unless --force,
which replaces that data.

Then it puts the code back: written to the site directory when that is empty
or absent; a site directory that holds other code wins, as at an up, and the
archive's code stays a release for 'bulkhead rollback'. It brings the stack up,
puts the uploads on the storage node, loads the dump inside the db node,
restarts the cache, and runs verify.

The archive's secrets (when it was made with --include-secrets) become the
stack's only with the passphrase or age identity that opens them; without,
the stack keeps its own or makes new ones: a new CA, for one.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := restoreOptions{Wait: 2 * time.Minute}
			o.stackFlags.bind(fs)
			fs.BoolVar(&o.Force, "force", false, "replace the data of a stack that is down")
			fs.StringVar(&o.PassphraseFile, "passphrase-file", "", "open the archive's secrets with the passphrase in `FILE`")
			fs.StringVar(&o.IdentityFile, "identity", "", "open the archive's secrets with the age identities in `FILE`")
			fs.BoolVar(&o.NoInstall, "no-install", false, "fail, listing them, instead of installing missing packages")
			fs.DurationVar(&o.Wait, "wait", o.Wait, "how long to wait for every node to be healthy")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) != 1 {
					return usageErrorf("restore takes one archive, got %d arguments", len(args))
				}
				if err := o.validate(); err != nil {
					return err
				}
				return runRestore(ctx, s, args[0], o)
			}
		},
	}
}

func (o restoreOptions) validate() error {
	switch {
	case o.Stack != "" && o.File == "":
		return usageErrorf("restore builds the stack its stack file describes: give the file with -f FILE (the archive holds a copy, stack.yaml)")
	case o.PassphraseFile != "" && o.IdentityFile != "":
		return usageErrorf("give --passphrase-file or --identity, not both")
	}
	return nil
}

// identities open the archive's secrets.
func (o restoreOptions) identities() ([]age.Identity, error) {
	switch {
	case o.PassphraseFile != "":
		pass, err := readPassphrase(o.PassphraseFile)
		if err != nil {
			return nil, err
		}
		id, err := age.NewScryptIdentity(pass)
		if err != nil {
			return nil, err
		}
		return []age.Identity{id}, nil
	case o.IdentityFile != "":
		f, err := os.Open(o.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		defer f.Close()
		ids, err := age.ParseIdentities(f)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", o.IdentityFile, err)
		}
		return ids, nil
	}
	return nil, nil
}

func runRestore(ctx context.Context, s stdio, archive string, o restoreOptions) error {
	began := time.Now()
	if _, err := os.Stat(archive); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	// The site directory may be missing: the restore writes the
	// archive's code there.
	st, p, site, err := loadStackWith(s, o.File, func(dir string) bool {
		_, err := os.Stat(dir)
		return dirExists(dir) || os.IsNotExist(err)
	})
	if err != nil {
		return err
	}
	if err := o.check(o.File, st.Name); err != nil {
		return err
	}
	if p.Storage == spec.ProtocolNFS {
		return fmt.Errorf("storage over nfs is not supported by the local driver yet; set tiers.storage.protocol: sftp")
	}
	if err := checkDisk(st, driverRoot); err != nil {
		return err
	}
	ids, err := o.identities()
	if err != nil {
		return err
	}
	_, stackFile, err := readStackFile(o.File, "pass -f FILE")
	if err != nil {
		return err
	}
	ro := driver.RestoreOptions{
		UpOptions:  driver.UpOptions{SiteDir: site, NoInstall: o.NoInstall, Wait: o.Wait, StackFile: stackFile},
		Force:      o.Force,
		Identities: ids,
	}
	if isTerminal(s.err) {
		ro.Progress = func(done, total int64) {
			fmt.Fprintf(s.err, "\rrestore: checking and extracting %s: %d%%\033[K", filepath.Base(archive), done*100/max(total, 1))
			if done == total {
				fmt.Fprintln(s.err)
			}
		}
	}
	d := newDriver(s)
	res, err := d.Restore(ctx, p, archive, ro)
	if err != nil {
		return err
	}
	r, verr := d.Verify(ctx, p.Stack, verify.Options{Timeout: verify.DefaultTimeout})
	printRestore(s, archive, p.Stack, site, res, r, verr, time.Since(began))
	if verr != nil {
		return fmt.Errorf("stack %s is restored, but verify could not run: %w", p.Stack, verr)
	}
	if r.Counts.Failures > 0 {
		return fmt.Errorf("stack %s is restored, but failed verification: %s; 'bulkhead verify' shows them", p.Stack, strings.Join(r.Failures(), "; "))
	}
	fmt.Fprintf(s.out, "  http://%s/\n  https://%s/ (CA certificate: %s)\n", p.Publish.HTTP, p.Publish.HTTPS, d.CACertPath(p.Stack))
	return nil
}

// printRestore says what the restore put back.
func printRestore(s stdio, archive, stack, site string, res *driver.RestoreResult, r *verify.Report, verr error, took time.Duration) {
	m := res.Manifest
	from := fmt.Sprintf("stack %s's archive of %s", m.Stack, m.Created.Local().Format(time.DateTime))
	fmt.Fprintf(s.out, "restored stack %s from %s (%s) in %.1fs\n", stack, archive, from, took.Seconds())
	if len(res.Replaced) > 0 {
		fmt.Fprintf(s.out, "  replaced: %s\n", strings.Join(res.Replaced, ", "))
	}
	fmt.Fprintf(s.out, "  uploads: %d files, %s\n", res.Files, size(res.Bytes))
	if len(res.Skipped) > 0 {
		fmt.Fprintf(s.out, "  left out, not a writable path of this stack: %s\n", strings.Join(res.Skipped, ", "))
	}
	if m.DB != nil {
		fmt.Fprintf(s.out, "  database: %s dump of %s loaded\n", m.DB.Software, size(res.DumpBytes))
	}
	switch {
	case res.Archived == "":
		fmt.Fprintf(s.out, "  code: the archive holds none; the site directory's is live\n")
	case res.SiteWritten:
		fmt.Fprintf(s.out, "  code: release %s is live, written to %s\n", res.Release, site)
	case res.Release == res.Archived:
		fmt.Fprintf(s.out, "  code: release %s is live (the site directory holds the same code)\n", res.Release)
	default:
		fmt.Fprintf(s.out, "  code: release %s is live, from the site directory %s, which wins over the archive's %s ('bulkhead rollback %s' serves that)\n", res.Release, site, res.Archived, res.Archived)
	}
	switch {
	case res.Secrets:
		fmt.Fprintf(s.out, "  secrets: the archive's\n")
	case m.HasSecrets():
		fmt.Fprintf(s.out, "  secrets: the stack's own; the archive's are encrypted (--passphrase-file or --identity opens them)\n")
	default:
		fmt.Fprintf(s.out, "  secrets: the stack's own (the archive holds none)\n")
	}
	switch {
	case verr != nil:
		fmt.Fprintf(s.out, "  verify: could not run: %v\n", verr)
	case r.Counts.Failures > 0:
		fmt.Fprintf(s.out, "  verify: FAIL, %d cells probed, %d failures\n", r.Counts.Cells, r.Counts.Failures)
	default:
		fmt.Fprintf(s.out, "  verify: PASS, %d cells probed, 0 failures\n", r.Counts.Cells)
	}
}
