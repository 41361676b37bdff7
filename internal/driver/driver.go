// Package driver is what the CLI asks of a backend: bring a plan up on its
// machines, take it down, and report on, read the logs of, run commands in
// and probe what it made. A backend only realises the plan; every derived
// fact (names, addresses, firewalls, the matrix) is the plan's.
//
// local (driver/local), every node on this host, is the only backend as
// of 2026-11; ssh and kubernetes are to follow.
package driver

import (
	"context"
	"io"
	"time"

	"filippo.io/age"

	"github.com/bulkhead/bulkhead/internal/agent"
	"github.com/bulkhead/bulkhead/internal/backup"
	"github.com/bulkhead/bulkhead/internal/beneath"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/verify"
)

// Backend realises plans on some machines. Up is idempotent: called twice
// with the same plan, the second call changes nothing. Down removes
// exactly what Up made.
type Backend interface {
	// Up makes the backend run p.
	Up(ctx context.Context, p *plan.Plan, o UpOptions) (*UpResult, error)
	// Changes says what Up would do to run p with the site in site,
	// changing nothing.
	Changes(ctx context.Context, p *plan.Plan, site string) ([]Change, error)
	// Down removes what Up made for stack; with purge its data and
	// secrets too.
	Down(ctx context.Context, stack string, purge bool) error
	// Status reports each node of a running stack.
	Status(ctx context.Context, stack string) (*Status, error)
	// Usage reports each node's use of CPU and memory, and its daemons'
	// restarts, as the stack's monitor last scraped them.
	Usage(ctx context.Context, stack string) ([]NodeUsage, error)
	// Range asks the stack's monitor for query over [start, end] at step,
	// a series per node.
	Range(ctx context.Context, stack, query string, start, end time.Time, step time.Duration) ([]Series, error)
	// SavedPlan is the plan the running stack was brought up with.
	SavedPlan(stack string) (*plan.Plan, error)
	// LastVerify is the report of the stack's last verify run, nil if
	// none was kept.
	LastVerify(stack string) (*VerifyRecord, error)
	// Logs prints the last lines of a node's daemon logs (one service's
	// if service is not empty) and, with follow, what they add until ctx
	// is done.
	Logs(ctx context.Context, stack, node, service string, lines int, follow bool, out io.Writer) error
	// Exec runs a command inside a node; its exit status comes back as
	// an *exec.ExitError.
	Exec(ctx context.Context, stack, node string, args []string, stdin io.Reader, stdout, stderr io.Writer) error
	// Verify probes the running stack from inside every node and from
	// outside, and compares what happened with the plan's matrix.
	Verify(ctx context.Context, stack string, o verify.Options) (*verify.Report, error)
	// SelfTest plants each of verify's mutations in turn, checks that
	// verify catches it, and restores the stack.
	SelfTest(ctx context.Context, stack string, o verify.Options, progress func(string)) ([]verify.Outcome, *verify.Report, error)
	// CACertPath is where the stack's CA certificate is, for visitors'
	// clients to trust.
	CACertPath(stack string) string
	// Rollback moves the running stack p back to release id (the
	// previous live release when id is empty), through the same checks
	// as a deploy.
	Rollback(ctx context.Context, p *plan.Plan, id string, o UpOptions) (*UpResult, error)
	// Releases lists the stack's releases and which one is live.
	Releases(ctx context.Context, stack string) (*release.Index, error)
	// Snapshot opens what a backup of the running stack reads besides
	// its database's dump, which the caller runs in the db node with
	// Exec. The caller closes it.
	Snapshot(ctx context.Context, stack string) (*Snapshot, error)
	// Restore puts the backup archive at path back as the stack p, which
	// must be down or new: its uploads, its release, its database, and
	// its secrets when o.Identities open them. It checks the whole
	// archive before it changes anything, and brings the stack up.
	Restore(ctx context.Context, p *plan.Plan, path string, o RestoreOptions) (*RestoreResult, error)
}

// Snapshot is what a backup reads of a running stack besides its
// database's dump.
type Snapshot struct {
	Plan *plan.Plan
	// StackFile is the stack file the stack's last up applied; nil when
	// that up kept none.
	StackFile []byte
	// Release is the live release's id, and ReleaseDir its code: a
	// read-only directory of the host's.
	Release, ReleaseDir string
	// Uploads is a handle on a directory the storage node writes, and
	// UploadsDir the directory beneath it that holds the site's writable
	// paths (uploads): read them beneath Uploads, following no link. Nil
	// for a stack without storage.
	Uploads    *beneath.Root
	UploadsDir string
	// Secrets are the stack's secrets, JSON: archive them only
	// encrypted.
	Secrets []byte
}

// Close releases the snapshot's handles.
func (s *Snapshot) Close() error {
	if s.Uploads != nil {
		return s.Uploads.Close()
	}
	return nil
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// UpOptions bring the restored stack up.
	UpOptions
	// Force lets the restore replace the stack's data (its database and
	// its uploads) when the stack, down, still holds some.
	Force bool
	// Identities open the archive's secrets; then they become the
	// stack's. Without them the stack keeps its own, or makes new ones.
	Identities []age.Identity
	// Progress, if set, is told the archive's bytes read while it is
	// checked and extracted.
	Progress func(done, total int64)
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Manifest *backup.Manifest
	// Release is the release live after the restore, and Archived the
	// archive's; they differ when the site directory held other code,
	// which wins as it would at an up.
	Release, Archived string
	// SiteWritten says the archive's code was written to the stack's
	// site directory, which was empty or absent.
	SiteWritten bool
	// Files and Bytes count the uploads restored; Skipped names what the
	// archive holds outside the stack's writable paths, left out.
	Files   int
	Bytes   int64
	Skipped []string
	// DumpBytes is the size of the database's dump loaded.
	DumpBytes int64
	// Secrets says the archive's secrets became the stack's.
	Secrets bool
	// Replaced names the data the restore replaced (with Force).
	Replaced []string
	Up       *UpResult
}

