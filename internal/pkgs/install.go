package pkgs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// installer holds the host paths Install touches, so that tests can point
// them elsewhere.
type installer struct {
	aptGet string // the apt-get binary
	policy string // invoke-rc.d's policy script
	lock   string // flocked for a whole Install, so that two never overlap
	lists  string // apt's package lists
	// staleAfter is how old the newest Release file may be before a package
	// apt cannot find is worth an apt-get update.
	staleAfter time.Duration
	now        func() time.Time
}

var system = installer{
	aptGet:     "apt-get",
	policy:     "/usr/sbin/policy-rc.d",
	lock:       "/run/lock/bulkhead-pkgs.lock",
	lists:      "/var/lib/apt/lists",
	staleAfter: 24 * time.Hour,
	now:        time.Now,
}

// tailLines is how much of apt's output an error carries.
const tailLines = 20

// ourPolicy is the policy-rc.d Install writes when the host has none. Exit
// status 101 means "action forbidden": invoke-rc.d (and, on Debian 12,
// deb-systemd-invoke) then starts no service from a maintainer script.
const ourPolicy = `#!/bin/sh
# Written by bulkhead while it installs packages, and removed afterwards.
# Exit status 101 tells invoke-rc.d not to start any service: bulkhead runs
# the daemons itself, each in its own node.
exit 101
`

// Install installs pkgs with apt-get without starting any service,
// streaming apt's progress to out. It does nothing when pkgs is empty.
func Install(ctx context.Context, pkgs []string, out io.Writer) error {
	return system.install(ctx, pkgs, out)
}

func (in *installer) install(ctx context.Context, pkgs []string, out io.Writer) (err error) {
	if len(pkgs) == 0 {
		return nil
	}
	what := strings.Join(pkgs, ", ")
	if err := checkNames(pkgs); err != nil {
		return fmt.Errorf("install packages: %w", err)
	}
	unlock, err := in.acquire(ctx, out)
	if err != nil {
		return fmt.Errorf("install %s: %w", what, err)
	}
	defer unlock()
	restore, err := in.holdServices(ctx)
	if err != nil {
		return fmt.Errorf("install %s: %w", what, err)
	}
	// Restore even when apt fails or ctx is done: restore needs no ctx.
	defer func() {
		if rerr := restore(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("install %s: %w", what, rerr))
		}
	}()

	args := append([]string{"install", "-y", "-q", "--no-install-recommends",
		"-o", "Dpkg::Options::=--force-confdef",
		"-o", "Dpkg::Options::=--force-confold",
		// Wait a while for another package manager rather than fail at once.
		"-o", "DPkg::Lock::Timeout=120",
		"--"}, pkgs...)
	run := in.apt(ctx, out, args...)
	updated := false
	if run.err != nil && len(run.unknown) > 0 && ctx.Err() == nil && in.stale() {
		fmt.Fprintf(out, "apt: the package lists may be stale; running apt-get update and trying once more\n")
		up := in.apt(ctx, out, "update", "-q")
		if up.err != nil {
			return fmt.Errorf("install %s: apt cannot find %s, and apt-get update failed (%w): check the network and /etc/apt/sources.list, then run \"apt-get update\"\n%s",
				what, strings.Join(run.unknown, ", "), up.err, up.tailText())
		}
		updated = true
		run = in.apt(ctx, out, args...)
	}
	if run.err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("install %s: %w (apt-get: %v)\n%s", what, ctx.Err(), run.err, run.tailText())
	}
	return fmt.Errorf("install %s: %s\n%s", what, run.hint(updated), run.tailText())
}

// aptRun is what one run of apt-get said.
type aptRun struct {
	args    []string
	err     error
	tail    []string
	unknown []string // packages apt could not find
	locked  string   // apt's complaint about a held lock
}

// apt's messages, as of apt 2.6 (Debian 12) with LC_ALL=C.
var (
	reUnknown = []*regexp.Regexp{
		regexp.MustCompile(`Unable to locate package (\S+)`),
		regexp.MustCompile(`Package '?([^' ]+)'? has no installation candidate`),
		regexp.MustCompile(`Couldn't find any package by (?:glob|regex) '([^']+)'`),
	}
	reLocked = regexp.MustCompile(`Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock (?:the )?(?:administration )?directory`)
)

func (in *installer) apt(ctx context.Context, out io.Writer, args ...string) *aptRun {
	r := &aptRun{args: args}
	lw := &lineWriter{out: out, prefix: "apt: ", line: func(l string) {
		r.tail = append(r.tail, l)
		if len(r.tail) > tailLines {
			r.tail = r.tail[1:]
		}
		for _, re := range reUnknown {
			if m := re.FindStringSubmatch(l); m != nil && !slices.Contains(r.unknown, m[1]) {
				r.unknown = append(r.unknown, m[1])
			}
		}
		if r.locked == "" && reLocked.MatchString(l) {
			r.locked = strings.TrimSpace(strings.TrimPrefix(l, "E:"))
		}
	}}
	cmd := exec.CommandContext(ctx, in.aptGet, args...)
	cmd.Env = append(cmd.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C", "APT_LISTCHANGES_FRONTEND=none")
	cmd.Stdout, cmd.Stderr = lw, lw
	// Killing dpkg mid-unpack leaves the system for "dpkg --configure -a":
	// ask apt to stop, and kill only if it does not.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()
	lw.flush()
	// A daemon that a maintainer script left running may hold the output
	// open after apt is done; apt's own status is what counts.
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		err = nil
	}
	if err != nil {
		r.err = fmt.Errorf("apt-get %s: %w", args[0], err)
	}
	return r
}

