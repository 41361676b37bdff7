package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
)

// TestFaultDrill is the fault drill of issue #12. It breaks one part of a
// running stack at a time while visitors in the outside namespace (the
// internet's side of the edge) send GET / without pause, and logs for each
// fault whether the site kept answering, how many requests failed, and how
// long the stack took to recover: to be whole again, with the last failed
// request behind it. Nothing may be lost:
//   - db: mariadbd is SIGKILLed while visitors post. Every post the site
//     acknowledged is in the database afterwards, and no request that
//     began once the db was back fails. (While the one db node restarts,
//     a page the cache does not hold cannot be made.)
//   - storage: the SFTP listener, sshd, is SIGKILLed while visitors upload
//     images. An upload is stored whole, byte for byte, or its visitor got
//     an error; no GET of an upload's path ever answers with part of it.
//   - app-2: the node's agent, its container's PID 1, is SIGKILLed. No
//     request fails, and the supervisor brings the node back.
//   - app-1: its disk and its tmpfs are filled. The site keeps answering,
//     and every node is healthy once the files are removed.
//   - the published port: the supervisor and its keeper are stopped. It
//     serves on: it is the kernel's.
func TestFaultDrill(t *testing.T) {
	s := newStack(t, "e2eg", 248, 18690, unwatched)
	s.run("up")
	ns, url := s.outsideURL(t)
	d := &drill{s: s, ns: ns, url: url, dbName: planDBName(t, s)}
	t.Cleanup(func() { d.report(t) })

	t.Run("db: mariadbd killed while visitors post", func(t *testing.T) {
		pid, restarts := service(t, s, "db", "mariadb")
		host := hostPID(t, s, "db", pid)
		p := d.startPosting(t, "db", 2, nil)
		var killed time.Time
		f := d.fault(t, "db: mariadbd SIGKILL during posts", func() {
			killed = time.Now()
			if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
				t.Fatalf("kill mariadbd (host pid %d): %v", host, err)
			}
			t.Logf("mariadbd killed with %d posts under way", p.busy())
		}, nil, func() bool {
			// The agent restarted it, and the site stores posts again.
			_, r, ok := serviceRunning(t, s, "db", "mariadb")
			return ok && r > restarts && d.healthy(t, "db") && p.ackedAfter(killed)
		})
		p.stop()
		stored := d.stored(t, "db")
		lost := p.lost(stored)
		if len(lost) > 0 {
			t.Errorf("%d of %d acknowledged posts are not in the database; the first: %q", len(lost), len(p.acked), lost[:min(len(lost), 5)])
		}
		for i, from := range f.load.failedFrom {
			if from.After(f.whole) {
				t.Errorf("GET / that began %s after the db was back failed: %s", from.Sub(f.whole).Round(time.Millisecond), f.load.failures[i])
			}
		}
		t.Logf("posts: %d tried, %d acknowledged, %d failed (first: %q); %d stored; %s the kill", p.tried, len(p.acked), len(p.failures), p.failures[:min(len(p.failures), 3)], len(stored), p.failedWithin(killed))
		d.row(f, fmt.Sprintf("%d of %d acknowledged posts", len(lost), len(p.acked)))
	})

	t.Run("storage: sshd killed while visitors upload", func(t *testing.T) {
		pid, restarts := service(t, s, "storage", "sshd")
		host := hostPID(t, s, "storage", pid)
		p := d.startPosting(t, "storage", 2, noisePNG(900, 800))
		w := d.watchUploads(t, p)
		var killed time.Time
		f := d.fault(t, "storage: sshd (listener) SIGKILL during uploads", func() {
			// Once uploads flow: the posters keep one under way at
			// almost every moment.
			hosttest.Eventually(t, time.Minute, "an upload acknowledged", func() bool { return p.ackedAfter(time.Time{}) })
			killed = time.Now()
			if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
				t.Fatalf("kill sshd (host pid %d): %v", host, err)
			}
			t.Logf("sshd killed with %d uploads under way", p.busy())
		}, nil, func() bool {
			_, r, ok := serviceRunning(t, s, "storage", "sshd")
			return ok && r > restarts && d.healthy(t, nodes...) && p.ackedAfter(killed)
		})
		p.stop()
		w.stop()
		if len(f.load.failures) > 0 {
			t.Errorf("%d of %d GET / failed; want none; the first: %q", len(f.load.failures), f.load.requests, f.load.failures[:min(len(f.load.failures), 5)])
		}
		for _, bad := range w.partial {
			t.Errorf("a GET of an upload answered with bytes that no visitor sent: %s", bad)
		}
		lost, partial := d.checkUploads(t, p)
		t.Logf("uploads: %d tried, %d acknowledged, %d failed (first: %q); %d checks of upload paths while uploading", p.tried, len(p.acked), len(p.failures), p.failures[:min(len(p.failures), 3)], w.checks)
		d.row(f, fmt.Sprintf("%d of %d acknowledged uploads, %d partial", lost, len(p.acked), partial+len(w.partial)))
	})

	t.Run("app-2: its agent killed", func(t *testing.T) {
		before := containerPID(t, s, "app-2")
		f := d.fault(t, "app-2: agent (PID 1) SIGKILL", func() {
			if err := syscall.Kill(before, syscall.SIGKILL); err != nil {
				t.Fatalf("kill app-2's agent (host pid %d): %v", before, err)
			}
		}, nil, func() bool {
			st := status(t, s)["app-2"]
			return st.State == "running" && st.Healthy && containerPID(t, s, "app-2") != before
		})
		if len(f.load.failures) > 0 {
			t.Errorf("%d of %d requests failed; want none; the first: %q", len(f.load.failures), f.load.requests, f.load.failures[:min(len(f.load.failures), 5)])
		}
		d.servedBy(t, "app-2")
		d.row(f, "n/a (reads only)")
	})

	t.Run("app-1: disk full", func(t *testing.T) {
		dirs := []string{"/var/log/bulkhead", "/var/lib/bulkhead", "/tmp", "/run/bulkhead"}
		f := d.fault(t, "app-1: disk and tmpfs full", func() {
			for _, dir := range dirs {
				out, err := s.in("app-1", "sh", "-c", "dd if=/dev/zero of="+dir+"/drill-fill bs=1M count=1200 2>&1")
				if err == nil || !strings.Contains(out, "No space left on device") {
					t.Errorf("app-1 wrote 1200M into %s: %v %s", dir, err, lastLine(out))
				}
			}
			// Full for a while, under load. Whether app-1 itself still
			// answers, or the edge sends around it, is the site's choice.
			c := &http.Client{Timeout: 5 * time.Second}
			answered := 0
			for range 20 {
				if resp, err := c.Get("http://" + s.http + "/"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK && resp.Header.Get("X-Served-By") == "app-1" {
						answered++
					}
				}
			}
			t.Logf("while full, app-1 answered %d of 20 GET /", answered)
			time.Sleep(10 * time.Second)
		}, func() {
			for _, dir := range dirs {
				if out, err := s.in("app-1", "rm", "-f", dir+"/drill-fill"); err != nil {
					t.Errorf("remove %s/drill-fill: %v %s", dir, err, out)
				}
			}
		}, func() bool { return d.healthy(t, nodes...) })
		if len(f.load.failures) > 0 {
			t.Errorf("%d of %d requests failed while app-1 was full; want none; the first: %q", len(f.load.failures), f.load.requests, f.load.failures[:min(len(f.load.failures), 5)])
		}
		d.servedBy(t, "app-1")
		d.row(f, "n/a (reads only)")
	})

	t.Run("published port: the supervisor and its keeper stopped", func(t *testing.T) {
		// The published port is the kernel's: with both processes
		// stopped (SIGSTOP, so that neither starts the other), it serves
		// on.
		var pair []int
		for _, kind := range []string{"process", "keeper"} {
			pid, err := strconv.Atoi(pairPID(t, s, kind))
			if err != nil {
				t.Fatal(err)
			}
			pair = append(pair, pid)
		}
		signal := func(sig syscall.Signal) {
			for _, pid := range pair {
				if err := syscall.Kill(pid, sig); err != nil {
					t.Errorf("signal %v to %d: %v", sig, pid, err)
				}
			}
		}
		defer signal(syscall.SIGCONT)
		f := d.fault(t, "published port: supervisor and keeper stopped", func() { signal(syscall.SIGSTOP) }, nil, func() bool {
			return strings.HasPrefix(s.get(t, "/"), "200 ")
		})
		for range 20 {
			if got := s.get(t, "/"); !strings.HasPrefix(got, "200 ") {
				t.Fatalf("GET / through the published port with the supervisor stopped: %.200q", got)
			}
		}
		if len(f.load.failures) > 0 {
			t.Errorf("%d of %d requests from outside failed with the supervisor stopped; want none; the first: %q", len(f.load.failures), f.load.requests, f.load.failures[:min(len(f.load.failures), 5)])
		}
		d.row(f, "n/a (reads only)")
	})

	t.Run("verify passes after the drill", func(t *testing.T) {
		if v, out, err := s.verify(t); err != nil || !v.Pass {
			t.Errorf("verify after the drill (%v): failures %q\n%.3000s", err, v.Failures, out)
		}
	})
}

