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
	"os"
	"reflect"
	"regexp"
	"runtime/pprof"
	"slices"
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
	// command, if nonzero, is the position of the first positional
	// argument that starts a command line of its own (exec's COMMAND):
	// from there on, the arguments are passed on untouched, flags and all.
	command int
	// raw passes every argument to the verb untouched, flags included,
	// for a verb that other programs call in their own syntax (sendmail's
	// -fSENDER).
	raw bool
	// bind defines the verb's flags on fs, bound to a fresh options
	// struct, and returns the function that runs the verb once fs has
	// been parsed, with the positional arguments.
	bind func(fs *flag.FlagSet) func(ctx context.Context, s stdio, args []string) error
}

// commands lists the verbs in the order help shows them.
func commands() []*command {
	return []*command{
		initCommand(), planCommand(), upCommand(), deployCommand(), releasesCommand(), rollbackCommand(), statusCommand(), topCommand(), dashboardCommand(), verifyCommand(), exportCommand(), logsCommand(), execCommand(), mailCommand(), backupCommand(), restoreCommand(), downCommand(),
		bootCommand(), versionCommand(), helpCommand(), agentCommand(), superviseCommand(), keepCommand(), probeCommand(), sendmailCommand(),
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
	// The stack flags may come before the verb. They are handed to the
	// verb as if they came right after it, so that the verb parses them,
	// and a verb that takes none says so.
	global := flag.NewFlagSet("bulkhead", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.Usage = func() {}
	new(stackFlags).bind(global)
	err := global.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "bulkhead: %s\nusage: %s\n", flagError(err, args), synopsis)
		return exitUsage
	}
	rest := global.Args()
	if len(rest) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	before := args[:len(args)-len(rest)]
	if n := len(before); n > 0 && before[n-1] == "--" {
		before = before[:n-1]
	}
	c := lookup(rest[0])
	if c == nil {
		fmt.Fprintf(stderr, "bulkhead: unknown command %q; run 'bulkhead --help' for the list\n", rest[0])
		return exitUsage
	}
	if stop := profile(stderr); stop != nil {
		defer stop()
	}
	return c.run(ctx, s, append(slices.Clip(before), rest[1:]...))
}

// profile writes a CPU profile of this command to the file
// BULKHEAD_CPUPROFILE names, if it names one, for working on bulkhead's
// speed (go tool pprof FILE). It returns what ends the profile.
func profile(stderr io.Writer) func() {
	path := os.Getenv("BULKHEAD_CPUPROFILE")
	if path == "" {
		return nil
	}
	// Not the supervisor's too, which up starts: it would write its own
	// profile over this one.
	os.Unsetenv("BULKHEAD_CPUPROFILE")
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(stderr, "bulkhead: BULKHEAD_CPUPROFILE: %v\n", err)
		return nil
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(stderr, "bulkhead: BULKHEAD_CPUPROFILE: %v\n", err)
		f.Close()
		return nil
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// same reports whether two flags are bound to one variable. Values of a type
// that == cannot compare (a struct with a slice) are never the same.
func same(a, b flag.Value) bool {
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// synopsis is bulkhead's own usage line.
const synopsis = "bulkhead " + stackSynopsis + " COMMAND [ARGS]"

func (c *command) run(ctx context.Context, s stdio, args []string) int {
	fs := c.flagSet()
	run := c.bind(fs)
	pos, err := args, error(nil)
	if !c.raw {
		pos, err = parse(fs, args, c.command)
	}
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(s.out)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(s.err, "bulkhead %s: %s\nusage: %s\n", c.name, flagError(err, args), c.synopsis())
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
// arguments ("init demo --force"); "--" ends the flags, and so does the
// positional argument at index command, if that is nonzero.
func parse(fs *flag.FlagSet, args []string, command int) ([]string, error) {
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
		if command > 0 && len(pos) == command {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagError says what is wrong with a flag in bulkhead's words, naming it
// as it is spelled in help: "-f" for one letter, "--output" otherwise, and
// an unknown flag as it was typed.
func flagError(err error, args []string) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag " + typed(name, args)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return dashed(name) + " needs a value"
	}
	// "invalid value "yaml" for flag -output: ..." and
	// "invalid boolean value "x" for -follow: ...".
	return flagName.ReplaceAllStringFunc(msg, func(m string) string {
		i := strings.LastIndex(m, "-")
		return m[:i] + dashed(m[i+1:])
	})
}

var flagName = regexp.MustCompile(`^invalid (boolean )?value ".*" for (flag )?-[^\s:]+`)

// typed finds how the flag called name was spelled in args.
func typed(name string, args []string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		spelled, _, _ := strings.Cut(a, "=")
		if strings.HasPrefix(spelled, "-") && strings.TrimLeft(spelled, "-") == name {
			return spelled
		}
	}
	return "-" + name
}

// dashed is how help spells the flag called name.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
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

Usage: `+synopsis+`

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
The commands that work on a stack read it from ./bulkhead.yaml, or from the
file -f FILE (or --file FILE) names, or act on the stack --stack NAME names.
These flags go before the command or after it: 'bulkhead -f shop.yaml status'
is 'bulkhead status -f shop.yaml'.

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
	// Flags bound to the same variable, such as -f and --file, are one
	// flag with two names: one line, "-f, --file FILE".
	var flags []*flag.Flag
	names := map[*flag.Flag][]string{}
	fs.VisitAll(func(f *flag.Flag) {
		for _, g := range flags {
			if same(g.Value, f.Value) {
				names[g] = append(names[g], dashed(f.Name))
				return
			}
		}
		flags = append(flags, f)
		names[f] = []string{dashed(f.Name)}
	})
	if len(flags) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		for _, f := range flags {
			arg, usage := flag.UnquoteUsage(f)
			name := strings.Join(names[f], ", ")
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
