package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
	"github.com/bulkhead/bulkhead/internal/verify"
)

type verifyOptions struct {
	stackFlags
	Output, JUnit string
	SelfTest      bool
	Timeout       time.Duration
	// Import, if set, judges a cluster's probe results (a file, or a
	// directory of .json files) instead of probing a local stack.
	Import string
}

func verifyCommand() *command {
	return &command{
		name:    "verify",
		args:    stackSynopsis + " [--output text|json] [--junit FILE] [--self-test] [--timeout D] [--import RESULTS]",
		summary: "prove the running stack's isolation with live probes",
		help: `
Verify sends real connection attempts (a TCP SYN, half-open, or a UDP
datagram) from every node, from the outside namespace (the internet's view
of the edge) and from the host, to every node on every port of interest,
TCP and UDP: the plan's ports, every port found listening, and ports
attackers try first. Denied ports get a
temporary listener (over UDP, one that echoes the probe), so blocked means
a firewall dropped the probe, not merely that nothing listens. It compares
what happened with the plan's matrix, lists every listening socket in
every node, and checks the ways around the matrix: the host's routes, the
nodes' routes, where the published ports lead, and whether a node can send
as another (a SYN from a raw socket in its namespace, with the host's
privileges, must not arrive).

Each run on a local stack keeps its report, with the time it ended, in the
stack's state (last-verify.json: the counts, and of the cells only those
that failed), where 'bulkhead dashboard' shows it.

It fails (exit 1) on an allowed cell that is not open, a denied cell that is
open or refused, a listener the plan does not know, or a failed check.

--self-test plants holes one at a time (a widened rule, a rogue listener, an
accept-all ruleset, the host's guard removed, a UDP port opened, a node
taken out of the host's anti-spoofing table), checks that verify reports
exactly each one, and restores the stack. If it is interrupted, 'bulkhead up'
puts every ruleset back.

--import RESULTS judges a Kubernetes export instead: RESULTS is the output
of its probe Jobs (a file, or a directory of .json files; see README,
"Kubernetes"), compared with the plan of the stack file (-f) with the same
rules, report, JSON, JUnit and exit codes. A tier without results fails.`,
		bind: func(fs *flag.FlagSet) func(context.Context, stdio, []string) error {
			o := verifyOptions{Output: "text"}
			o.stackFlags.bind(fs)
			fs.Var(choice{&o.Output, []string{"text", "json"}}, "output", "print as `text|json`")
			fs.StringVar(&o.JUnit, "junit", "", "also write the cells as JUnit XML test cases to `FILE`")
			fs.BoolVar(&o.SelfTest, "self-test", false, "plant holes one at a time and check that verify reports each")
			fs.DurationVar(&o.Timeout, "timeout", verify.DefaultTimeout, "how long an unanswered probe waits before it counts as filtered")
			fs.StringVar(&o.Import, "import", "", "judge a cluster's probe results in `RESULTS` (a file or directory) against the stack file's plan")
			return func(ctx context.Context, s stdio, args []string) error {
				if len(args) > 0 {
					return usageErrorf("verify takes no arguments, got %q", args[0])
				}
				if o.Timeout <= 0 || o.Timeout > time.Minute {
					return usageErrorf("--timeout %s: give a duration between 1ms and 1m, e.g. 250ms", o.Timeout)
				}
				return runVerify(ctx, s, o)
			}
		},
	}
}