// drill is one stack under the drill's faults, and what each did.
type drill struct {
	s       *stack
	ns, url string // the outside vantage point and the edge's public URL
	dbName  string
	rows    []drillRow
}

type drillRow struct {
	fault     string
	requests  int
	failed    int
	recovered time.Duration
	lost      string
}

// faultRun is what one fault did to the visitors' load.
type faultRun struct {
	name      string
	load      loadResult
	at, whole time.Time     // the fault (or its repair), the stack whole again
	recovered time.Duration // from at until whole and the last failure both passed
}

// fault starts the visitors' load, lets it settle, breaks the stack with
// inject, heals it with repair when the stack cannot heal itself, and
// waits until whole holds. The time to recover runs from the fault (or
// from the end of the repair) until the stack is whole and the last failed
// request has ended. The load runs 2 s past recovery, so that a failure
// right after it counts too.
func (d *drill) fault(t *testing.T, name string, inject, repair func(), whole func() bool) faultRun {
	t.Helper()
	l := startLoad(t, d.ns, d.url, 8)
	time.Sleep(time.Second)
	inject()
	at := time.Now()
	if repair != nil {
		repair()
		at = time.Now()
	}
	hosttest.Eventually(t, 3*time.Minute, name+": the stack whole again", whole)
	f := faultRun{name: name, at: at, whole: time.Now()}
	time.Sleep(2 * time.Second)
	f.load = l.stop()
	end := f.whole
	if f.load.lastFailed.After(end) {
		end = f.load.lastFailed
	}
	f.recovered = end.Sub(at)
	if f.load.requests == 0 {
		t.Errorf("%s: no request was made", name)
	}
	t.Logf("fault %s: recovered after %s (whole after %s); %d requests, p99 %s, %d failed; the first: %q", name,
		f.recovered.Round(10*time.Millisecond), f.whole.Sub(at).Round(10*time.Millisecond),
		f.load.requests, f.load.p99, len(f.load.failures), f.load.failures[:min(len(f.load.failures), 3)])
	return f
}

