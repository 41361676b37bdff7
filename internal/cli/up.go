package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/driver/local"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

type upOptions struct {
	stackFlags
	NoInstall bool
	NoSandbox bool
	DryRun    bool
	Wait      time.Duration
	Drain     time.Duration
}

func upCommand() *command {
	return &command{
		name:    "up",
		args:    stackSynopsis + " [--dry-run] [--no-install] [--wait DURATION] [--drain DURATION] [--unsafe-no-sandbox]",
		summary: "bring the stack up on this host, or bring it in line with the file",
		help: `
Up reads the stack file, checks it, and makes this host run it: a bridge per
network, and per node a network namespace with its own firewall and a
container that runs the node's daemons. It installs the Debian packages the
stack needs first (without starting their services), unless --no-install.

Up is idempotent: run it again with the same file and it changes nothing. Run
it after editing the file or the site and it applies the difference, and
only that: firewalls change in place; nodes whose daemons can reload their
configuration (the edge, storage's sshd, the database's grants) reload it;
only nodes whose other configuration changed restart. A node that joins the
app pool gets requests only once it is healthy; one that leaves gets no new
ones, finishes what it serves (up to --drain), and only then stops. Data
(the database, uploads) is kept. --dry-run prints what up would do to each
node, and changes nothing.

Up refuses, before it changes anything, a stack whose nodes' disks add up to
more than is free in ` + local.DefaultRoot + `, naming the tiers to shrink.

If up fails on a stack that did not exist, it removes what it made. On a
stack that exists, it leaves it as it is; run up again, or down.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := upOptions{Wait: 2 * time.Minute}
			o.stackFlags.bind(fs)
			fs.BoolVar(&o.NoInstall, "no-install", false, "fail, listing them, instead of installing missing packages")
			fs.DurationVar(&o.Wait, "wait", o.Wait, "how long to wait for every node to be healthy")
			fs.DurationVar(&o.Drain, "drain", 10*time.Second, "how long a node leaving the stack may finish its requests before it stops")
			fs.BoolVar(&o.DryRun, "dry-run", false, "print what up would do to each node, and change nothing")
			fs.BoolVar(&o.NoSandbox, "unsafe-no-sandbox", false, "run nodes without user namespaces and seccomp: root in a node is root on the host; only to measure what the sandbox costs")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("up takes no arguments, got %q; pass the stack file with -f", args[0])
				}
				return runUp(ctx, s, o, false)
			}
		},
	}
}

// runUp brings the stack up; deploy insists that it runs already.
func runUp(ctx context.Context, s stdio, o upOptions, deploy bool) error {
	st, p, site, err := loadStack(s, o.File)
	if err != nil {
		return err
	}
	if deploy {
		if idx, err := newDriver(s).Releases(ctx, p.Stack); err != nil || idx.Live == "" {
			return fmt.Errorf("stack %s is not up, so there is nothing to deploy to; run 'bulkhead up' first", p.Stack)
		}
	}
	surge, err := surgePlan(st)
	if err != nil {
		return err
	}
	if err := o.check(o.File, st.Name); err != nil {
		return err
	}
	if p.Storage == spec.ProtocolNFS {
		return fmt.Errorf("storage over nfs is not supported by the local driver yet; set tiers.storage.protocol: sftp")
	}
	// Before the driver touches anything: a stack that cannot fit is
	// refused, not half made.
	if err := checkDisk(st, driverRoot); err != nil {
		return err
	}
	if o.DryRun {
		return printChanges(ctx, s, p, site)
	}
	began := time.Now()
	if o.NoSandbox {
		fmt.Fprintf(s.err, "WARNING: --unsafe-no-sandbox: the nodes of %s run without user namespaces and seccomp; root in a node is root on this host\n", p.Stack)
	}
	// The driver keeps the stack file, for a backup to archive.
	_, stackFile, err := readStackFile(o.File, "pass -f FILE")
	if err != nil {
		return err
	}
	res, err := newDriver(s).Up(ctx, p, driver.UpOptions{SiteDir: site, NoInstall: o.NoInstall, Wait: o.Wait, NoSandbox: o.NoSandbox, Drain: o.Drain, Surge: surge, StackFile: stackFile})
	if err != nil {
		return err
	}
	if deploy {
		if res.Release == "" {
			fmt.Fprintf(s.out, "the site's code is the release already live; nothing to deploy\n")
		} else {
			fmt.Fprintf(s.out, "release %s is live on every node (%.1fs); 'bulkhead releases' lists them, 'bulkhead rollback' goes back\n", res.Release, time.Since(began).Seconds())
		}
		return nil
	}
	if res.Release != "" {
		fmt.Fprintf(s.out, "release %s is live on every node\n", res.Release)
	}
	if !res.Changed {
		fmt.Fprintf(s.out, "stack %s is up to date: %d nodes running, nothing changed\n", p.Stack, len(p.Nodes))
	} else {
		fmt.Fprintf(s.out, "stack %s is up: %d nodes in %.1fs\n", p.Stack, len(p.Nodes), time.Since(began).Seconds())
		for _, x := range []struct {
			what  string
			nodes []string
		}{{"started", res.Restarted}, {"reloaded", res.Reloaded}, {"drained and removed", res.Removed}} {
			if len(x.nodes) > 0 {
				fmt.Fprintf(s.out, "  %s: %s\n", x.what, strings.Join(once(x.nodes), ", "))
			}
		}
	}
	fmt.Fprintf(s.out, "  http://%s/\n  https://%s/ (CA certificate: %s)\n", p.Publish.HTTP, p.Publish.HTTPS, newDriver(s).CACertPath(p.Stack))
	return nil
}

// once is names without repeats, in their first order: a deploy reloads
// the edge once per app node.
func once(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// printChanges prints what up would do to each node.
func printChanges(ctx context.Context, s stdio, p *plan.Plan, site string) error {
	changes, err := newDriver(s).Changes(ctx, p, site)
	if err != nil {
		return err
	}
	mark := map[string]string{"create": "+", "remove": "-", "none": "="}
	var same []string
	tw := table(s.out)
	for _, c := range changes {
		if c.Action == "none" {
			same = append(same, c.Node)
			continue
		}
		m := mark[c.Action]
		if m == "" {
			m = "~"
		}
		what, files := c.Action, c.Files
		switch c.Action {
		case "remove":
			what = "drain, then remove"
		case "deploy":
			// The release, then the files that differ, a few of them.
			what = "deploy " + strings.TrimPrefix(files[0], "release ")
			files = files[1:]
			if n := len(files); n > 5 {
				files = append(files[:5:5], fmt.Sprintf("and %d more", n-5))
			}
			files = []string{"changed: " + strings.Join(files, ", ")}
		case "release":
			what = "first " + files[0]
			files = nil
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\n", m, c.Node, what, strings.Join(files, ", "))
	}
	tw.Flush()
	if len(same) > 0 {
		fmt.Fprintf(s.out, "= %s: unchanged\n", strings.Join(same, ", "))
	}
	fmt.Fprintf(s.out, "dry run: nothing was changed\n")
	return nil
}
