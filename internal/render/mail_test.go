package render_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// TestMailPostfix: the relay takes mail only from the app nodes, on the
// address they reach it on; with a smarthost it relays there over the
// TLS and login the stack file asks for, and without one it holds
// everything; and Postfix's own postconf reads the config without a
// warning.
func TestMailPostfix(t *testing.T) {
	postconf := requireTool(t, "postconf")
	for _, c := range []struct {
		name, stack string
		hold        bool
		want        []string
	}{
		{"smarthost", "alt", false, []string{
			"relayhost = [192.0.2.25]:587\n",
			"smtp_tls_security_level = secure\n",
			"smtp_tls_policy_maps = inline:{ { [192.0.2.25]:587 = secure match=smtp.example.test } }\n",
			"smtp_sasl_auth_enable = yes\n",
		}},
		{"hold", "default", true, []string{
			"relayhost = \n",
			"smtpd_data_restrictions = check_client_access static:HOLD\n",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := loadPlan(t, c.stack)
			if c.hold {
				data := "tiers:\n  edge: {}\n  app: {replicas: 2}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  mail: {}\n"
				p = planFrom(t, []byte(data))
			}
			m := p.Role(spec.RoleMail)[0]
			n, l := writeNode(t, p, m.Name, testSecrets(p))
			main := string(fileOf(t, n, "main.cf").Data)
			var apps []string
			for _, a := range p.Role(spec.RoleApp) {
				apps = append(apps, a.Addr("private").String()+"/32")
			}
			for _, w := range append(c.want,
				"inet_interfaces = "+m.Addr("private").String()+"\n",
				"mynetworks = "+strings.Join(apps, " ")+"\n",
				"smtpd_client_restrictions = permit_mynetworks, reject\n",
			) {
				if !strings.Contains(main, w) {
					t.Errorf("main.cf lacks %q:\n%s", w, main)
				}
			}
			if p.Mail.Hold() != c.hold {
				t.Errorf("plan's mail holds: %v, want %v", p.Mail.Hold(), c.hold)
			}
			if master := string(fileOf(t, n, "master.cf").Data); !strings.HasPrefix(strings.SplitN(master, "\n", 2)[1], p.Mail.Relay.String()+" inet") {
				t.Errorf("master.cf's SMTP server is not on the relay's address %s:\n%s", p.Mail.Relay, master)
			}
			out, err := exec.Command(postconf, "-c", l.Conf, "-n").CombinedOutput()
			if err != nil || strings.Contains(string(out), "warning") {
				t.Errorf("postconf -n: %v\n%s", err, out)
			}
			if !c.hold {
				pw := string(fileOf(t, n, filepath.Join(render.SecretsDir, "sasl_passwd")).Data)
				if pw != "[192.0.2.25]:587 shop-relay:golden-smarthost-password\n" {
					t.Errorf("sasl_passwd = %q", pw)
				}
			}
		})
	}
}
