package render_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// cacheWantMB is the item memory the cache gets: three quarters of the
// node's limit, at least 16 MB.
func cacheWantMB(n *plan.Node) int64 { return max(n.Memory*3/4/(1<<20), 16) }

// cacheAddr is the cache node's address on the app's flow to it.
func cacheAddr(t *testing.T, p *plan.Plan) string {
	t.Helper()
	cache := p.Role(spec.RoleCache)[0]
	for _, peer := range p.Peers(p.Role(spec.RoleApp)[0]) {
		if peer.Node == cache {
			return cache.Addr(peer.Flow.Network).String()
		}
	}
	t.Fatal("no app -> cache flow")
	return ""
}

// TestCacheMemcachedServes starts memcached with the rendered flags, on
// loopback instead of the node's address, and asks it for its stats.
func TestCacheMemcachedServes(t *testing.T) {
	p, n, _ := renderRole(t, "default", spec.RoleCache)
	bin := requireTool(t, "memcached")
	node := p.Role(spec.RoleCache)[0]
	if len(n.Services) != 1 || n.Services[0].Name != "memcached" {
		t.Fatalf("services = %+v, want memcached alone", n.Services)
	}
	argv := slices.Clone(n.Services[0].Argv)
	flag := func(name string) []string {
		var vals []string
		for i := 0; i+1 < len(argv); i++ {
			if argv[i] == name {
				vals = append(vals, argv[i+1])
			}
		}
		return vals
	}
	if got, want := flag("-l"), []string{cacheAddr(t, p)}; !slices.Equal(got, want) {
		t.Errorf("memcached -l %v, want %v", got, want)
	}
	if got := flag("-U"); !slices.Equal(got, []string{"0"}) {
		t.Errorf("memcached -U %v, want 0 (no UDP)", got)
	}
	wantMB := cacheWantMB(node)
	if got := flag("-m"); !slices.Equal(got, []string{strconv.FormatInt(wantMB, 10)}) {
		t.Errorf("memcached -m %v, want %d", got, wantMB)
	}

	port := strconv.Itoa(freePort(t, "127.0.0.1"))
	argv[0] = bin
	for i := 0; i+1 < len(argv); i++ {
		switch argv[i] {
		case "-l":
			argv[i+1] = "127.0.0.1"
		case "-p":
			argv[i+1] = port
		}
	}
	d := startDaemon(t, argv...)
	pid := d.pid
	d.waitDial(t, "127.0.0.1:"+port)
	cacheUser(t, pid, "memcache")

	conn, r := cacheDial(t, "127.0.0.1:"+port)
	stats := func(cmd string) map[string]string {
		fmt.Fprintf(conn, "%s\r\n", cmd)
		out := map[string]string{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "END" {
				return out
			}
			f := strings.SplitN(line, " ", 3)
			if len(f) != 3 || f[0] != "STAT" {
				t.Fatalf("%s: unexpected line %q", cmd, line)
			}
			out[f[1]] = f[2]
		}
	}
	st := stats("stats")
	if got, want := st["limit_maxbytes"], strconv.FormatInt(wantMB<<20, 10); got != want {
		t.Errorf("limit_maxbytes = %q, want %s", got, want)
	}
	if st["pid"] != strconv.Itoa(pid) {
		t.Errorf("stats answered by pid %q, not the memcached started (%d)", st["pid"], pid)
	}
	if got := stats("stats settings")["udpport"]; got != "0" {
		t.Errorf("udpport = %q, want 0", got)
	}
}

