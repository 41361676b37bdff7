package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/sample"
)

type initOptions struct {
	// Dir is where to write bulkhead.yaml and site/.
	Dir string
	// Force overwrites an existing bulkhead.yaml and site/.
	Force bool
	// App is the application to write instead of the sample site:
	// "wordpress", or "" for the sample.
	App string
	// From is the WordPress tree to copy (App wordpress).
	From string
}

func initCommand() *command {
	return &command{
		name:    "init",
		args:    "[DIR] [--force] [--app wordpress [--from DIR]]",
		summary: "write a commented bulkhead.yaml and a sample PHP site to start from",
		help: `
Init writes DIR/bulkhead.yaml, a commented stack file describing the default
stack (edge, static, app ×2, cache, db, storage and the monitor), and DIR/site/, a
small PHP site for it to serve. DIR defaults to the current directory and is
created if needed.

With --app wordpress, site/ is WordPress instead, copied from Debian's
wordpress package (` + sample.DebianWordPress + `) or from your own
WordPress tree with --from, with a wp-config.php that finds the database in
the environment bulkhead gives the app nodes; bulkhead.yaml then names the
paths WordPress serves as static files and the one directory it writes.

Init refuses to touch an existing bulkhead.yaml or site/ unless --force is
given.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o initOptions
			fs.BoolVar(&o.Force, "force", false, "overwrite an existing bulkhead.yaml and site/")
			fs.StringVar(&o.App, "app", "", "write `APP` (wordpress) instead of the sample site")
			fs.StringVar(&o.From, "from", sample.DebianWordPress, "with --app wordpress, copy WordPress from `DIR`")
			return func(ctx context.Context, s stdio, args []string) error {
				switch len(args) {
				case 0:
					o.Dir = "."
				case 1:
					o.Dir = args[0]
				default:
					return usageErrorf("init takes one directory, got %d arguments", len(args))
				}
				return runInit(ctx, s, o)
			}
		},
	}
}

func runInit(_ context.Context, s stdio, o initOptions) error {
	var written []string
	var err error
	switch o.App {
	case "":
		written, err = sample.Write(o.Dir, o.Force)
	case "wordpress":
		var res sample.WordPressResult
		res, err = sample.WriteWordPress(o.Dir, o.From, o.Force)
		if res.Copied > 0 {
			fmt.Fprintf(s.out, "copied %d files of WordPress from %s to %s\n", res.Copied, o.From, filepath.Join(o.Dir, "site"))
		}
		written = res.Written
	default:
		return usageErrorf("--app %q: the only application init knows is wordpress", o.App)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; use --force to overwrite it", existing(o.Dir, err))
	}
	if err != nil {
		return err
	}
	for _, w := range written {
		fmt.Fprintf(s.out, "wrote %s\n", w)
	}
	cd := ""
	if filepath.Clean(o.Dir) != "." {
		cd = "cd " + o.Dir + " && "
	}
	fmt.Fprintf(s.out, "\nNext, see what the stack would run, then run it:\n\n  %sbulkhead plan\n  %sbulkhead up\n", cd, cd)
	return nil
}

// existing names the path that made init refuse.
func existing(dir string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path != "" {
		return pe.Path
	}
	for _, name := range []string{"bulkhead.yaml", "site"} {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err == nil {
			return p
		}
	}
	return filepath.Join(dir, "bulkhead.yaml")
}
