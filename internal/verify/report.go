package verify

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is what one verify run saw, and its judgement.
type Report struct {
	Stack string `json:"stack"`
	// Sources are the vantages, host and outside first; every one is also
	// a destination.
	Sources []string `json:"sources"`
	// Tiers maps each node among Sources to its tier, as the plan has
	// it; the host and outside have none. The text report folds a tier's
	// replicas that read the same.
	Tiers     map[string]string `json:"tiers"`
	Ports     []int             `json:"ports"`
	Cells     []Cell            `json:"cells"`
	Listeners []Listener        `json:"listeners"`
	Checks    []Check           `json:"checks"`
	Probes    int               `json:"probes"`
	Duration  time.Duration     `json:"duration_ns"`
	Phases    []Phase           `json:"phases"`
	Counts    Counts            `json:"counts"`
}

// Phase is how long one step of a run took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
}

// Counts sum a report up.
type Counts struct {
	Cells         int `json:"cells"`
	AllowedOpen   int `json:"allowed_open"`
	DeniedBlocked int `json:"denied_blocked"`
	FailedCells   int `json:"failed_cells"`
	Unexpected    int `json:"unexpected_listeners"`
	FailedChecks  int `json:"failed_checks"`
	Failures      int `json:"failures"`
}

// Cell is one (source, destination, port) of the matrix: what the plan
// expects and what every probed address of the destination answered.
type Cell struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Port    int      `json:"port"`
	Allow   bool     `json:"allow"`
	Targets []Target `json:"targets"`
	OK      bool     `json:"ok"`
	Why     string   `json:"why,omitempty"`
	dest    int
}

// Target is one address of a cell's destination and what a probe saw
// there. Primary marks the address an allowed flow uses.
type Target struct {
	Addr    netip.Addr `json:"addr"`
	Status  Status     `json:"status"`
	Primary bool       `json:"primary,omitempty"`
	probe   int
}

// judge applies the rules: an allowed cell must be open on the flow's
// address; every other probe must be filtered or unreachable. Refused is
// a failure too: the probe reached the destination.
func (c *Cell) judge() {
	c.OK, c.Why = true, ""
	for _, t := range c.Targets {
		switch {
		case t.Primary && t.Status != Open:
			c.OK = false
			c.Why = fmt.Sprintf("allowed, but %s:%d is %s", t.Addr, c.Port, t.Status)
		case !t.Primary && (t.Status == Open || t.Status == Refused):
			c.OK = false
			c.Why = fmt.Sprintf("denied, but %s:%d is %s", t.Addr, c.Port, t.Status)
		case t.Status == Unknown:
			c.OK = false
			c.Why = fmt.Sprintf("%s:%d could not be probed", t.Addr, c.Port)
		}
		if !c.OK {
			return
		}
	}
}

// Reached reports whether any probe of the cell connected.
func (c *Cell) Reached() bool {
	return slices.ContainsFunc(c.Targets, func(t Target) bool { return t.Status == Open })
}

// Listener is a socket that listens inside a node (or the outside
// namespace). Expected says whether the plan accounts for it.
type Listener struct {
	Node     string         `json:"node"`
	Proto    string         `json:"proto"`
	Addr     netip.AddrPort `json:"addr"`
	Owners   []Owner        `json:"owners,omitempty"`
	Expected bool           `json:"expected"`
}

func (l Listener) String() string {
	var names []string
	for _, o := range l.Owners {
		if !slices.Contains(names, o.Name) {
			names = append(names, o.Name)
		}
	}
	owner := "no process found"
	if len(names) > 0 {
		owner = strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s %s/%d on %s (%s)", l.Node, l.Proto, l.Addr.Port(), l.Addr.Addr(), owner)
}

// Check is one of the bypass checks: a way around the matrix that other
// tools forget.
type Check struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Detail string   `json:"detail"`
	Errors []string `json:"errors,omitempty"`
}

func (r *Report) tally() {
	c := Counts{Cells: len(r.Cells)}
	for i := range r.Cells {
		cell := &r.Cells[i]
		switch {
		case !cell.OK:
			c.FailedCells++
		case cell.Allow:
			c.AllowedOpen++
		default:
			c.DeniedBlocked++
		}
	}
	for _, l := range r.Listeners {
		if !l.Expected {
			c.Unexpected++
		}
	}
	for _, ch := range r.Checks {
		if !ch.OK {
			c.FailedChecks++
		}
	}
	c.Failures = c.FailedCells + c.Unexpected + c.FailedChecks
	r.Counts = c
}