func (d *drill) row(f faultRun, lost string) {
	d.rows = append(d.rows, drillRow{fault: f.name, requests: f.load.requests, failed: len(f.load.failures), recovered: f.recovered, lost: lost})
}

// report logs the drill's table.
func (d *drill) report(t *testing.T) {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "fault\tsite kept answering\trequests failed\ttime to recover\tlost")
	for _, r := range d.rows {
		answered := "yes"
		if r.failed > 0 {
			answered = "no"
		}
		fmt.Fprintf(w, "%s\t%s\t%d of %d\t%s\t%s\n", r.fault, answered, r.failed, r.requests, r.recovered.Round(10*time.Millisecond), r.lost)
	}
	w.Flush()
	t.Logf("fault drill:\n%s", b.String())
}

// healthy reports whether each of the nodes runs and is healthy.
func (d *drill) healthy(t *testing.T, names ...string) bool {
	st := status(t, d.s)
	for _, n := range names {
		if st[n].State != "running" || !st[n].Healthy {
			return false
		}
	}
	return true
}

// servedBy waits until node answers GET / again, through the edge.
func (d *drill) servedBy(t *testing.T, node string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	hosttest.Eventually(t, time.Minute, node+" serving GET / again", func() bool {
		resp, err := c.Get("http://" + d.s.http + "/")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && resp.Header.Get("X-Served-By") == node
	})
}

