package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/release"
)

func deployCommand() *command {
	return &command{
		name:    "deploy",
		args:    stackSynopsis + " [--wait DURATION] [--drain DURATION]",
		summary: "roll the site's code out to a running stack as a new release",
		help: `
Deploy makes the site's directory a new release and moves the running stack to
it, with no failed request. A release is the site's code, read-only and named
by the hash of its content; writable paths (uploads) live on storage and are
shared by every release.

First every PHP file that changed is parsed: a file that does not parse stops
the deploy before anything changes. Then one more app node starts with the new
release; it gets visitors only once the site's check path (site.check, default
/healthz) and / answer 2xx on it. The static nodes switch. Then each app node
in turn leaves the edge's pool, finishes its requests (up to --drain), switches,
passes the same checks and a re-verify of its rows and columns of the matrix,
and rejoins. Last, the extra node drains and goes. So no fewer app nodes serve
than before, and a failing release never answers a visitor: when a check fails,
every node goes back to the live release, the release is marked failed, and
deploy exits 1 with the failing answer and the node's last error-log line.

Up does the same when the site changed. 'bulkhead releases' lists the releases;
'bulkhead rollback' goes back to one. The last 5 are kept.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := upOptions{Wait: 2 * time.Minute}
			o.stackFlags.bind(fs)
			fs.DurationVar(&o.Wait, "wait", o.Wait, "how long to wait for each node to be healthy")
			fs.DurationVar(&o.Drain, "drain", 10*time.Second, "how long an app node leaving the pool may finish its requests")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("deploy takes no arguments, got %q; pass the stack file with -f", args[0])
				}
				o.NoInstall = true
				return runUp(ctx, s, o, true)
			}
		},
	}
}

func releasesCommand() *command {
	return &command{
		name:    "releases",
		args:    stackSynopsis,
		summary: "list the stack's releases: id, time, size, state",
		help: `
Releases lists the stack's releases, newest first: the id (the start of the
hash of the site's code), when it was made, its files and size, and its state:
live (serving), previous (was live), built (never live) or failed (rolled back;
the reason follows). During a deploy, the nodes that already run the new
release are listed under it.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o stackFlags
			o.bind(fs)
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("releases takes no arguments, got %q", args[0])
				}
				name, err := o.name()
				if err != nil {
					return err
				}
				idx, err := newDriver(s).Releases(ctx, name)
				if err != nil {
					return err
				}
				printReleases(s, name, idx)
				return nil
			}
		},
	}
}

// printReleases prints idx, newest first.
func printReleases(s stdio, stack string, idx *release.Index) {
	if len(idx.Releases) == 0 {
		fmt.Fprintf(s.out, "stack %s has no releases yet; 'bulkhead up' makes the first\n", stack)
		return
	}
	byRelease := map[string][]string{}
	for node, id := range idx.Nodes {
		byRelease[id] = append(byRelease[id], node)
	}
	tw := table(s.out)
	fmt.Fprintf(tw, "RELEASE\tCREATED\tFILES\tSIZE\tHASH\tSTATE\n")
	for _, r := range slices.Backward(idx.Releases) {
		state := r.State
		if nodes := byRelease[r.ID]; len(nodes) > 0 && r.ID != idx.Live {
			slices.Sort(nodes)
			state += " (running on " + strings.Join(nodes, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Created.Local().Format(time.DateTime), r.Files, size(r.Bytes), r.Hash[:24]+"...", state)
	}
	tw.Flush()
	for _, r := range slices.Backward(idx.Releases) {
		if r.State == release.Failed && r.Error != "" {
			why := strings.Join(strings.Fields(strings.ReplaceAll(r.Error, "\n    |", "")), " ")
			if len(why) > 300 {
				why = why[:300] + "..."
			}
			fmt.Fprintf(s.out, "%s failed: %s\n", r.ID, why)
		}
	}
}

func size(b int64) string {
	switch {
	case b >= 10<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	case b >= 10<<10:
		return fmt.Sprintf("%d KiB", b>>10)
	}
	return fmt.Sprintf("%d B", b)
}

func rollbackCommand() *command {
	return &command{
		name:    "rollback",
		args:    stackSynopsis + " [RELEASE] [--wait DURATION] [--drain DURATION]",
		summary: "move the running stack back to an earlier release",
		help: `
Rollback moves the running stack to RELEASE (an id from 'bulkhead releases', or
its first 4 or more characters), or without one to the release that was live
before the current one. It goes through the same steps and checks as deploy,
so it fails no request either. The site directory is left as it is: up and
deploy roll forward again only once the site's code changes.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := upOptions{Wait: 2 * time.Minute}
			o.stackFlags.bind(fs)
			fs.DurationVar(&o.Wait, "wait", o.Wait, "how long to wait for each node to be healthy")
			fs.DurationVar(&o.Drain, "drain", 10*time.Second, "how long an app node leaving the pool may finish its requests")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 1 {
					return usageErrorf("rollback takes at most one release, got %q", args)
				}
				id := ""
				if len(args) == 1 {
					id = args[0]
				}
				st, p, site, err := loadStack(s, o.File)
				if err != nil {
					return err
				}
				if err := o.check(o.File, st.Name); err != nil {
					return err
				}
				surge, err := surgePlan(st)
				if err != nil {
					return err
				}
				began := time.Now()
				res, err := newDriver(s).Rollback(ctx, p, id, driver.UpOptions{SiteDir: site, Wait: o.Wait, Drain: o.Drain, Surge: surge, NoInstall: true})
				if err != nil {
					return err
				}
				if !res.Changed {
					fmt.Fprintf(s.out, "release %s is already live; nothing changed\n", res.Release)
					return nil
				}
				fmt.Fprintf(s.out, "rolled back: release %s is live on every node (%.1fs)\n", res.Release, time.Since(began).Seconds())
				return nil
			}
		},
	}
}
