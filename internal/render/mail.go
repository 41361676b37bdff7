package render

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Files of the mail relay's config directory, which is the node's Conf:
// postfix -c reads main.cf and master.cf there.
const (
	mailCAFile   = "mail-ca.pem"
	mailPassFile = "sasl_passwd" // under SecretsDir
)

// MailQueue is the relay's queue directory under the node's Data: held
// and deferred mail outlives a restart of the node.
const MailQueue = "postfix"

// PostqueueArgv is how "bulkhead mail list" reads the relay's queue,
// inside the mail node: one JSON object per message.
func PostqueueArgv(l Layout) []string { return []string{"postqueue", "-c", l.Conf, "-j"} }

// PostsuperArgv runs postsuper on the relay's queue with args (-d ID
// deletes a message, -H ALL releases what is held).
func PostsuperArgv(l Layout, args ...string) []string {
	return append([]string{"postsuper", "-c", l.Conf}, args...)
}

// FlushArgv asks the relay to try every queued message now.
func FlushArgv(l Layout) []string { return []string{"postqueue", "-c", l.Conf, "-f"} }

// mailPostfix runs Postfix as the stack's relay. It listens on the node's
// address that the app nodes reach, and takes mail from their addresses
// only (mynetworks; the firewall already drops everyone else). With a
// smarthost it relays everything there; without one every message goes to
// the hold queue, where "bulkhead mail" shows it and nothing sends it.
// It delivers nothing locally and resolves no names.
func mailPostfix(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	m := p.Mail
	if m == nil || m.Node != n.Name {
		return nil, nil, fmt.Errorf("the plan routes no mail through %s", n.Name)
	}
	l := in.Layout
	var clients []string
	for _, f := range p.Flows {
		if f.To != n.Tier || f.Port.Number != int(m.Relay.Port()) {
			continue
		}
		for _, c := range p.Tier(f.From) {
			clients = append(clients, in.client(c, f.Network).String())
		}
	}
	if len(clients) == 0 {
		return nil, nil, fmt.Errorf("no app node has a flow to %s's port %d", n.Name, m.Relay.Port())
	}
	slices.Sort(clients)
	clients = slices.Compact(clients)
	queue := path.Join(l.Data, MailQueue)

	var b strings.Builder
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	b.WriteString("# Postfix as the stack's mail relay; written by bulkhead.\n")
	set("compatibility_level", "3.6")
	set("queue_directory", queue)
	set("data_directory", path.Join(l.Data, "postfix-data"))
	// Debian keeps postfix-files, which the start-up check reads, here.
	set("meta_directory", "/etc/postfix")
	set("myhostname", n.Name+"."+p.Domain)
	set("myorigin", "$mydomain")
	set("mydomain", p.Domain)
	listen := m.Relay.Addr().String()
	if in.Cluster != nil {
		listen = "all" // the pod's one interface, as in.bind
	}
	set("inet_interfaces", listen)
	set("inet_protocols", "ipv4")
	set("maillog_file", "/dev/stdout")
	set("biff", "no")
	// PHP's mail() writes no Message-ID or Date; smarthosts expect both.
	set("always_add_missing_headers", "yes")
	b.WriteString("\n# Nothing is delivered here: no local mailboxes, no aliases.\n")
	set("mydestination", "")
	set("local_recipient_maps", "")
	set("local_transport", "error:5.1.1 this relay delivers nothing locally")
	set("alias_maps", "")
	set("alias_database", "")
	set("relay_domains", "")
	b.WriteString("\n# Only the app nodes may send, and only through this relay.\n")
	set("mynetworks_style", "host")
	set("mynetworks", strings.Join(clients, " "))
	set("smtpd_client_restrictions", "permit_mynetworks, reject")
	set("smtpd_relay_restrictions", "permit_mynetworks, reject")
	set("smtpd_recipient_restrictions", "permit_mynetworks, reject")
	b.WriteString("\n# No node resolves names: the smarthost is an address.\n")
	set("smtp_dns_support_level", "disabled")
	set("smtp_host_lookup", "native")

	var files []File
	if m.Hold() {
		b.WriteString("\n# No smarthost: every message waits in the hold queue, and nothing\n# leaves the stack. 'bulkhead mail list' shows it.\n")
		set("relayhost", "")
		set("smtpd_data_restrictions", "check_client_access static:HOLD")
		set("defer_transports", "smtp")
	} else {
		next := "[" + m.Smarthost.Addr().String() + "]:" + fmt.Sprint(m.Smarthost.Port())
		b.WriteString("\n# Everything goes to the smarthost, the stack's only way out.\n")
		set("relayhost", next)
		set("smtp_tls_loglevel", "1")
		switch m.TLS {
		case spec.TLSVerify:
			set("smtp_tls_security_level", "secure")
			set("smtp_tls_policy_maps", "inline:{ { "+next+" = secure match="+m.TLSName+" } }")
			set("smtp_tls_CAfile", l.conf(mailCAFile))
			files = append(files, File{Path: mailCAFile, Mode: 0o644, Data: in.Secrets.MailCA})
		default:
			set("smtp_tls_security_level", m.TLS)
		}
		if m.Username != "" {
			set("smtp_sasl_auth_enable", "yes")
			set("smtp_sasl_password_maps", "texthash:"+l.secret(mailPassFile))
			set("smtp_sasl_security_options", "noanonymous")
			set("smtp_sasl_tls_security_options", "noanonymous")
			files = append(files, File{Path: path.Join(SecretsDir, mailPassFile), Mode: 0o400,
				Data: []byte(next + " " + m.Username + ":" + in.Secrets.MailPassword + "\n")})
		}
	}
	files = append(files,
		File{Path: "main.cf", Mode: 0o644, Data: []byte(b.String())},
		File{Path: "master.cf", Mode: 0o644, Data: []byte(postfixMaster(in, m.Relay))})
	svc := service.Service{
		Name: "postfix",
		// start-fg checks the queue (creating what is missing) and keeps
		// the master in the foreground, logging to its stdout.
		Argv:    []string{"postfix", "-c", l.Conf, "start-fg"},
		Setup:   []string{"install", "-d", "-m", "0755", queue},
		Creates: queue,
	}
	return files, []service.Service{svc}, nil
}

// postfixMaster is master.cf: the SMTP server on the relay's address and
// the services it needs to queue and relay, none of them chrooted (a node
// has no CAP_SYS_CHROOT; the container is the jail). No pickup: nothing
// in the node submits mail locally.
func postfixMaster(in Input, relay netip.AddrPort) string {
	listen := relay.String()
	if in.Cluster != nil {
		listen = strconv.Itoa(int(relay.Port())) // any address
	}
	return `# service type  private unpriv  chroot  wakeup  maxproc command
` + listen + ` inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
}