// TestCacheRedisServes starts redis with the rendered config and service,
// bound to loopback instead of the node's address, and asks it to PING and
// for its memory limit.
func TestCacheRedisServes(t *testing.T) {
	p, n, l := renderRole(t, "alt", spec.RoleCache)
	requireTool(t, "redis-server")
	requireTool(t, "setpriv")
	node := p.Role(spec.RoleCache)[0]
	conf := string(fileOf(t, n, "redis.conf").Data)
	if m := regexp.MustCompile(`(?m)^bind (.*)$`).FindAllStringSubmatch(conf, -1); len(m) != 1 || m[0][1] != cacheAddr(t, p) {
		t.Errorf("redis binds %v, want only %s", m, cacheAddr(t, p))
	}
	for _, line := range []string{"protected-mode no", "daemonize no", `save ""`, "maxmemory-policy allkeys-lru"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).MatchString(conf) {
			t.Errorf("redis.conf lacks %q", line)
		}
	}
	// The alt stack has a monitor: redis's exporter, then redis.
	if len(n.Services) != 2 || n.Services[0].Name != "redis-exporter" || n.Services[1].Name != "redis" {
		t.Fatalf("services = %+v, want redis's exporter, then redis", n.Services)
	}
	if argv, want := n.Services[0].Argv, "-redis.addr=redis://"+cacheAddr(t, p)+":6379"; !slices.Contains(argv, want) {
		t.Errorf("exporter argv %q lacks %q", argv, want)
	}
	svc := n.Services[1]

	logsOnFailure(t, l)
	mustRun(t, svc.Setup...)
	if _, err := os.Stat(svc.Creates); err != nil {
		t.Fatalf("setup did not create %s: %v", svc.Creates, err)
	}
	port := strconv.Itoa(freePort(t, "127.0.0.1"))
	d := startDaemon(t, append(slices.Clone(svc.Argv), "--bind", "127.0.0.1", "--port", port)...)
	pid := d.pid
	d.waitDial(t, "127.0.0.1:"+port)
	cacheUser(t, pid, "redis")

	conn, r := cacheDial(t, "127.0.0.1:"+port)
	if got := redisDo(t, conn, r, "PING"); !slices.Equal(got, []string{"PONG"}) {
		t.Errorf("PING = %q, want PONG", got)
	}
	want := strconv.FormatInt(cacheWantMB(node)<<20, 10)
	if got := redisDo(t, conn, r, "CONFIG", "GET", "maxmemory"); !slices.Equal(got, []string{"maxmemory", want}) {
		t.Errorf("CONFIG GET maxmemory = %q, want %s", got, want)
	}
	if got := redisDo(t, conn, r, "CONFIG", "GET", "dir"); len(got) != 2 || got[1] != l.Data {
		t.Errorf("CONFIG GET dir = %q, want %s", got, l.Data)
	}
	// The pid file proves that the setup made its directory redis's.
	pidFile := filepath.Join(svc.Creates, "redis.pid")
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("%s = %q (%v), want %d", pidFile, b, err, pid)
	}
}

// cacheDial connects to a cache daemon for the rest of the test. The
// deadline bounds a hang on a reply; it does not measure speed.
func cacheDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitDeadline))
	return conn, bufio.NewReader(conn)
}

// cacheUser checks that pid runs as name, not as root.
func cacheUser(t *testing.T, pid int, name string) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(b))
	if m == nil || m[1] != u.Uid || m[2] != u.Uid {
		t.Errorf("pid %d runs as uid %v, want %s (%s)", pid, m, name, u.Uid)
	}
}

// redisDo sends one command and returns its reply, flattened to strings.
func redisDo(t *testing.T, conn net.Conn, r *bufio.Reader, args ...string) []string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	var read func() []string
	read = func() []string {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch line[0] {
		case '+', ':':
			return []string{line[1:]}
		case '-':
			t.Fatalf("%s: %s", args, line[1:])
		case '$':
			n, _ := strconv.Atoi(line[1:])
			if n < 0 {
				return []string{""}
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r, buf); err != nil {
				t.Fatalf("%s: %v", args, err)
			}
			return []string{string(buf[:n])}
		case '*':
			n, _ := strconv.Atoi(line[1:])
			var out []string
			for range n {
				out = append(out, read()...)
			}
			return out
		}
		t.Fatalf("%s: unexpected reply %q", args, line)
		return nil
	}
	return read()
}

// TestMemcachedConnections: memcached's connection limit has room for two
// connections per PHP worker of the app pool (the site keeps one, a session
// opens another), from its default of 1024 up.
func TestMemcachedConnections(t *testing.T) {
	for _, tc := range []struct{ apps, want int }{{2, 1024}, {100, 2048}} {
		src := fmt.Sprintf("name: conns\nnetworks:\n  private: 10.9.0.0/16\n  public: 10.10.0.0/28\ntiers:\n  edge: {}\n  cache: {}\n  db: {}\n  app:\n    replicas: %d\n", tc.apps)
		st, err := spec.Parse("bulkhead.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		p, err := plan.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		n, err := render.RenderNode(p, p.Node("cache"), render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)})
		if err != nil {
			t.Fatal(err)
		}
		argv := n.Services[0].Argv
		i := slices.Index(argv, "-c")
		if i < 0 || i+1 == len(argv) || argv[i+1] != strconv.Itoa(tc.want) {
			t.Errorf("%d app nodes: memcached %v, want -c %d", tc.apps, argv, tc.want)
		}
	}
}
