package verify

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/matrix"
	"github.com/bulkhead/bulkhead/internal/plan"
)

// Report is what one verify run saw, and its judgement.
type Report struct {
	Stack string `json:"stack"`
	// Sources are the vantages, host and outside first; every one is also
	// a destination.
	Sources []string `json:"sources"`
	// Tiers maps each node among Sources to its tier, as the plan has
	// it; the host and outside have none.
	Tiers map[string]string `json:"tiers"`
	// Ports and UDPPorts are the TCP and the UDP ports probed.
	Ports     []int         `json:"ports"`
	UDPPorts  []int         `json:"udp_ports"`
	Cells     []Cell        `json:"cells"`
	Listeners []Listener    `json:"listeners"`
	Checks    []Check       `json:"checks"`
	Probes    int           `json:"probes"`
	Duration  time.Duration `json:"duration_ns"`
	Phases    []Phase       `json:"phases"`
	Counts    Counts        `json:"counts"`
	// Plan is the plan the stack was verified against; the text report
	// lays its matrix out by it.
	Plan *plan.Plan `json:"-"`
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
	Proto   string   `json:"proto"` // tcp or udp
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

func (c *Cell) udp() bool { return c.Proto == "udp" }

func (c *Cell) planPort() plan.Port { return plan.Port{Proto: c.Proto, Number: c.Port} }

// probed lists the ports probed, TCP then UDP.
func (r *Report) probed() []plan.Port {
	out := make([]plan.Port, 0, len(r.Ports)+len(r.UDPPorts))
	for _, n := range r.Ports {
		out = append(out, plan.Port{Proto: "tcp", Number: n})
	}
	for _, n := range r.UDPPorts {
		out = append(out, plan.Port{Proto: "udp", Number: n})
	}
	return out
}

// port names the cell's port as the report prints it: 22 over TCP, as
// ever, and 53/udp.
func (c *Cell) port() string {
	if c.udp() {
		return fmt.Sprintf("%d/udp", c.Port)
	}
	return fmt.Sprint(c.Port)
}

// String names the cell: app-1 -> db:3306, host -> cache:11211/udp.
func (c *Cell) String() string { return fmt.Sprintf("%s -> %s:%s", c.From, c.To, c.port()) }

// judge applies the rules: an allowed cell must be open on the flow's
// address; every other probe must be filtered or unreachable. Refused is
// a failure too: the probe reached the destination. A UDP cell reads the
// same way, its stand-in's echo as open.
func (c *Cell) judge() {
	c.OK, c.Why = true, ""
	for _, t := range c.Targets {
		switch {
		case t.Primary && t.Status != Open:
			c.OK = false
			c.Why = fmt.Sprintf("allowed, but %s:%s is %s", t.Addr, c.port(), t.Status)
		case !t.Primary && (t.Status == Open || t.Status == Refused):
			c.OK = false
			c.Why = fmt.Sprintf("denied, but %s:%s is %s", t.Addr, c.port(), t.Status)
		case t.Status == Unknown:
			c.OK = false
			c.Why = fmt.Sprintf("%s:%s could not be probed", t.Addr, c.port())
		}
		if !c.OK {
			return
		}
	}
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
	for i := range r.Cells {
		if c := &r.Cells[i]; !c.OK {
			out = append(out, fmt.Sprintf("%s: %s", c, c.Why))
		}
	}
	for _, ch := range r.Checks {
		for _, e := range ch.Errors {
			out = append(out, ch.Name+": "+e)
		}
	}
	return out
}

// Marks of the checks in the text report.
const (
	checkOK     = "✔"
	checkFailed = "✘!"
)

// WriteText writes the report for people: the matrix as the plan prints
// it, with the cells that failed marked, then the failures, the checks and
// the counts. The matrix shows every node on the ports the plan gives it
// and every failed cell; the rest, all denied and blocked, are counted.
func (r *Report) WriteText(w io.Writer) error {
	if r.Plan == nil {
		return errors.New("write verify report: the report has no plan to lay its matrix out by")
	}
	var b strings.Builder
	nports := fmt.Sprintf("%d ports", len(r.Ports))
	if len(r.UDPPorts) > 0 {
		nports = fmt.Sprintf("%d ports (%d tcp, %d udp)", len(r.Ports)+len(r.UDPPorts), len(r.Ports), len(r.UDPPorts))
	}
	fmt.Fprintf(&b, "verify %s: %d sources x %d destinations x %s (%d probes) in %.2fs\n",
		r.Stack, len(r.Sources), len(r.Sources), nports, r.Probes, r.Duration.Seconds())
	fmt.Fprintf(&b, "\nREACHABILITY (rows are sources, columns destination and port; %s allowed and open, %s denied and blocked)\n",
		matrix.Allowed, matrix.Denied)
	if r.Counts.FailedCells > 0 {
		fmt.Fprintf(&b, "a failed cell reads %s (allowed, not open), %s (denied, reached) or %s (not probed); FAILURES lists each\n",
			matrix.Closed, matrix.Breach, matrix.Unknown)
	}
	grid := r.grid()
	if err := grid.WriteText(&b); err != nil {
		return err
	}
	shown := map[string]map[plan.Port]bool{}
	for _, c := range grid.Cols {
		for _, d := range c.Dest.Names {
			if shown[d] == nil {
				shown[d] = map[plan.Port]bool{}
			}
			shown[d][c.Port] = true
		}
	}
	hidden := 0
	for i := range r.Cells {
		if c := &r.Cells[i]; !shown[c.To][c.planPort()] {
			hidden++
		}
	}
	if hidden > 0 {
		var vs []string
		for _, v := range []string{Host, Outside} {
			if shown[v] == nil {
				vs = append(vs, v)
			}
		}
		where := "to each node on its other ports"
		if len(vs) > 0 {
			where = "to " + strings.Join(vs, " and ") + ", and " + where
		}
		list := func(ps []int) string {
			s := make([]string, len(ps))
			for i, p := range ps {
				s[i] = fmt.Sprint(p)
			}
			return strings.Join(s, " ")
		}
		fmt.Fprintf(&b, "ports probed: %s", list(r.Ports))
		if len(r.UDPPorts) > 0 {
			fmt.Fprintf(&b, "; udp %s", list(r.UDPPorts))
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "the other %s (%s) are denied and blocked, as planned\n", Plural(hidden, "cell"), where)
	}
	fails := r.Failures()
	if len(fails) > 0 {
		fmt.Fprintf(&b, "\nFAILURES (%d):\n", len(fails))
		for _, f := range fails {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	b.WriteString("\nchecks:\n")
	for _, ch := range r.Checks {
		mark := checkOK
		if !ch.OK {
			mark = checkFailed
		}
		fmt.Fprintf(&b, "  %-2s %s: %s\n", mark, ch.Name, ch.Detail)
	}
	expected := 0
	protos := map[string]int{}
	for _, l := range r.Listeners {
		if l.Expected {
			expected++
		}
		protos[l.Proto]++
	}
	c := r.Counts
	fmt.Fprintf(&b, "\nlisteners: %d as planned, %d unexpected (%d tcp, %d udp)\n", expected, c.Unexpected, protos["tcp"], protos["udp"])
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

// grid lays the cells out as the plan's matrix, with a column for every
// destination and port where a cell failed.
func (r *Report) grid() *matrix.Grid {
	// A dense index rather than a map of 200,000 cells: the layout asks
	// for each cell many times over.
	pos := make(map[string]int, len(r.Sources))
	for i, s := range r.Sources {
		pos[s] = i
	}
	ports := r.probed()
	portPos := make(map[plan.Port]int, len(ports))
	for i, p := range ports {
		portPos[p] = i
	}
	n, np := len(r.Sources), len(ports)
	index := make([]int32, n*n*np)
	for i := range index {
		index[i] = -1
	}
	at := func(from, to string, port plan.Port) int {
		f, ok1 := pos[from]
		t, ok2 := pos[to]
		p, ok3 := portPos[port]
		if !ok1 || !ok2 || !ok3 {
			return -1
		}
		return (f*n+t)*np + p
	}
	more := map[string][]plan.Port{}
	for i := range r.Cells {
		c := &r.Cells[i]
		if k := at(c.From, c.To, c.planPort()); k >= 0 {
			index[k] = int32(i)
		}
		if !c.OK {
			more[c.To] = append(more[c.To], c.planPort())
		}
	}
	return matrix.Layout(r.Plan, func(from, to string, port plan.Port) string {
		if k := at(from, to, port); k >= 0 && index[k] >= 0 {
			return r.Cells[index[k]].mark()
		}
		return ""
	}, more)
}

// mark is what the cell reads in the text matrix. A cell that reached
// where the plan denies it reads as a breach even if it also failed
// otherwise.
func (c *Cell) mark() string {
	switch {
	case c.OK && c.Allow:
		return matrix.Allowed
	case c.OK:
		return matrix.Denied
	case slices.ContainsFunc(c.Targets, func(t Target) bool { return !t.Primary && (t.Status == Open || t.Status == Refused) }):
		return matrix.Breach
	case slices.ContainsFunc(c.Targets, func(t Target) bool { return t.Status == Unknown }):
		return matrix.Unknown
	}
	return matrix.Closed
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
		jc := junitCase{Name: fmt.Sprintf("%s %s", &c, verb), Classname: "verify." + c.From}
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