// Failures lists every failure as a line a person reads.
func (r *Report) Failures() []string {
	out := []string{}
	for _, l := range r.Listeners {
		if !l.Expected {
			out = append(out, "unexpected listener: "+l.String())
		}
	}
	for _, c := range r.Cells {
		if !c.OK {
			out = append(out, fmt.Sprintf("%s -> %s:%d: %s", c.From, c.To, c.Port, c.Why))
		}
	}
	for _, ch := range r.Checks {
		for _, e := range ch.Errors {
			out = append(out, ch.Name+": "+e)
		}
	}
	return out
}

// Marks in the text matrix.
const (
	markOpen    = "✔"
	markBlocked = "✘"
)

// WriteText writes the matrix for people: one block per destination, a row
// per source and a column per port. Rows of the same tier that read the
// same are folded into one.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "verify %s: %d sources x %d destinations x %d ports (%d probes) in %.2fs\n",
		r.Stack, len(r.Sources), len(r.Sources), len(r.Ports), r.Probes, r.Duration.Seconds())
	fmt.Fprintf(&b, "%s reached, %s blocked (filtered or unreachable); a failing cell is marked ! and listed below.\n",
		markOpen, markBlocked)
	byDest := map[string][]*Cell{}
	for i := range r.Cells {
		c := &r.Cells[i]
		byDest[c.To] = append(byDest[c.To], c)
	}
	// Wide enough for every name and for a whole tier folded into one row.
	width := len("from \\ port")
	tiers := map[string][]string{}
	for _, s := range r.Sources {
		width = max(width, len(s))
		if t := r.Tiers[s]; t != "" {
			tiers[t] = append(tiers[t], s)
		}
	}
	for _, names := range tiers {
		width = max(width, len(foldNames(names)))
	}
	width += 2
	var lastBlock string
	var lastDests []string
	flush := func() {
		if len(lastDests) == 0 {
			return
		}
		fmt.Fprintf(&b, "\nto %s\n%s", foldNames(lastDests), lastBlock)
		lastDests = nil
	}
	for _, d := range r.Sources {
		cells := byDest[d]
		if len(cells) == 0 {
			continue
		}
		block := r.blockText(cells, width)
		// Consecutive destinations of one tier whose blocks read the same
		// fold together, so 100 app nodes are one block.
		if block == lastBlock && r.sameTier(lastDests[len(lastDests)-1], d) {
			lastDests = append(lastDests, d)
			continue
		}
		flush()
		lastBlock, lastDests = block, []string{d}
	}
	flush()
	fails := r.Failures()
	if len(fails) > 0 {
		fmt.Fprintf(&b, "\nFAILURES (%d):\n", len(fails))
		for _, f := range fails {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	b.WriteString("\nchecks:\n")
	for _, ch := range r.Checks {
		mark := markOpen
		if !ch.OK {
			mark = markBlocked + "!"
		}
		fmt.Fprintf(&b, "  %-2s %s: %s\n", mark, ch.Name, ch.Detail)
	}
	expected := 0
	for _, l := range r.Listeners {
		if l.Expected {
			expected++
		}
	}
	c := r.Counts
	fmt.Fprintf(&b, "\nlisteners: %d as planned, %d unexpected\n", expected, c.Unexpected)
	fmt.Fprintf(&b, "cells probed: %d, allowed and open: %d, denied and blocked: %d, failures: %d\n",
		c.Cells, c.AllowedOpen, c.DeniedBlocked, c.Failures)
	if c.Failures == 0 {
		fmt.Fprintf(&b, "PASS: stack %s is isolated as planned\n", r.Stack)
	} else {
		fmt.Fprintf(&b, "FAIL: stack %s has %s\n", r.Stack, Plural(c.Failures, "failure"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) blockText(cells []*Cell, width int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-*s", width, "from \\ port")
	for _, p := range r.Ports {
		fmt.Fprintf(&b, "%6d", p)
	}
	b.WriteByte('\n')
	var rows []string
	var rowSrc []string
	for i := 0; i < len(cells); {
		src := cells[i].From
		var row strings.Builder
		for ; i < len(cells) && cells[i].From == src; i++ {
			c := cells[i]
			mark := markBlocked
			if c.Reached() {
				mark = markOpen
			}
			if !c.OK {
				mark += "!"
			}
			// Pad by characters: the marks are several bytes each.
			fmt.Fprintf(&row, "%s%s", strings.Repeat(" ", 6-utf8.RuneCountInString(mark)), mark)
		}
		rows = append(rows, row.String())
		rowSrc = append(rowSrc, src)
	}
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j] == rows[i] && r.sameTier(rowSrc[j-1], rowSrc[j]) {
			j++
		}
		fmt.Fprintf(&b, "  %-*s%s\n", width, foldNames(rowSrc[i:j]), rows[i])
		i = j
	}
	return b.String()
}

// sameTier says whether two nodes are replicas of one tier.
func (r *Report) sameTier(a, b string) bool {
	return r.Tiers[a] != "" && r.Tiers[a] == r.Tiers[b]
}

// foldNames writes app-1..app-100 for a run of replicas.
func foldNames(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	return fmt.Sprintf("%s..%s (%d)", names[0], names[len(names)-1], len(names))
}

// Plural writes "1 failure", "2 failures".
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// WriteJSON writes the whole report for scripts, on one line: at a
// hundred nodes it holds 200,000 cells.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	return enc.Encode(struct {
		*Report
		Failures []string `json:"failures"`
		Pass     bool     `json:"pass"`
	}{r, r.Failures(), r.Counts.Failures == 0})
}

