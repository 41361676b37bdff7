package netns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/netns"
)

// TestFabric builds a bridge and a namespace joined by a veth, twice (the
// second time must change nothing and fail nothing), checks the routes, and
// tears it down.
func TestFabric(t *testing.T) {
	hosttest.RequireRoot(t)
	ctx := context.Background()
	id := os.Getpid() % 10000
	br, ns, veth := fmt.Sprintf("bht%d-br", id), fmt.Sprintf("bhtest-fab-%d", id), fmt.Sprintf("bht%d-v", id)
	// 10.213.0.0/24 is given to the bridge before anything is sent: the
	// test's subnet can never fall through to the default route.
	t.Cleanup(func() {
		if err := netns.DeleteLink(ctx, veth); err != nil {
			t.Error(err)
		}
		if err := netns.DeleteLink(ctx, br); err != nil {
			t.Error(err)
		}
		if err := netns.Delete(ctx, ns); err != nil {
			t.Error(err)
		}
		if netns.LinkExists(br) || netns.LinkExists(veth) || netns.Exists(ns) {
			t.Error("something survived cleanup")
		}
	})
	for range 2 {
		if err := netns.AddBridge(ctx, br, "10.213.0.1/24", "bulkhead test"); err != nil {
			t.Fatal(err)
		}
		if err := netns.Add(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddVeth(ctx, netns.Veth{Host: veth, Bridge: br, Netns: ns, Name: "private", Addr: "10.213.0.2/24"}); err != nil {
			t.Fatal(err)
		}
	}
	// A pair that has drifted (host end down, the address gone) is put
	// right, not taken for ready.
	for _, args := range [][]string{{"link", "set", veth, "down"}, {"-n", ns, "addr", "flush", "dev", "private"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if err := netns.AddVeth(ctx, netns.Veth{Host: veth, Bridge: br, Netns: ns, Name: "private", Addr: "10.213.0.2/24"}); err != nil {
		t.Fatal(err)
	}
	if flags, err := os.ReadFile("/sys/class/net/" + veth + "/flags"); err != nil || !strings.HasSuffix(strings.TrimSpace(string(flags)), "3") {
		t.Errorf("host end's flags %q (%v): want it up again", flags, err)
	}
	if out, err := exec.Command("ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "private").Output(); err != nil || !strings.Contains(string(out), " 10.213.0.2/24 ") {
		t.Errorf("the namespace's end has %q (%v), want 10.213.0.2/24 back", out, err)
	}
	// A sysctl written from a thread inside the namespace is the
	// namespace's, and the host's stays as it was.
	const key, file = "net.ipv4.ip_unprivileged_port_start", "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	host, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Sysctl(ctx, ns, key, "777"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "cat", file).Output(); err != nil || strings.TrimSpace(string(out)) != "777" {
		t.Errorf("%s in %s is %q (%v), want 777", key, ns, out, err)
	}
	if now, err := os.ReadFile(file); err != nil || string(now) != string(host) {
		t.Errorf("the host's %s went from %q to %q (%v) when the namespace's was set", key, host, now, err)
	}
	if dev, err := netns.RouteDev(ctx, "", "10.213.0.200"); err != nil || dev != br {
		t.Errorf("host route to the subnet: dev %q, %v; want %s", dev, err, br)
	}
	if dev, err := netns.RouteDev(ctx, ns, "10.213.0.1"); err != nil || dev != "private" {
		t.Errorf("namespace route to the gateway: dev %q, %v", dev, err)
	}
	// No default route inside: the internet is unreachable, and asking
	// sends no packet.
	if _, err := netns.RouteDev(ctx, ns, "203.0.113.77"); !errors.Is(err, netns.ErrNoRoute) {
		t.Errorf("namespace route off the subnet: %v; want ErrNoRoute", err)
	}
}

// TestAddOwnedConcurrently makes owned namespaces from many goroutines
// while others enter namespaces on threads that end afterwards (Sysctl):
// the child that holds a new namespace must live until it is pinned, though
// it dies with the thread that forked it.
func TestAddOwnedConcurrently(t *testing.T) {
	hosttest.RequireRoot(t)
	ctx := context.Background()
	const n = 16
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bhtest-own-%d-%d", os.Getpid()%10000, i)
	}
	t.Cleanup(func() {
		for _, name := range names {
			if err := netns.DeleteOwned(ctx, name); err != nil {
				t.Error(err)
			}
		}
	})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			// Ids far above the blocks stacks take (see
			// driver/local/ids.go); nothing runs as them.
			if errs[i] = netns.AddOwned(ctx, name, netns.IDMap{Host: 0x70000000 + uint32(i)<<16, Size: 65536}); errs[i] == nil {
				errs[i] = netns.Sysctl(ctx, name, "net.ipv4.ip_unprivileged_port_start", "80")
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", names[i], err)
		}
	}
}