// serviceRunning is a service's pid and restarts, and whether it runs.
func serviceRunning(t *testing.T, s *stack, node, name string) (pid, restarts int, running bool) {
	t.Helper()
	for _, sv := range status(t, s)[node].Services {
		if sv.Name == name {
			return sv.PID, sv.Restarts, sv.State == "running"
		}
	}
	return 0, 0, false
}

// containerPID is the host pid of a node's agent, its container's PID 1.
func containerPID(t *testing.T, s *stack, node string) int {
	t.Helper()
	out, err := exec.Command("runc", "state", "bh-"+s.name+"-"+node).Output()
	if err != nil {
		return 0 // not running (yet)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("runc state of %s: %v", node, err)
	}
	return st.Pid
}

// hostPID is the host pid of the process that a node's container knows as
// pid: the one in the container's pid namespace whose innermost pid it is.
func hostPID(t *testing.T, s *stack, node string, pid int) int {
	t.Helper()
	first := containerPID(t, s, node)
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", first))
	if first == 0 || err != nil {
		t.Fatalf("the pid namespace of %s: %v", node, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		h, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, _ := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid")); l != ns {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" && f[len(f)-1] == strconv.Itoa(pid) {
				return h
			}
		}
	}
	t.Fatalf("no process of %s is its pid %d", node, pid)
	return 0
}

