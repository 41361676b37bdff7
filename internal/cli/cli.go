// Package cli is bulkhead's command line. Each verb lives in its own file: its
// flags fill an options struct that is handed to a plain function, so the
// verbs can be called and tested without parsing anything. This is the only
// package that knows about flags.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/bulkhead/bulkhead/internal/spec"
)

// Exit codes. A stack file that fails validation is the user's input, like a
// bad flag, so it exits 2; 1 means bulkhead could not do what was asked.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// stdio is where a verb writes: results to out, notes and errors to err.
type stdio struct {
	out, err io.Writer
}

// command is one verb.
type command struct {
	name    string
	args    string // synopsis after the verb, e.g. "[DIR] [--force]"
	summary string // one line for the verb list
	help    string // what the verb does, shown by "bulkhead help VERB"
	// bind defines the verb's flags on fs, bound to a fresh options
	// struct, and returns the function that runs the verb once fs has
	// been parsed, with the positional arguments.
	bind func(fs *flag.FlagSet) func(ctx context.Context, s stdio, args []string) error
}

// commands lists the verbs in the order help shows them.
func commands() []*command {
	return []*command{
		initCommand(), planCommand(), upCommand(), statusCommand(), verifyCommand(), logsCommand(), execCommand(), downCommand(),
		versionCommand(), helpCommand(), agentCommand(), superviseCommand(),
	}
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Main runs bulkhead with args (without the program name) and returns the
// process's exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	s := stdio{out: stdout, err: stderr}
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		printUsage(stdout)
		return exitOK
	}
	if strings.HasPrefix(name, "-") {
		fmt.Fprintf(stderr, "bulkhead: unknown flag %s; flags go after the command, run 'bulkhead --help' for the list\n", name)
		return exitUsage
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "bulkhead: unknown command %q; run 'bulkhead --help' for the list\n", name)
		return exitUsage
	}
	return c.run(ctx, s, args[1:])
}

func (c *command) run(ctx context.Context, s stdio, args []string) int {
	fs := c.flagSet()
	run := c.bind(fs)
	pos, err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(s.out)
		return exitOK
	}
	if err != nil {
		msg := err.Error()
		if rest, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
			msg = "unknown flag " + rest
		}
		fmt.Fprintf(s.err, "bulkhead %s: %s; run 'bulkhead %s -h' for usage\n", c.name, msg, c.name)
		return exitUsage
	}
	err = run(ctx, s, pos)
	if err == nil {
		return exitOK
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	if es := spec.AsErrors(err); es != nil {
		// Exactly as spec formats them, one per line, so that editors
		// can jump to file:line:col.
		fmt.Fprintln(s.err, es.Error())
		return exitUsage
	}
	fmt.Fprintf(s.err, "bulkhead %s: %v\n", c.name, err)
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintf(s.err, "usage: %s\n", c.synopsis())
		return exitUsage
	}
	return exitFailure
}

func (c *command) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("bulkhead "+c.name, flag.ContinueOnError)
	// Errors are reported by run, in bulkhead's words.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses flags that may come before, between or after positional
// arguments ("init demo --force"); "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a mistake in how a verb was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

func (c *command) synopsis() string {
	if c.args == "" {
		return "bulkhead " + c.name
	}
	return "bulkhead " + c.name + " " + c.args
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `bulkhead runs a split LAMP stack in which every tier (edge, static, app,
cache, db, storage) is its own isolated node, allowed to talk only to the
peers it needs.

Usage: bulkhead COMMAND [ARGS]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Run 'bulkhead help COMMAND' or 'bulkhead COMMAND -h' for a command's flags.

`+exitStatusHelp)
}

const exitStatusHelp = `Exit status: 0 on success, 1 when the command fails, 2 for a usage error
or an invalid stack file.
`

func (c *command) printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", c.synopsis(), strings.TrimSpace(c.help))
	fs := c.flagSet()
	c.bind(fs)
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, f := range flags {
			arg, usage := flag.UnquoteUsage(f)
			dash := "--"
			if len(f.Name) == 1 {
				dash = "-"
			}
			name := dash + f.Name
			if arg != "" {
				name += " " + arg
			}
			if f.DefValue != "" && f.DefValue != "false" {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(tw, "  %s\t%s\n", name, usage)
		}
		tw.Flush()
	}
	fmt.Fprint(w, "\n"+exitStatusHelp)
}

func helpCommand() *command {
	return &command{
		name:    "help",
		args:    "[COMMAND]",
		summary: "show the list of commands, or how to use one",
		help:    "Help lists bulkhead's commands, or shows how to use COMMAND.",
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			return func(_ context.Context, s stdio, args []string) error {
				switch len(args) {
				case 0:
					printUsage(s.out)
					return nil
				case 1:
					c := lookup(args[0])
					if c == nil {
						return usageErrorf("unknown command %q; run 'bulkhead --help' for the list", args[0])
					}
					c.printHelp(s.out)
					return nil
				}
				return usageErrorf("help takes one command, got %d arguments", len(args))
			}
		},
	}
}

// choice is a flag value that must be one of a few words.
type choice struct {
	value   *string
	choices []string
}

func (c choice) String() string {
	if c.value == nil {
		return ""
	}
	return *c.value
}

func (c choice) Set(v string) error {
	for _, ok := range c.choices {
		if v == ok {
			*c.value = v
			return nil
		}
	}
	return fmt.Errorf("use %s", strings.Join(c.choices, " or "))
}
