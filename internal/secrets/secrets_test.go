package secrets

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

func defaultPlan(t *testing.T, domain string) *plan.Plan {
	t.Helper()
	st := spec.Default()
	st.Domain = domain
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDBPassword(t *testing.T) {
	s, err := Generate(defaultPlan(t, "localhost"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{32}$`).MatchString(s.DBPassword) {
		t.Errorf("DBPassword %q is not 32 URL-safe characters", s.DBPassword)
	}
}

func TestSSHKeys(t *testing.T) {
	p := defaultPlan(t, "localhost")
	s, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	host, err := ssh.ParseRawPrivateKey(s.StorageHostKey)
	if err != nil {
		t.Fatalf("storage host key: %v", err)
	}
	hostSigner, err := ssh.NewSignerFromKey(host)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s.StorageHostPublicKey))
	if err != nil {
		t.Fatalf("storage host public key: %v", err)
	}
	if !bytes.Equal(pub.Marshal(), hostSigner.PublicKey().Marshal()) {
		t.Error("StorageHostPublicKey is not the public half of StorageHostKey")
	}

	want := []string{"static", "app-1", "app-2"}
	if len(s.StorageKeys) != len(want) || len(s.StorageClientKeys) != len(want) {
		t.Errorf("keys for %d/%d nodes, want %v", len(s.StorageKeys), len(s.StorageClientKeys), want)
	}
	for _, node := range want {
		line, ok := s.StorageKeys[node]
		if !ok || strings.Contains(line, "\n") {
			t.Errorf("StorageKeys[%s] = %q, want one line", node, line)
			continue
		}
		pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			t.Errorf("StorageKeys[%s]: %v", node, err)
			continue
		}
		if pub.Type() != ssh.KeyAlgoED25519 || !strings.HasSuffix(comment, node) {
			t.Errorf("StorageKeys[%s] is %s %q, want ed25519 named for the node", node, pub.Type(), comment)
		}
		priv, err := ssh.ParseRawPrivateKey(s.StorageClientKeys[node])
		if err != nil {
			t.Errorf("StorageClientKeys[%s]: %v", node, err)
			continue
		}
		if _, ok := priv.(*ed25519.PrivateKey); !ok {
			t.Errorf("StorageClientKeys[%s] is a %T, want ed25519", node, priv)
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
			t.Errorf("StorageKeys[%s] is not the public half of StorageClientKeys[%s]", node, node)
		}
	}
	for _, node := range []string{"edge", "cache", "db", "storage"} {
		if _, ok := s.StorageKeys[node]; ok {
			t.Errorf("%s has a storage key but does not mount storage", node)
		}
	}
}

func TestCertificate(t *testing.T) {
	for _, domain := range []string{"localhost", "shop.example.com"} {
		t.Run(domain, func(t *testing.T) {
			p := defaultPlan(t, domain)
			s, err := Generate(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(s.TLSCert, s.TLSKey); err != nil {
				t.Fatalf("TLSCert and TLSKey do not pair: %v", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(s.CACert) {
				t.Fatal("CACert holds no certificate")
			}
			chain := pemCerts(t, s.TLSCert)
			if len(chain) != 2 || !bytes.Equal(chain[1].Raw, pemCerts(t, s.CACert)[0].Raw) {
				t.Fatalf("TLSCert holds %d certificates, want the edge's then the CA", len(chain))
			}
			ca := chain[1]
			if !ca.IsCA || ca.Subject.CommonName != "bulkhead bulkhead CA" {
				t.Errorf("CA is %q (IsCA %v)", ca.Subject.CommonName, ca.IsCA)
			}
			if life := ca.NotAfter.Sub(ca.NotBefore); life < 9*365*24*time.Hour {
				t.Errorf("CA is valid for %v, want about 10 years", life)
			}
			leaf := chain[0]
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 364*24*time.Hour || life > 367*24*time.Hour {
				t.Errorf("edge certificate is valid for %v, want about a year", life)
			}
			for _, name := range []string{domain, "localhost", "127.0.0.1"} {
				_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
				if err != nil {
					t.Errorf("verify for %s: %v", name, err)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.org", Roots: roots}); err == nil {
				t.Error("the edge certificate verifies for other.example.org")
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: domain, Roots: x509.NewCertPool()}); err == nil {
				t.Error("the edge certificate verifies without the stack's CA")
			}
		})
	}
}

func TestFresh(t *testing.T) {
	p := defaultPlan(t, "localhost")
	a, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	same := map[string]bool{
		"DBPassword":     a.DBPassword == b.DBPassword,
		"StorageHostKey": bytes.Equal(a.StorageHostKey, b.StorageHostKey),
		"StorageKeys":    a.StorageKeys["app-1"] == b.StorageKeys["app-1"],
		"client key":     bytes.Equal(a.StorageClientKeys["app-1"], b.StorageClientKeys["app-1"]),
		"TLSKey":         bytes.Equal(a.TLSKey, b.TLSKey),
		"TLSCert":        bytes.Equal(a.TLSCert, b.TLSCert),
		"CACert":         bytes.Equal(a.CACert, b.CACert),
	}
	for what, eq := range same {
		if eq {
			t.Errorf("two calls gave the same %s", what)
		}
	}
	if a.StorageKeys["app-1"] == a.StorageKeys["app-2"] {
		t.Error("app-1 and app-2 share a storage key")
	}
}

func pemCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func TestComplete(t *testing.T) {
	small, big := testPlan(t, 2), testPlan(t, 4)
	s, err := Generate(small)
	if err != nil {
		t.Fatal(err)
	}
	pw, app1 := s.DBPassword, s.StorageKeys["app-1"]
	changed, err := s.Complete(big)
	if err != nil || !changed {
		t.Fatalf("Complete: changed=%v err=%v", changed, err)
	}
	if s.DBPassword != pw || s.StorageKeys["app-1"] != app1 {
		t.Error("Complete replaced existing secrets")
	}
	for _, n := range []string{"app-3", "app-4"} {
		if s.StorageKeys[n] == "" || len(s.StorageClientKeys[n]) == 0 {
			t.Errorf("no key for %s", n)
		}
	}
	if changed, _ := s.Complete(big); changed {
		t.Error("a second Complete changed something")
	}
	if got := s.For(small).StorageKeys; len(got) != 3 || got["app-3"] != "" {
		t.Errorf("For(small) authorises %d keys: %v", len(got), got)
	}
}

func testPlan(t *testing.T, apps int) *plan.Plan {
	t.Helper()
	st := spec.Default()
	st.Tiers["app"].Replicas = apps
	st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
	p, err := plan.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRenew: the edge's certificate is renewed under the stack's own CA
// when fewer than 30 days are left or the domain changed, and not before;
// a stack whose CA key was never kept gets a new CA, and says so.
func TestRenew(t *testing.T) {
	p := defaultPlan(t, "shop.example.com")
	s, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := s.EdgeExpires()
	if err != nil {
		t.Fatal(err)
	}
	ca, cert := string(s.CACert), string(s.TLSCert)
	verify := func(t *testing.T, at time.Time) {
		t.Helper()
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(s.CACert)
		b, _ := pem.Decode(s.TLSCert)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "shop.example.com", CurrentTime: at}); err != nil {
			t.Errorf("the edge's certificate does not verify at %v: %v", at, err)
		}
	}

	// 31 days before expiry: nothing to do.
	if r, err := s.Renew(p, issued.Add(-31*24*time.Hour)); err != nil || r.Renewed || string(s.TLSCert) != cert {
		t.Fatalf("31 days before expiry: %+v, %v; want no renewal", r, err)
	}
	// 29 days before: renewed, same CA, valid a year from then.
	at := issued.Add(-29 * 24 * time.Hour)
	if r, err := s.Renew(p, at); err != nil || !r.Renewed || r.NewCA {
		t.Fatalf("29 days before expiry: %+v, %v; want a renewal under the same CA", r, err)
	}
	if string(s.CACert) != ca || string(s.TLSCert) == cert {
		t.Errorf("the renewal changed the CA, or not the certificate")
	}
	if exp, _ := s.EdgeExpires(); exp.Sub(at) < CertValidity-time.Minute {
		t.Errorf("the renewed certificate expires %v, want a year after %v", exp, at)
	}
	verify(t, issued.Add(time.Hour)) // past the old one's expiry

	// Another domain: renewed for the new names at once.
	q := defaultPlan(t, "store.example.com")
	if r, err := s.Renew(q, at); err != nil || !r.Renewed {
		t.Fatalf("new domain: %+v, %v; want a renewal", r, err)
	}
	b, _ := pem.Decode(s.TLSCert)
	if c, _ := x509.ParseCertificate(b.Bytes); c == nil || !slices.Contains(c.DNSNames, "store.example.com") {
		t.Errorf("the certificate for the new domain names %v", c.DNSNames)
	}

	// A stack from before the CA key was kept: a new CA.
	s.CAKey = nil
	old := string(s.CACert)
	if r, err := s.Renew(p, issued.Add(CertValidity)); err != nil || !r.Renewed || !r.NewCA {
		t.Fatalf("without a CA key: %+v, %v; want a renewal under a new CA", r, err)
	}
	if string(s.CACert) == old || len(s.CAKey) == 0 {
		t.Errorf("no new CA was made, or its key was not kept")
	}
	verify(t, issued.Add(CertValidity+time.Hour))
}
