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
}

func initCommand() *command {
	return &command{
		name:    "init",
		args:    "[DIR] [--force]",
		summary: "write a commented bulkhead.yaml and a sample PHP site to start from",
		help: `
Init writes DIR/bulkhead.yaml, a commented stack file describing the default
seven-node stack (edge, static, app ×2, cache, db, storage), and DIR/site/, a
small PHP site for it to serve. DIR defaults to the current directory and is
created if needed.

Init refuses to touch an existing bulkhead.yaml or site/ unless --force is
given.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			var o initOptions
			fs.BoolVar(&o.Force, "force", false, "overwrite an existing bulkhead.yaml and site/")
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
	written, err := sample.Write(o.Dir, o.Force)
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