// hint says what went wrong and what to do next.
func (r *aptRun) hint(updated bool) string {
	switch {
	case len(r.unknown) > 0 && updated:
		return fmt.Sprintf("apt cannot find %s, even after apt-get update: check the name, and that /etc/apt/sources.list has Debian 12 (bookworm) main (%v)",
			strings.Join(r.unknown, ", "), r.err)
	case len(r.unknown) > 0:
		return fmt.Sprintf("apt cannot find %s: check the name, or run \"apt-get update\" if the package lists are old (%v)",
			strings.Join(r.unknown, ", "), r.err)
	case r.locked != "":
		return fmt.Sprintf("another package manager holds dpkg's lock (%s): wait for it to finish, then try again (%v)", r.locked, r.err)
	}
	return fmt.Sprintf("%v: read apt's output; if dpkg was interrupted run \"dpkg --configure -a\", if the package lists are old run \"apt-get update\", then try again", r.err)
}

func (r *aptRun) tailText() string {
	if len(r.tail) == 0 {
		return "apt printed nothing"
	}
	return "last lines of apt's output:\n  " + strings.Join(r.tail, "\n  ")
}

// lineWriter hands each line of a command's output to line and copies it to
// out with a prefix. exec.Cmd serialises writes when Stdout and Stderr are
// the same writer, so it needs no lock.
type lineWriter struct {
	out     io.Writer
	prefix  string
	line    func(string)
	partial []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.partial = append(w.partial, b...)
	for {
		// apt redraws progress with \r; each redraw is a line of its own.
		i := bytes.IndexAny(w.partial, "\r\n")
		if i < 0 {
			break
		}
		w.emit(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(b), nil
}

func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.emit(string(w.partial))
		w.partial = nil
	}
}

func (w *lineWriter) emit(l string) {
	l = strings.TrimRight(l, " \t")
	if l == "" {
		return
	}
	w.line(l)
	fmt.Fprintf(w.out, "%s%s\n", w.prefix, l)
}

// acquire takes the install lock, waiting for another bulkhead to finish.
// The lock spans the policy-rc.d dance: otherwise one install could remove
// the policy it wrote while another is still unpacking.
func (in *installer) acquire(ctx context.Context, out io.Writer) (func(), error) {
	f, err := os.OpenFile(in.lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open install lock: %w", err)
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", in.lock, err)
		}
		if !said {
			fmt.Fprintf(out, "apt: waiting for another bulkhead to finish installing packages (%s)\n", in.lock)
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for %s: %w", in.lock, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// holdServices makes sure the policy script forbids starting services, and
// returns how to put the host back as it was. A policy that already does is
// left alone; one that does not is set aside and restored afterwards.
func (in *installer) holdServices(ctx context.Context) (restore func() error, err error) {
	if _, err := os.Lstat(in.policy); errors.Is(err, fs.ErrNotExist) {
		if err := writeNew(in.policy, ourPolicy); err != nil {
			return nil, err
		}
		return in.removeOurs, nil
	} else if err != nil {
		return nil, fmt.Errorf("check %s: %w", in.policy, err)
	}
	if in.denies(ctx) {
		return func() error { return nil }, nil
	}
	aside := in.policy + ".bulkhead-saved"
	if _, err := os.Lstat(aside); err == nil {
		return nil, fmt.Errorf("%s exists, left by an interrupted install: compare it with %s, keep the one you want as %s, and remove %s",
			aside, in.policy, in.policy, aside)
	}
	if err := os.Rename(in.policy, aside); err != nil {
		return nil, fmt.Errorf("set %s aside: %w", in.policy, err)
	}
	if err := writeNew(in.policy, ourPolicy); err != nil {
		if rerr := os.Rename(aside, in.policy); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore %s from %s: %w", in.policy, aside, rerr))
		}
		return nil, err
	}
	return func() error {
		if err := in.removeOurs(); err != nil {
			return fmt.Errorf("%w; the host's own policy is in %s", err, aside)
		}
		if err := os.Rename(aside, in.policy); err != nil {
			return fmt.Errorf("restore %s from %s: %w", in.policy, aside, err)
		}
		return nil
	}, nil
}

// denies reports whether the policy script forbids starting a service. It
// asks as invoke-rc.d would, for a service no package has.
func (in *installer) denies(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, in.policy, "bulkhead-probe", "start").Run()
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == 101
}

func writeNew(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(path, 0o755) // whatever the umask
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// removeOurs removes the policy script Install wrote, but not one that
// something else put in its place meanwhile.
func (in *installer) removeOurs() error {
	b, err := os.ReadFile(in.policy)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", in.policy, err)
	}
	if string(b) != ourPolicy {
		return fmt.Errorf("left %s in place: it changed while packages were installed; check it and remove it if services should start again", in.policy)
	}
	if err := os.Remove(in.policy); err != nil {
		return fmt.Errorf("remove %s: %w", in.policy, err)
	}
	return nil
}

// stale reports whether the package lists may be out of date: there are
// none, or the newest Release file is older than staleAfter. apt stamps a
// list with the archive's date rather than the download's; as of 2026-11
// Debian's archives publish a new Release several times a day, so a day-old
// newest Release means no recent apt-get update.
func (in *installer) stale() bool {
	ents, err := os.ReadDir(in.lists)
	if err != nil {
		return true
	}
	var newest time.Time
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, "_InRelease") && !strings.HasSuffix(n, "_Release") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
	}
	return newest.IsZero() || in.now().Sub(newest) > in.staleAfter
}