// TestNeighboursStayRight checks what a node's peers have cached of it and
// of the bridge: a node made again at its address (scaled in and out, a
// deploy's new node at a drained one's address) has the address's MAC, not
// a new one the peers' neighbour (ARP) entries do not know; and the
// bridge's MAC does not follow its ports. Otherwise a peer sends to a MAC
// nobody has until its entry expires: up to about eight seconds of lost
// packets (seen 2026-11-30: an up that added app nodes at the addresses of
// nodes it had removed waited that long for their first page).
func TestNeighboursStayRight(t *testing.T) {
	hosttest.RequireRoot(t)
	ctx := context.Background()
	id := os.Getpid() % 10000
	br, low := fmt.Sprintf("bht%d-nbr", id), fmt.Sprintf("bht%d-low", id)
	a, b := fmt.Sprintf("bhtest-nba-%d", id), fmt.Sprintf("bhtest-nbb-%d", id)
	va, vb := fmt.Sprintf("bht%d-na", id), fmt.Sprintf("bht%d-nb", id)
	// 10.213.0.0/24 is on the bridge before anything is sent.
	t.Cleanup(func() {
		for _, l := range []string{va, vb, low, br} {
			if err := netns.DeleteLink(ctx, l); err != nil {
				t.Error(err)
			}
		}
		for _, ns := range []string{a, b} {
			if err := netns.Delete(ctx, ns); err != nil {
				t.Error(err)
			}
		}
	})
	if err := netns.AddBridge(ctx, br, "10.213.0.1/24", "bulkhead test"); err != nil {
		t.Fatal(err)
	}
	node := func(ns, veth, addr string) {
		t.Helper()
		if err := netns.Add(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if err := netns.AddVeth(ctx, netns.Veth{Host: veth, Bridge: br, Netns: ns, Name: "private", Addr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// touch sends a SYN from a to addr, which resolves its MAC first; no
	// answer is needed.
	touch := func(addr string) {
		t.Helper()
		if err := netns.In(a, func() error {
			if c, err := net.DialTimeout("tcp", addr+":9", time.Second); err == nil {
				c.Close()
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// cached is what a holds for addr: its MAC, or "" when it holds none.
	cached := func(addr string) string {
		f := strings.Fields(ip("-n", a, "neigh", "show", addr))
		for i := range f[:max(len(f)-1, 0)] {
			if f[i] == "lladdr" {
				return f[i+1]
			}
		}
		return ""
	}
	mac := func(ns, link string) string {
		args := []string{"-o", "link", "show", link}
		if ns != "" {
			args = append([]string{"-n", ns}, args...)
		}
		f := strings.Fields(ip(args...))
		for i := range f[:len(f)-1] {
			if f[i] == "link/ether" {
				return f[i+1]
			}
		}
		t.Fatalf("no MAC for %s in %s", link, ns)
		return ""
	}
	node(a, va, "10.213.0.2/24")
	node(b, vb, "10.213.0.3/24")
	// A SYN's wait for the MAC may outlast the dial on a busy host: send
	// again until both are resolved.
	hosttest.Eventually(t, 20*time.Second, a+" resolving its peers", func() bool {
		touch("10.213.0.3")
		touch("10.213.0.1")
		return cached("10.213.0.3") != "" && cached("10.213.0.1") != ""
	})

	// b goes, and comes back at its address.
	ip("link", "delete", vb)
	if err := netns.Delete(ctx, b); err != nil {
		t.Fatal(err)
	}
	node(b, vb, "10.213.0.3/24")
	if got, want := cached("10.213.0.3"), mac(b, "private"); got != want {
		t.Errorf("%s caches %s for 10.213.0.3, which is now at %s", a, got, want)
	}

	// A port with a lower MAC than any joins the bridge.
	ip("link", "add", low, "address", "00:00:00:00:00:01", "type", "veth", "peer", "name", low+"p")
	ip("link", "set", low, "master", br)
	if got, want := cached("10.213.0.1"), mac("", br); got != want {
		t.Errorf("%s caches %s for the bridge's 10.213.0.1, which is now at %s", a, got, want)
	}
}