// JUnit XML, as CI systems read it: one test case per cell, listener and
// check.
type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML.
func (r *Report) WriteJUnit(w io.Writer) error {
	suite := func(name string) junitSuite { return junitSuite{Name: "verify " + r.Stack + " " + name} }
	cells, lis, checks := suite("matrix"), suite("listeners"), suite("checks")
	cells.Time = fmt.Sprintf("%.3f", r.Duration.Seconds())
	add := func(s *junitSuite, c junitCase) {
		s.Tests++
		if c.Failure != nil {
			s.Failures++
		}
		s.Cases = append(s.Cases, c)
	}
	for _, c := range r.Cells {
		verb := "denied"
		if c.Allow {
			verb = "allowed"
		}
		jc := junitCase{Name: fmt.Sprintf("%s -> %s:%d %s", c.From, c.To, c.Port, verb), Classname: "verify." + c.From}
		if !c.OK {
			jc.Failure = &junitFailure{Message: c.Why, Text: targetsText(c.Targets)}
		}
		add(&cells, jc)
	}
	for _, l := range r.Listeners {
		jc := junitCase{Name: "listener " + l.String(), Classname: "verify.listeners." + l.Node}
		if !l.Expected {
			jc.Failure = &junitFailure{Message: "unexpected listener: " + l.String()}
		}
		add(&lis, jc)
	}
	for _, ch := range r.Checks {
		jc := junitCase{Name: ch.Name, Classname: "verify.checks"}
		if !ch.OK {
			jc.Failure = &junitFailure{Message: ch.Detail, Text: strings.Join(ch.Errors, "\n")}
		}
		add(&checks, jc)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{cells, lis, checks}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func targetsText(ts []Target) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s %s", t.Addr, t.Status))
	}
	return strings.Join(parts, "; ")
}

// WriteSelfTestJUnit writes the self-test's outcomes as JUnit XML: one
// test case per mutation.
func WriteSelfTestJUnit(w io.Writer, outcomes []Outcome) error {
	s := junitSuite{Name: "verify self-test"}
	for _, o := range outcomes {
		jc := junitCase{Name: o.Mutation, Classname: "verify.selftest"}
		if !o.Caught {
			msg := "verify did not report this break"
			if len(o.Failures) > 0 {
				msg = "verify reported failures the break does not explain"
			}
			jc.Failure = &junitFailure{Message: msg, Text: strings.Join(append(o.Failures, o.Stray...), "\n")}
			s.Failures++
		}
		s.Tests++
		s.Cases = append(s.Cases, jc)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{s}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