func runVerify(ctx context.Context, s stdio, o verifyOptions) error {
	if o.Import != "" {
		if o.SelfTest {
			return usageErrorf("--self-test plants holes in a local stack; it cannot with --import")
		}
		r, err := importResults(s, o)
		if err != nil {
			return err
		}
		return writeVerify(s, o, r)
	}
	name, err := o.name()
	if err != nil {
		return err
	}
	d := newDriver(s)
	vo := verify.Options{Timeout: o.Timeout}
	if o.SelfTest {
		progress := func(line string) { fmt.Fprintln(s.err, line) }
		outcomes, after, err := d.SelfTest(ctx, name, vo, progress)
		if werr := writeSelfTest(s, o, outcomes, after); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			return err
		}
		missed := 0
		for _, out := range outcomes {
			if !out.Caught {
				missed++
			}
		}
		if missed > 0 {
			return fmt.Errorf("self-test: verify missed %d of %d planted holes", missed, len(outcomes))
		}
		return nil
	}
	r, err := d.Verify(ctx, name, vo)
	if err != nil {
		return err
	}
	if logLevel() == slog.LevelDebug {
		// Where the run's time went, as up's steps say it.
		for _, ph := range r.Phases {
			fmt.Fprintf(s.err, "verify: phase %s took %.3fs\n", ph.Name, ph.Duration.Seconds())
		}
	}
	return writeVerify(s, o, r)
}

// writeVerify prints a report as --output says, writes --junit, and fails
// when the report holds a failure.
func writeVerify(s stdio, o verifyOptions, r *verify.Report) error {
	var err error
	if o.JUnit != "" {
		if err := writeReport(o.JUnit, r.WriteJUnit); err != nil {
			return err
		}
	}
	if o.Output == "json" {
		err = r.WriteJSON(s.out)
	} else {
		err = r.WriteText(s.out)
	}
	if err != nil {
		return err
	}
	if r.Counts.Failures > 0 {
		return fmt.Errorf("stack %s failed verification: %s", r.Stack, verify.Plural(r.Counts.Failures, "failure"))
	}
	return nil
}

func writeSelfTest(s stdio, o verifyOptions, outcomes []verify.Outcome, after *verify.Report) error {
	if o.JUnit != "" {
		if err := writeReport(o.JUnit, func(w io.Writer) error { return verify.WriteSelfTestJUnit(w, outcomes) }); err != nil {
			return err
		}
	}
	if o.Output == "json" {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Outcomes []verify.Outcome `json:"mutations"`
			After    *verify.Report   `json:"after,omitempty"`
		}{outcomes, after})
	}
	for i, out := range outcomes {
		mark := "caught"
		if !out.Caught {
			mark = "MISSED"
		}
		fmt.Fprintf(s.out, "%d. %s: %s\n", i+1, out.Mutation, mark)
		for _, f := range out.Failures {
			fmt.Fprintf(s.out, "     reported: %s\n", f)
		}
		for _, f := range out.Stray {
			fmt.Fprintf(s.out, "     NOT THE BREAK: %s\n", f)
		}
	}
	if after != nil {
		fmt.Fprintf(s.out, "after the self-test: %d cells probed, %d failures\n", after.Counts.Cells, after.Counts.Failures)
	}
	return nil
}

func writeReport(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// importResults reads a cluster's probe results and judges them against
// the plan of the stack file they were exported from.
func importResults(s stdio, o verifyOptions) (*verify.Report, error) {
	file, data, err := readStackFile(o.File, "pass -f FILE, the stack file the export was made from")
	if err != nil {
		return nil, err
	}
	st, err := spec.Load(file, data, spec.Env{DirExists: func(string) bool { return true }, FileExists: fileExists})
	if err != nil {
		return nil, err
	}
	if t := st.ByRole(spec.RoleStorage); t != nil && t.Protocol == spec.ProtocolAuto {
		t.Protocol = spec.ProtocolSFTP // as export does
	}
	if o.Stack != "" && o.Stack != st.Name {
		return nil, usageErrorf("--stack %s, but %s is stack %s", o.Stack, file, st.Name)
	}
	p, err := plan.Build(st)
	if err != nil {
		return nil, err
	}
	paths := []string{o.Import}
	if fi, err := os.Stat(o.Import); err != nil {
		return nil, err
	} else if fi.IsDir() {
		if paths, err = filepath.Glob(filepath.Join(o.Import, "*.json")); err != nil {
			return nil, err
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("%s holds no .json results; save each probe Job's output there", o.Import)
		}
	}
	var results []verify.ClusterResult
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		rs, err := verify.ReadClusterResults(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		results = append(results, rs...)
	}
	return verify.Import(p, results)
}
