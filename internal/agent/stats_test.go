package agent

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/service"
)

// TestStatsMemcached: the agent serves a real memcached's stats as
// metrics, which follow what clients did; a memcached that does not
// answer is memcached_up 0 and nothing else.
func TestStatsMemcached(t *testing.T) {
	_, err := exec.LookPath("memcached")
	hosttest.Require(t, err == nil, "memcached is not installed (apt-get install memcached)")
	mc := freeAddr(t)
	host, port, _ := net.SplitHostPort(mc)
	argv := []string{"memcached", "-l", host, "-p", port, "-U", "0", "-m", "8"}
	if os.Geteuid() == 0 {
		// memcached refuses to run as root without -u.
		argv = append(argv, "-u", "memcache")
	}
	addr := freeAddr(t)
	r := start(t, Config{Metrics: addr, Services: []service.Service{
		{Name: "memcached", Argv: argv, Ready: []string{mc}, Stats: &service.Stats{Format: "memcached", Addr: mc}},
	}})
	hosttest.Eventually(t, patience, "memcached ready", func() bool { return r.service(t, "memcached").Ready })

	conn, err := net.Dial("tcp", mc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	say := func(cmd, want string) {
		t.Helper()
		if _, err := conn.Write([]byte(cmd)); err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		for !strings.HasSuffix(got.String(), want) {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("%q: %v after %q", cmd, err, got.String())
			}
			got.WriteString(line)
		}
	}
	say("set k 0 0 5\r\nhello\r\n", "STORED\r\n")
	say("get k\r\n", "END\r\n")
	say("get k\r\n", "END\r\n")
	say("get nothing\r\n", "END\r\n")

	fams := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"memcached_up", nil, 1},
		{"memcached_current_items", nil, 1},
		{"memcached_limit_bytes", nil, 8 << 20},
		{"memcached_commands_total", []string{"command", "get", "status", "hit"}, 2},
		{"memcached_commands_total", []string{"command", "get", "status", "miss"}, 1},
		{"memcached_commands_total", []string{"command", "set", "status", "hit"}, 1},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(t, fams, "memcached_current_connections"); got < 1 {
		t.Errorf("memcached_current_connections = %v with this test's connection open", got)
	}

	dead := freeAddr(t)
	addr = freeAddr(t)
	start(t, Config{Metrics: addr, Services: []service.Service{
		{Name: "idle", Argv: []string{"sleep", "1000"}, Stats: &service.Stats{Format: "memcached", Addr: dead}},
	}})
	fams = scrape(t, addr)
	if got := value(t, fams, "memcached_up"); got != 0 {
		t.Errorf("memcached_up = %v with nothing on %s", got, dead)
	}
	if fams["memcached_current_items"] != nil {
		t.Errorf("figures of a memcached that did not answer: %v", fams["memcached_current_items"])
	}
}

// phpfpmStatus is php-fpm 8.2's status page with ?json, as its pool
// answers it.
const phpfpmStatus = `{"pool":"app","process manager":"dynamic","start time":1764530000,"start since":42,` +
	`"accepted conn":17,"listen queue":1,"max listen queue":3,"listen queue len":511,"idle processes":2,` +
	`"active processes":1,"total processes":3,"max active processes":2,"max children reached":4,"slow requests":0}`

// TestStatsPHPFPM: the agent serves php-fpm's status as metrics; a status
// page that fails is phpfpm_up 0 and nothing else.
func TestStatsPHPFPM(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/fpm-status" || r.URL.RawQuery != "json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(phpfpmStatus))
	}))
	defer srv.Close()

	for _, c := range []struct {
		url string
		up  float64
	}{
		{srv.URL + "/fpm-status?json", 1},
		{srv.URL + "/elsewhere?json", 0},
	} {
		addr := freeAddr(t)
		start(t, Config{Metrics: addr, Services: []service.Service{
			{Name: "php-fpm", Argv: []string{"sleep", "1000"}, Stats: &service.Stats{Format: "php-fpm", URL: c.url}},
		}})
		fams := scrape(t, addr)
		if got := value(t, fams, "phpfpm_up"); got != c.up {
			t.Fatalf("%s: phpfpm_up = %v, want %v", c.url, got, c.up)
		}
		if c.up == 0 {
			if fams["phpfpm_accepted_connections_total"] != nil {
				t.Errorf("figures of a status page that failed")
			}
			continue
		}
		for _, m := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"phpfpm_accepted_connections_total", nil, 17},
			{"phpfpm_listen_queue", nil, 1},
			{"phpfpm_max_listen_queue", nil, 3},
			{"phpfpm_listen_queue_length", nil, 511},
			{"phpfpm_processes", []string{"state", "idle"}, 2},
			{"phpfpm_processes", []string{"state", "active"}, 1},
			{"phpfpm_max_active_processes", nil, 2},
			{"phpfpm_max_children_reached_total", nil, 4},
			{"phpfpm_slow_requests_total", nil, 0},
		} {
			if got := value(t, fams, m.name, m.labels...); got != m.want {
				t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
			}
		}
	}
}

// TestParseStats: answers that are not the daemons' are errors, never
// half-read figures.
func TestParseStats(t *testing.T) {
	for _, in := range []string{"", "STAT pid 1\r\n", "ERROR\r\n", "STAT a\r\nEND\r\n"} {
		if got, err := parseMemcached(strings.NewReader(in)); err == nil {
			t.Errorf("parseMemcached(%q) = %v, want an error", in, got)
		}
	}
	got, err := parseMemcached(strings.NewReader("STAT pid 12\r\nSTAT version 1.6.18\r\nSTAT rusage_user 0.5\r\nEND\r\n"))
	if err != nil || len(got) != 2 || got["pid"] != 12 || got["rusage_user"] != 0.5 {
		t.Errorf("parseMemcached = %v, %v; want pid and rusage_user", got, err)
	}
	for _, in := range []string{"", "<html>", `{"pool":"app"}`, `[1]`} {
		if got, err := parsePHPFPM(strings.NewReader(in)); err == nil {
			t.Errorf("parsePHPFPM(%q) = %v, want an error", in, got)
		}
	}
}