// UpOptions tune Up.
type UpOptions struct {
	// SiteDir is the site's directory on the host, absolute.
	SiteDir string
	// NoInstall makes missing Debian packages an error instead of an
	// install.
	NoInstall bool
	// Wait bounds how long Up waits for every node to report healthy.
	Wait time.Duration
	// NoSandbox runs nodes without user namespaces and seccomp filters,
	// so that a benchmark can measure what they cost.
	// A stack keeps the choice it was first brought up with until down
	// --purge.
	NoSandbox bool
	// Drain bounds how long a node leaving the stack (an app pool scaled
	// down) may finish its requests after the edge stopped sending it
	// new ones. Default 10s.
	Drain time.Duration
	// StackFile is the stack file's content, which the driver keeps for
	// a backup to archive; nil keeps what it holds.
	StackFile []byte
	// Surge is p with one more app node. A rolling deploy brings that
	// node up with the new release first, so that no fewer app nodes
	// serve while each of the others switches, and removes it at the
	// end. Nil switches the nodes in place.
	Surge *plan.Plan
}

// UpResult says what Up did.
type UpResult struct {
	Changed   bool     // false: the stack was already as planned
	Restarted []string // nodes whose containers were (re)started
	Reloaded  []string // nodes whose services reloaded changed configs
	Removed   []string // nodes drained and removed
	Synced    int      // files the site ships in its writable paths, put on storage
	Release   string   // the release a deploy or rollback made live
}

// Change is what Up would do to one node.
type Change struct {
	Node string `json:"node"`
	// Action is "create", "remove", "restart", "reload", "live" (files
	// written, read on use) or "none"; for Node "site", "deploy" (a new
	// release rolls out) or "release" (the first one is made).
	Action string `json:"action"`
	// Files are the node's changed files, each with what it needs.
	Files []string `json:"files,omitempty"`
}

// Status is a running stack as the backend sees it.
type Status struct {
	Stack      string `json:"stack"`
	Supervisor bool   `json:"supervisor"`
	// Keeper says the supervisor's keeper runs, which starts a new
	// supervisor when this one dies.
	Keeper bool `json:"keeper"`
	// CertExpires is when the certificate the edge serves expires; zero
	// when it is not known.
	CertExpires time.Time    `json:"cert_expires,omitzero"`
	Nodes       []NodeStatus `json:"nodes"`
	// Alerts are the monitor's alerts that fire now; AlertsError says
	// why they could not be read. Both are empty without a monitor.
	Alerts      []Alert `json:"alerts,omitempty"`
	AlertsError string  `json:"alerts_error,omitempty"`
}

// NodeUsage is one node's use of its resources, from the monitor.
type NodeUsage struct {
	Node string `json:"node"`
	Up   bool   `json:"up"` // the monitor's last scrape of its agent worked
	// CPU is in cores, averaged over the last 30 seconds.
	CPU         float64 `json:"cpu"`
	Memory      int64   `json:"memory"`
	MemoryLimit int64   `json:"memory_limit"`
	Pids        int64   `json:"pids"`
	Restarts    int64   `json:"restarts"`
	// Requests and Errors are the responses and the 5xx responses a
	// second over the last 30 seconds, where the node's agent reads an
	// access log (the edge's); nil elsewhere.
	Requests *float64 `json:"requests,omitempty"`
	Errors   *float64 `json:"errors,omitempty"`
}

// Series is one node's values of a range query, oldest first.
type Series struct {
	Node   string  `json:"node"`
	Points []Point `json:"points"`
}

// Point is one value of a series.
type Point struct {
	At    time.Time `json:"at"`
	Value float64   `json:"value"`
}

// VerifyRecord is a verify run kept in the stack's state: when it ended
// and its report. The report keeps only the cells that failed; its Counts
// count every cell. The whole matrix of a hundred app nodes is about
// 300,000 cells, 40 MB of JSON that cost more CPU to write than a quarter
// of the probes, for a dashboard that shows the failures; 'verify
// --output json' prints every cell.
type VerifyRecord struct {
	At     time.Time      `json:"at"`
	Report *verify.Report `json:"report"`
}

// Alert is one of the monitor's alert rules that fires.
type Alert struct {
	Name     string    `json:"name"`
	Node     string    `json:"node,omitempty"`
	Service  string    `json:"service,omitempty"`
	Severity string    `json:"severity,omitempty"`
	Summary  string    `json:"summary,omitempty"`
	Since    time.Time `json:"since,omitzero"`
}

// NodeStatus is one node's state.
type NodeStatus struct {
	Name      string   `json:"name"`
	State     string   `json:"state"` // the container's: running, stopped, missing
	Addresses []string `json:"addresses"`
	Healthy   bool     `json:"healthy"`
	Restarts  int      `json:"restarts"`
	// ContainerRestarts counts the supervisor's restarts of the node's
	// container since the supervisor started; State is "crash-loop"
	// while the node keeps dying soon after each one.
	ContainerRestarts int                   `json:"container_restarts"`
	Services          []agent.ServiceStatus `json:"services"`
}

// Healthy reports whether the supervisor and every node are.
func (s *Status) Healthy() bool {
	if !s.Supervisor {
		return false
	}
	for _, n := range s.Nodes {
		if !n.Healthy {
			return false
		}
	}
	return true
}