// planDBName is the site's database, as the plan names it.
func planDBName(t *testing.T, s *stack) string {
	t.Helper()
	out, errOut, err := s.stdout("plan", "--output", "json")
	if err != nil {
		t.Fatalf("plan --output json: %v\n%s", err, errOut)
	}
	var p struct {
		Site struct {
			DBName string `json:"db_name"`
		} `json:"site"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Site.DBName == "" {
		t.Fatalf("no site.db_name in the plan (%v)", err)
	}
	return p.Site.DBName
}

// stored reads the drill's posts tagged tag back from the database, as
// the db node's root: title -> image ("" for none).
func (d *drill) stored(t *testing.T, tag string) map[string]string {
	t.Helper()
	// The node's client reads its socket from the server's option file.
	query := fmt.Sprintf("SELECT title, COALESCE(image, '') FROM `%s`.posts WHERE title LIKE 'drill %s %%'", d.dbName, tag)
	out, err := d.s.in("db", "mariadb", "--defaults-file=/etc/bulkhead/my.cnf", "-N", "-B", "-e", query)
	if err != nil {
		t.Fatalf("read the posts back: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if title, image, ok := strings.Cut(l, "\t"); ok {
			m[title] = image
		}
	}
	return m
}

// posters are visitors in the outside namespace who post without pause.
// Each reads the form for its CSRF token, then posts a title, a text and,
// when image is set, that image made unique by the post's title.
type posters struct {
	stopc chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	tried    int
	sent     map[string]string // every title posted -> sha256 of its image, "" for none
	hashes   map[string]bool   // the sha256 of every image posted
	acked    map[string]string // the titles the site acknowledged (303), likewise
	failures []string
	failedAt []time.Time // when each failed post began
	lastAck  time.Time
	inflight int // posts under way
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func (d *drill) startPosting(t *testing.T, tag string, workers int, img []byte) *posters {
	t.Helper()
	p := &posters{stopc: make(chan struct{}), sent: map[string]string{}, hashes: map[string]bool{}, acked: map[string]string{}}
	for w := range workers {
		c := outsideClient(t, d.ns)
		p.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-p.stopc:
					return
				default:
				}
				title := fmt.Sprintf("drill %s %d-%d", tag, w, i)
				var data []byte
				sum := ""
				if img != nil {
					data = titledPNG(img, title)
					h := sha256.Sum256(data)
					sum = hex.EncodeToString(h[:])
				}
				p.mu.Lock()
				p.tried++
				p.sent[title] = sum
				p.hashes[sum] = true
				p.inflight++
				p.mu.Unlock()
				t0 := time.Now()
				err := postAs(c, d.url, title, data)
				p.mu.Lock()
				p.inflight--
				if err == nil {
					p.acked[title] = sum
					p.lastAck = time.Now()
				} else {
					p.failures = append(p.failures, err.Error())
					p.failedAt = append(p.failedAt, t0)
				}
				p.mu.Unlock()
				if err != nil {
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	t.Cleanup(p.stop)
	return p
}

// failedWithin is the span, from t on, in which posts that failed began.
func (p *posters) failedWithin(t time.Time) string {
	if len(p.failedAt) == 0 {
		return "none failed"
	}
	return fmt.Sprintf("failed posts began from %s to %s after", p.failedAt[0].Sub(t).Round(10*time.Millisecond), p.failedAt[len(p.failedAt)-1].Sub(t).Round(10*time.Millisecond))
}

// busy is the number of posts under way.
func (p *posters) busy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inflight
}

// ackedAfter reports whether the site acknowledged a post after t.
func (p *posters) ackedAfter(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastAck.After(t)
}

func (p *posters) stop() {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	p.wg.Wait()
}

// lost lists the acknowledged titles that stored lacks.
func (p *posters) lost(stored map[string]string) []string {
	var lost []string
	for title := range p.acked {
		if _, ok := stored[title]; !ok {
			lost = append(lost, title)
		}
	}
	slices.Sort(lost)
	return lost
}

// postAs posts as a visitor with client c: the form for its token, then
// the post. Only a 303 back to / is success.
func postAs(c *http.Client, url, title string, img []byte) error {
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("GET / for the form: %w", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	token := csrfField.FindSubmatch(page)
	if token == nil {
		return fmt.Errorf("GET / for the form: %s without a CSRF token", resp.Status)
	}
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.WriteField("csrf", string(token[1]))
	w.WriteField("title", title)
	w.WriteField("body", "posted by the fault drill")
	if img != nil {
		fw, _ := w.CreateFormFile("image", "drill.png")
		fw.Write(img)
	}
	w.Close()
	resp, err = c.Post(url+"posts", w.FormDataContentType(), &buf)
	if err != nil {
		return fmt.Errorf("POST /posts: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("POST /posts: %s: %.120s", resp.Status, strings.Join(strings.Fields(string(body)), " "))
	}
	return nil
}

// outsideClient is a visitor's browser in the namespace ns: its own
// cookies, and redirects left to the caller.
func outsideClient(t *testing.T, ns string) *http.Client {
	t.Helper()
	h, err := netns.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netns.Do(h, func() (err error) {
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: 1,
	}
	t.Cleanup(tr.CloseIdleConnections)
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// noisePNG is a w×h PNG of random pixels, which no compression shrinks.
func noisePNG(w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		for x := range w {
			v := r.Uint32()
			img.SetNRGBA(x, y, color.NRGBA{uint8(v), uint8(v >> 8), uint8(v >> 16), 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// titledPNG is img with a tEXt chunk that holds title before its IEND
// chunk, so that every post's image has bytes of its own.
func titledPNG(img []byte, title string) []byte {
	const iend = 12 // length, type, CRC
	data := append([]byte("Title\x00"), title...)
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	chunk = append(chunk, "tEXt"...)
	chunk = append(chunk, data...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	out := slices.Concat(img[:len(img)-iend], chunk, img[len(img)-iend:])
	return out
}

// uploadsDir is where the storage node keeps the site's uploads.
const uploadsDir = "/var/lib/bulkhead/site/uploads"

// uploadWatch GETs, through the edge, every upload that appears on
// storage until it has answered once in full, and keeps the answers that
// were neither a 404 nor the bytes of an image a visitor sent.
type uploadWatch struct {
	stopc   chan struct{}
	done    chan struct{}
	checks  int
	partial []string
}

func (d *drill) watchUploads(t *testing.T, p *posters) *uploadWatch {
	t.Helper()
	c := outsideClient(t, d.ns)
	w := &uploadWatch{stopc: make(chan struct{}), done: make(chan struct{})}
	whole := map[string]bool{}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stopc:
				return
			case <-time.After(300 * time.Millisecond):
			}
			out, err := d.s.in("storage", "ls", "-1", uploadsDir)
			if err != nil {
				continue // storage may be restarting
			}
			for _, name := range strings.Fields(out) {
				if whole[name] || strings.HasPrefix(name, ".") {
					continue
				}
				code, sum, err := getUpload(c, d.url, name)
				if err != nil {
					continue
				}
				w.checks++
				p.mu.Lock()
				known := p.hashes[sum]
				p.mu.Unlock()
				switch {
				case code == http.StatusOK && known:
					whole[name] = true
				case code == http.StatusOK:
					w.partial = append(w.partial, fmt.Sprintf("/uploads/%s: 200 with sha256 %s", name, sum))
				case code != http.StatusNotFound:
					w.partial = append(w.partial, fmt.Sprintf("/uploads/%s: %d", name, code))
				}
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *uploadWatch) stop() {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	<-w.done
}

// getUpload GETs /uploads/name and returns the status and the sha256 of
// the body.
func getUpload(c *http.Client, url, name string) (int, string, error) {
	resp, err := c.Get(url + "uploads/" + name)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return 0, "", err
	}
	return resp.StatusCode, hex.EncodeToString(h.Sum(nil)), nil
}

// checkUploads checks, once the uploads have stopped, that every post in
// the database that carries an image is served with exactly the bytes
// its visitor sent, and that every file under a name the static node
// serves is an image a visitor sent in full. It returns the acknowledged
// uploads that are missing and the files that are not whole.
func (d *drill) checkUploads(t *testing.T, p *posters) (lost, partial int) {
	t.Helper()
	stored := d.stored(t, "storage")
	for _, title := range p.lost(stored) {
		t.Errorf("acknowledged upload %q is not in the database", title)
		lost++
	}
	c := outsideClient(t, d.ns)
	for title, name := range stored {
		want, ok := p.sent[title]
		if !ok || want == "" || name == "" {
			t.Errorf("post %q in the database: image %q, sent %v with sha256 %q", title, name, ok, want)
			continue
		}
		// The static node may have looked the name up before it existed.
		var code int
		var sum string
		hosttest.Eventually(t, 30*time.Second, "/uploads/"+name+" served", func() bool {
			var err error
			code, sum, err = getUpload(c, d.url, name)
			return err == nil && code != http.StatusNotFound
		})
		if code != http.StatusOK || sum != want {
			_, acked := p.acked[title]
			t.Errorf("post %q (acknowledged %v): GET /uploads/%s = %d with sha256 %s, want 200 with %s", title, acked, name, code, sum, want)
			if _, ok := p.acked[title]; ok {
				lost++
			} else {
				partial++
			}
		}
	}
	// What storage holds: whole images under served names; half-written
	// ones only under hidden names, which the static node refuses.
	out, err := d.s.in("storage", "find", uploadsDir, "-maxdepth", "1", "-type", "f", "-exec", "sha256sum", "{}", "+")
	if err != nil {
		t.Fatalf("list %s on storage: %v\n%s", uploadsDir, err, out)
	}
	referenced := map[string]bool{}
	for _, name := range stored {
		referenced[name] = true
	}
	var orphans, hidden int
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		sum, path, ok := strings.Cut(l, "  ")
		if !ok {
			continue
		}
		name := filepath.Base(path)
		if strings.HasPrefix(name, ".") {
			hidden++
			if code, _, err := getUpload(c, d.url, name); err != nil || code == http.StatusOK {
				t.Errorf("GET /uploads/%s, a file being written: %d %v; want it refused", name, code, err)
			}
			continue
		}
		if !p.hashes[sum] {
			t.Errorf("storage holds uploads/%s, whose bytes (sha256 %s) no visitor sent: a partial upload under a served name", name, sum)
			partial++
		}
		if !referenced[name] {
			orphans++
		}
	}
	t.Logf("storage holds %d images of %d posts, %d that no post names, %d half-written under hidden names", len(referenced), len(stored), orphans, hidden)
	return lost, partial
}
