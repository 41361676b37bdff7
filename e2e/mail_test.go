package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// The smarthost of TestMailTier: a real SMTP server (Debian's aiosmtpd,
// storing what it gets in a maildir) in a namespace the test makes,
// joined to the host by a veth on 10.201.0.0/30.
const (
	smartNetns = "bhmail-smart"
	smartHost  = "bhmail-h" // the veth's host end
	smartAddr  = "10.201.0.2"
	smartPort  = "2525"
)

// mailTiers is a lean stack with the mail tier: one app node, and the
// tiers the sample site needs behind it.
const mailTiers = `tiers:
  edge: {}
  app: {replicas: 1}
  cache: {}
  db: {}
  storage: {}
  mail: {}
`

// mailPage sends one mail with PHP's mail(), as an application would.
const mailPage = `<?php
$ok = mail('someone@example.com', (string) ($_GET['subject'] ?? 'hello'), "A line of the body.\n",
    ['From' => 'site@example.com', 'X-Bulkhead-Test' => 'mail-tier']);
echo $ok ? "sent\n" : "not sent\n";
`

// TestMailTier (#17) brings up stack e2email (10.200, 19150) with the mail
// tier and a smarthost in a namespace of the test's own: mail() on the app
// node arrives there through the relay, from the host's address; verify
// passes and proves the relay's egress; only the app node reaches the relay
// and only the relay reaches the smarthost. Without a smarthost the relay
// holds the mail, and 'bulkhead mail list' shows it. Down leaves no rule,
// route or namespace behind.
func TestMailTier(t *testing.T) {
	hosttest.RequireRoot(t)
	_, err := os.Stat("/usr/sbin/postfix")
	hosttest.Require(t, err == nil, "postfix (the mail tier's relay)")
	maildir := smarthost(t)

	s := newStack(t, "e2email", 200, 19150, mailTiers)
	writeFile(t, filepath.Join(s.dir, "site", "mail.php"), mailPage)
	withSmarthost := string(must(os.ReadFile(filepath.Join(s.dir, "bulkhead.yaml")))) +
		"mail:\n  smarthost: " + smartAddr + ":" + smartPort + "\n  tls: none\n"
	writeFile(t, filepath.Join(s.dir, "bulkhead.yaml"), withSmarthost)
	s.run("up")

	var p struct {
		Mail *struct {
			Node  string `json:"node"`
			Relay string `json:"relay"`
		} `json:"mail"`
		Egress []struct {
			Name   string `json:"name"`
			Node   string `json:"node"`
			Target string `json:"target"`
		} `json:"egress"`
	}
	if err := json.Unmarshal([]byte(s.json("plan", "--output", "json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Mail == nil || len(p.Egress) != 1 || p.Egress[0].Node != "mail" || p.Egress[0].Target != smartAddr+":"+smartPort {
		t.Fatalf("plan's mail %+v and egress %+v; want the mail node relaying to %s:%s", p.Mail, p.Egress, smartAddr, smartPort)
	}
	relay := p.Mail.Relay

	// mail() through the edge arrives at the smarthost, from the host's
	// address: no stack address leaves the host.
	if got := s.get(t, "/mail.php?subject=through+the+relay"); got != "200 sent" {
		t.Fatalf("GET /mail.php = %q; want 200 sent", got)
	}
	var msg string
	hosttest.Eventually(t, time.Minute, "the smarthost receiving the mail", func() bool {
		msg = findMail(t, maildir, "Subject: through the relay")
		return msg != ""
	})
	for _, want := range []string{
		"To: someone@example.com", "From: site@example.com", "X-Bulkhead-Test: mail-tier",
		"(Postfix)", // the relay's Received line
		"X-Peer: ('10.201.0.1',", "X-RcptTo: someone@example.com", "A line of the body.",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the smarthost's copy lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "10.200.") && strings.Contains(msg, "X-Peer: ('10.200.") {
		t.Errorf("a stack address reached the smarthost:\n%s", msg)
	}

	// verify passes, with the egress proved from every node.
	v, out, err := s.verify(t)
	if err != nil || !v.Pass {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if !hasCheck(v, "egress only along its flows") {
		t.Errorf("verify shows no passing egress check:\n%s", out)
	}
	text := s.run("verify")
	if !strings.Contains(text, "smarthost: mail reaches "+smartAddr+":"+smartPort) {
		t.Errorf("verify's text does not show the egress:\n%s", text)
	}

	// Only app nodes reach the relay; only the relay reaches the smarthost.
	reaches := func(node, addr string) bool {
		host, port, _ := strings.Cut(addr, ":")
		_, err := s.in(node, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port)
		return err == nil
	}
	smart := smartAddr + ":" + smartPort
	for _, c := range []struct {
		node, addr string
		want       bool
	}{
		{"app-1", relay, true}, {"db", relay, false}, {"cache", relay, false}, {"edge", relay, false},
		{"mail", smart, true}, {"app-1", smart, false}, {"db", smart, false}, {"edge", smart, false},
	} {
		if got := reaches(c.node, c.addr); got != c.want {
			t.Errorf("%s reaches %s: %v, want %v", c.node, c.addr, got, c.want)
		}
	}

	// Without a smarthost, the relay holds the mail and nothing leaves.
	writeFile(t, filepath.Join(s.dir, "bulkhead.yaml"), strings.Split(withSmarthost, "mail:\n  smarthost")[0])
	s.run("up")
	if got := s.get(t, "/mail.php?subject=held+here"); got != "200 sent" {
		t.Fatalf("GET /mail.php = %q; want 200 sent", got)
	}
	var queue []struct {
		ID         string `json:"queue_id"`
		Queue      string `json:"queue_name"`
		Sender     string `json:"sender"`
		Recipients []struct {
			Address string `json:"address"`
		} `json:"recipients"`
	}
	hosttest.Eventually(t, 30*time.Second, "the held mail in 'bulkhead mail list'", func() bool {
		if err := json.Unmarshal([]byte(s.json("mail", "list", "--output", "json")), &queue); err != nil {
			t.Fatal(err)
		}
		return len(queue) == 1
	})
	if q := queue[0]; q.Queue != "hold" || q.Sender != "site@example.com" || len(q.Recipients) != 1 || q.Recipients[0].Address != "someone@example.com" {
		t.Errorf("queue = %+v; want one held message from site@example.com to someone@example.com", queue)
	}
	list := s.run("mail", "list")
	if !strings.Contains(list, "held: the stack has no smarthost") || !strings.Contains(list, queue[0].ID) {
		t.Errorf("mail list:\n%s", list)
	}
	if show := s.run("mail", "show", queue[0].ID); !strings.Contains(show, "Subject: held here") {
		t.Errorf("mail show %s:\n%s", queue[0].ID, show)
	}
	if findMail(t, maildir, "Subject: held here") != "" {
		t.Errorf("the held mail reached the smarthost")
	}
	v, out, err = s.verify(t)
	if err != nil || !v.Pass {
		t.Fatalf("verify without a smarthost: %v\n%s", err, out)
	}
	if reaches("mail", smart) {
		t.Errorf("the relay reaches the smarthost with none in the stack file")
	}

	// Down leaves nothing of the egress: no rule, no forwarding, no route.
	s.run("down", "--purge")
	if out, _ := exec.Command("nft", "list", "ruleset").Output(); strings.Contains(string(out), smartAddr) {
		t.Errorf("nft rules naming the smarthost are left:\n%s", grep(string(out), smartAddr))
	}
	if out, _ := exec.Command("ip", "route", "show", "table", "all").Output(); strings.Contains(string(out), "10.200.") {
		t.Errorf("routes of the stack are left:\n%s", grep(string(out), "10.200."))
	}
	s.assertGone()
}

// smarthost starts the test's SMTP server in its own namespace and
// returns the maildir it stores mail in. All of it goes at cleanup.
func smarthost(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3" // Debian's, which has python3-aiosmtpd
	out, err := exec.Command(py, "-c", "import aiosmtpd").CombinedOutput()
	hosttest.Require(t, err == nil, "python3-aiosmtpd, the test's smarthost (%s)", strings.TrimSpace(string(out)))
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", smartNetns).Run() // a crashed run's
	exec.Command("ip", "link", "del", smartHost).Run()
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", smartNetns).Run()
		exec.Command("ip", "link", "del", smartHost).Run()
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), smartNetns) {
			t.Errorf("namespace %s is left", smartNetns)
		}
	})
	ip("netns", "add", smartNetns)
	ip("link", "add", smartHost, "type", "veth", "peer", "name", "smart0", "netns", smartNetns)
	ip("addr", "add", "10.201.0.1/30", "dev", smartHost)
	ip("link", "set", smartHost, "up")
	ip("-n", smartNetns, "addr", "add", smartAddr+"/30", "dev", "smart0")
	ip("-n", smartNetns, "link", "set", "smart0", "up")
	ip("-n", smartNetns, "link", "set", "lo", "up")

	// aiosmtpd makes the maildir's folders only when it makes the maildir.
	maildir := filepath.Join(t.TempDir(), "maildir")
	cmd := exec.Command("ip", "netns", "exec", smartNetns, py, "-m", "aiosmtpd", "-n",
		"-l", smartAddr+":"+smartPort, "-c", "aiosmtpd.handlers.Mailbox", maildir)
	log, err := os.Create(filepath.Join(t.TempDir(), "smarthost.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	hosttest.Eventually(t, 30*time.Second, "the smarthost listening", func() bool {
		return exec.Command("ip", "netns", "exec", smartNetns, "bash", "-c", "exec 3<>/dev/tcp/"+smartAddr+"/"+smartPort).Run() == nil
	})
	return maildir
}

// findMail returns the first message in maildir that holds want.
func findMail(t *testing.T, maildir, want string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(maildir, "new", "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), want) {
			return string(data)
		}
	}
	return ""
}

func hasCheck(v verifyJSON, name string) bool {
	for _, c := range v.Checks {
		if c.Name == name && c.OK {
			return true
		}
	}
	return false
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
