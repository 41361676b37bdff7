package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/beneath"
)

// State is where a service is in its life cycle.
type State string

const (
	StateStarting State = "starting" // not yet started
	StateSetup    State = "setup"    // its setup command is running
	StateRunning  State = "running"
	StateBackoff  State = "backoff" // exited; waiting to restart
	StateFailed   State = "failed"  // setup failed or the daemon could not start; see Error
	StateStopped  State = "stopped" // exited with DontRestart, or the agent is stopping
)

// Status is the agent's answer to GET /status.
type Status struct {
	Node     string          `json:"node"`
	Healthy  bool            `json:"healthy"` // every service is running and ready
	Services []ServiceStatus `json:"services"`
}

// ServiceStatus is the state of one service.
type ServiceStatus struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	// PID is the daemon's, or its setup's while State is setup.
	PID int `json:"pid,omitempty"`
	// Restarts counts the daemon's starts after the first, since the
	// agent started.
	Restarts int `json:"restarts"`
	// Reloads counts the reloads that succeeded since the agent started.
	Reloads int `json:"reloads,omitempty"`
	// Ready: running, accepting connections on its Ready addresses, and
	// its Init (if any) done.
	Ready bool `json:"ready"`
	// Initialized: the Init command succeeded since this start.
	Initialized bool      `json:"initialized,omitempty"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	LastExit    *Exit     `json:"last_exit,omitempty"`
	// Error says why the last setup or start failed.
	Error string `json:"error,omitempty"`
}

// Exit is how a process ended.
type Exit struct {
	Code   int       `json:"code"`             // -1 when killed by a signal
	Signal string    `json:"signal,omitempty"` // e.g. SIGKILL
	At     time.Time `json:"at"`
}

func (e Exit) String() string {
	if e.Signal != "" {
		return "killed by " + e.Signal
	}
	return fmt.Sprintf("exited with code %d", e.Code)
}

func exitOf(ws syscall.WaitStatus, at time.Time) Exit {
	if ws.Signaled() {
		return Exit{Code: -1, Signal: signalName(ws.Signal()), At: at}
	}
	return Exit{Code: ws.ExitStatus(), At: at}
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGILL: "SIGILL", syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT",
	syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGKILL: "SIGKILL",
	syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM",
	syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGSYS: "SIGSYS",
}

func signalName(sig syscall.Signal) string {
	if s, ok := signalNames[sig]; ok {
		return s
	}
	return "signal " + strconv.Itoa(int(sig))
}

func (a *agent) status() *Status {
	st := a.probeStatus()
	a.lastMu.Lock()
	a.lastStatus, a.lastAt = st, time.Now()
	a.lastMu.Unlock()
	return st
}

// scrapeProbeEvery is how often at most a scrape of the node's metrics
// probes the daemons' ready addresses. A probe is a connection the daemon
// accepts and sees closed, which costs some daemons far more than a
// scrape: sshd forks and re-executes itself for each one. As of
// 2026-11-30, with a probe at every 5 s scrape, the storage node spent
// 0.01 to 0.016 cores on being monitored, the most of any node; with
// this, 0.003 (bench/monitorcost.sh). Running, restarts and the rest are
// read fresh at every scrape.
const scrapeProbeEvery = 30 * time.Second

// scrapeStatus is the node's status for a scrape: whether each service
// runs, its restarts and init are read now; its readiness is the last
// probe's, unless that is older than scrapeProbeEvery.
func (a *agent) scrapeStatus() *Status {
	a.lastMu.Lock()
	last, at := a.lastStatus, a.lastAt
	a.lastMu.Unlock()
	if last == nil || time.Since(at) >= scrapeProbeEvery {
		return a.status()
	}
	ready := map[string]bool{}
	for _, s := range last.Services {
		ready[s.Name] = s.Ready
	}
	st := &Status{Node: a.cfg.Node, Services: []ServiceStatus{}}
	for _, s := range a.services {
		ss := s.status()
		ss.Ready = ss.State == StateRunning && ss.Initialized && ready[ss.Name]
		st.Services = append(st.Services, ss)
	}
	return st
}

// probeStatus is the node's status, each running service probed on its
// ready addresses.
func (a *agent) probeStatus() *Status {
	st := &Status{Node: a.cfg.Node, Healthy: true, Services: []ServiceStatus{}}
	for _, s := range a.services {
		ss := s.status()
		if ss.State == StateRunning {
			ss.Ready = true
			if err := readyErr(s.spec.Ready); err != nil {
				ss.Ready = false
				ss.Error = "running but " + err.Error()
			} else if !ss.Initialized {
				ss.Ready = false
				ss.Error = "running, init not done yet"
			}
		}
		st.Services = append(st.Services, ss)
		if !ss.Ready {
			st.Healthy = false
		}
	}
	return st
}

// readyErr says which of addrs does not accept connections, if any.
func readyErr(addrs []string) error {
	for _, addr := range addrs {
		if err := probe(addr); err != nil {
			return fmt.Errorf("not accepting connections on %s: %w", addr, err)
		}
	}
	return nil
}

// probe connects to addr and hangs up: a daemon that accepts is serving.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	return c.Close()
}

func (a *agent) service(name string) *daemon {
	for _, s := range a.services {
		if s.spec.Name == name {
			return s
		}
	}
	return nil
}

// defaultLogLines is how many lines GET /logs returns without n.
const defaultLogLines = 100

func (a *agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.status())
	})
	// GET /logs?service=NAME&n=N answers the service's last N lines as
	// text, one per line, oldest first. n=0 means all that are kept.
	mux.HandleFunc("GET /logs", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("service")
		s := a.service(name)
		if s == nil {
			http.Error(w, fmt.Sprintf("no service %q", name), http.StatusNotFound)
			return
		}
		n := defaultLogLines
		if v := r.URL.Query().Get("n"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 0 {
				http.Error(w, fmt.Sprintf("bad n %q: want a count of lines", v), http.StatusBadRequest)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		bw := bufio.NewWriter(w)
		for _, l := range s.out.last(n) {
			bw.WriteString(l)
			bw.WriteByte('\n')
		}
		bw.Flush()
	})
	// POST /reload?service=NAME makes the daemon apply its changed
	// configs without a restart; see reload.
	mux.HandleFunc("POST /reload", a.handleReload)
	return mux
}

// server serves status on a unix socket.
type server struct {
	srv  *http.Server
	done chan struct{}
}

func serve(path string, a *agent) (*server, error) {
	ln, err := listen(path)
	if err != nil {
		return nil, err
	}
	s := &server{srv: &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("serve status", "socket", path, "err", err)
		}
	}()
	return s, nil
}

// close stops serving and removes the socket file.
func (s *server) close() {
	s.srv.Close() // closes the listener, which unlinks the socket
	<-s.done
}

// listen listens on a unix socket at path that only its owner may use,
// replacing a stale socket from an earlier run.
func listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen %s: exists and is not a socket; remove it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another agent is serving there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen %s: remove stale socket: %w", path, err)
		}
	}
	// bind creates the file with the umask applied; chmod after it would
	// leave a moment in which others could connect. The umask is the
	// process's, so this runs before any service starts.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// The node controls what its agent answers, so the host reads at most this
// much of a reply. A status is a few KiB per service; the logs are at most
// ringLines lines of maxLine bytes each, which is 4 MiB.
const (
	maxStatusReply = 1 << 20
	maxLogsReply   = 8 << 20
)

// Query asks the agent serving on socket for its status.
func Query(ctx context.Context, socket string) (*Status, error) {
	body, err := get(ctx, socket, "/status", maxStatusReply)
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("query agent %s: %w", socket, err)
	}
	return &st, nil
}

// Logs returns up to n of service's most recent output lines, oldest
// first, from the agent serving on socket. n <= 0 returns all it keeps.
func Logs(ctx context.Context, socket, service string, n int) ([]string, error) {
	v := url.Values{"service": {service}, "n": {strconv.Itoa(max(n, 0))}}
	body, err := get(ctx, socket, "/logs?"+v.Encode(), maxLogsReply)
	if err != nil {
		return nil, err
	}
	text := string(body)
	if text == "" {
		return []string{}, nil
	}
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n"), nil
}

// get reads the reply to GET path, refusing one larger than limit bytes.
func get(ctx context.Context, socket, path string, limit int64) ([]byte, error) {
	return do(ctx, socket, http.MethodGet, path, limit)
}

// do reads the reply to method path, refusing one larger than limit bytes.
func do(ctx context.Context, socket, method, path string, limit int64) ([]byte, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, socket)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("query agent %s: %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("query agent %s: %w", socket, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("query agent %s: %s %s: the reply is larger than %d bytes; the node's agent may be compromised", socket, method, path, limit)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query agent %s: %s: %s", socket, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// dial connects to the unix socket at path without following a link there.
// The socket's directory is the node's to write, so a node could swap the
// socket for a link to some other socket on the host. The file is opened
// O_PATH beneath its directory (a link refused), checked to be a socket,
// and connected to through /proc/self/fd/N, which reaches the very inode
// that was checked: connect(2) resolves that magic link to the open file.
func dial(ctx context.Context, path string) (net.Conn, error) {
	dir, err := beneath.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	h, info, err := dir.OpenPath(filepath.Base(path))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if info.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("%s is not a socket; refused to connect", path)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(h.Fd())))
}
