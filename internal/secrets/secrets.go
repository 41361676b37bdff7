// Package secrets generates the credentials of one stack: the database
// password, the SSH keys the storage tier and its clients use, and a per-stack
// certificate authority with the edge's TLS certificate. It only reads
// crypto/rand; keeping the result is the caller's job.
package secrets

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// Lifetimes of the generated certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
)

// Stack is everything secret that a stack's host needs.
type Stack struct {
	// Secrets is what rendering puts into the nodes.
	render.Secrets
	// StorageClientKeys maps each node with a site mount (static, app-N) to the
	// SSH private key (OpenSSH PEM) of the host-side sshfs mount made for it.
	// Its public half is Secrets.StorageKeys[node].
	StorageClientKeys map[string][]byte
	// StorageHostPublicKey is the storage node's host key as one
	// authorized_keys-style line ("ssh-ed25519 AAAA..."), for known_hosts.
	StorageHostPublicKey string
	// CACert is the stack's CA certificate (PEM), for users to trust.
	CACert []byte
	// CAKey is its private key (PKCS #8 PEM), kept so that the edge's
	// certificate can be renewed under the same CA. Stacks made before
	// it was kept have none: their next renewal makes a new CA.
	CAKey []byte `json:",omitempty"`
}

// RenewBefore is how long before its expiry the edge's certificate is
// renewed.
const RenewBefore = 30 * 24 * time.Hour

// Generate makes fresh secrets for p. Two calls never return the same
// secrets.
func Generate(p *plan.Plan) (*Stack, error) {
	s := &Stack{StorageClientKeys: map[string][]byte{}}
	s.StorageKeys = map[string]string{}

	pw := make([]byte, 24) // 24 bytes are 32 base64 characters
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("generate database password: %w", err)
	}
	s.DBPassword = base64.RawURLEncoding.EncodeToString(pw)

	hostPriv, hostPub, err := sshKey(p.Stack + "-storage")
	if err != nil {
		return nil, fmt.Errorf("generate storage host key: %w", err)
	}
	s.StorageHostKey, s.StorageHostPublicKey = hostPriv, hostPub
	for _, n := range p.Nodes {
		if n.Mount == nil {
			continue
		}
		priv, pub, err := sshKey(p.Stack + "-" + n.Name)
		if err != nil {
			return nil, fmt.Errorf("generate storage key of %s: %w", n.Name, err)
		}
		s.StorageClientKeys[n.Name] = priv
		s.StorageKeys[n.Name] = pub
	}

	if err := s.tls(p, time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

// sshKey makes an ed25519 key pair: the private key in OpenSSH PEM and the
// public key as one authorized_keys line ending in comment.
func sshKey(comment string) (priv []byte, pub string, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(sk, comment)
	if err != nil {
		return nil, "", err
	}
	sp, err := ssh.NewPublicKey(pk)
	if err != nil {
		return nil, "", err
	}
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(sp)), "\n") + " " + comment
	return pem.EncodeToMemory(block), line, nil
}

// tls makes the stack's CA and the edge's certificate.
func (s *Stack) tls(p *plan.Plan, now time.Time) error {
	if err := s.newCA(p, now); err != nil {
		return err
	}
	return s.issueEdge(p, now)
}

// newCA makes the stack's certificate authority.
func (s *Stack) newCA(p *plan.Plan, now time.Time) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	caName := pkix.Name{CommonName: "bulkhead " + p.Stack + " CA", Organization: []string{"bulkhead"}}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               caName,
		NotBefore:             now.Add(-time.Hour), // tolerate a little clock skew
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return fmt.Errorf("marshal CA key: %w", err)
	}
	s.CACert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	s.CAKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return nil
}

// issueEdge makes the edge's certificate for the plan's server names and
// 127.0.0.1, which is where the edge is published by default, signed by
// the stack's CA.
func (s *Stack) issueEdge(p *plan.Plan, now time.Time) error {
	ca, caKey, err := s.authority()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate edge key: %w", err)
	}
	names := slices.Clone(p.ServerNames)
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: p.Domain, Organization: []string{"bulkhead"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create edge certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal edge key: %w", err)
	}
	s.TLSCert = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), s.CACert...)
	s.TLSKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return nil
}

// authority parses the stack's CA certificate and key.
func (s *Stack) authority() (*x509.Certificate, any, error) {
	cb, _ := pem.Decode(s.CACert)
	kb, _ := pem.Decode(s.CAKey)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("the stack's CA certificate or key is missing")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA key: %w", err)
	}
	return ca, key, nil
}

// EdgeExpires is when the edge's certificate expires.
func (s *Stack) EdgeExpires() (time.Time, error) {
	return Expires(s.TLSCert)
}

// Expires is when the first certificate of a PEM chain expires.
func Expires(chain []byte) (time.Time, error) {
	b, _ := pem.Decode(chain)
	if b == nil {
		return time.Time{}, fmt.Errorf("no certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return time.Time{}, err
	}
	return c.NotAfter, nil
}

// Renewal says what renew did.
type Renewal struct {
	Renewed bool // the edge has a new certificate
	NewCA   bool // under a new CA, which visitors must trust anew
}

// Renew gives the edge a new certificate when its own expires within
// RenewBefore of now, or does not name the plan's server names (a changed
// domain). It signs with the stack's CA; a stack made before the CA key
// was kept gets a new CA, which the result says.
func (s *Stack) Renew(p *plan.Plan, now time.Time) (Renewal, error) {
	b, _ := pem.Decode(s.TLSCert)
	if b == nil {
		return Renewal{}, fmt.Errorf("the edge's certificate is missing from the secrets")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return Renewal{}, fmt.Errorf("parse the edge's certificate: %w", err)
	}
	if now.Add(RenewBefore).Before(c.NotAfter) && slices.Equal(c.DNSNames, p.ServerNames) {
		return Renewal{}, nil
	}
	var r Renewal
	if _, _, err := s.authority(); err != nil {
		if err := s.newCA(p, now); err != nil {
			return r, err
		}
		r.NewCA = true
	}
	if err := s.issueEdge(p, now); err != nil {
		return r, err
	}
	r.Renewed = true
	return r, nil
}

// serial is a random 128-bit certificate serial number.
func serial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b) // crypto/rand.Read never fails as of Go 1.24
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

// Complete adds what p needs and s lacks, keeping everything s has: a client
// key for every static or app node added since s was made, and a renewed
// edge certificate when Renew says it is due. It reports
// whether it added anything. Keys of nodes p no longer has are kept: a pool
// that shrinks and grows again gets its old keys back.
func (s *Stack) Complete(p *plan.Plan) (bool, error) {
	r, err := s.Renew(p, time.Now())
	if err != nil {
		return false, err
	}
	changed := r.Renewed
	if s.StorageClientKeys == nil {
		s.StorageClientKeys = map[string][]byte{}
	}
	if s.StorageKeys == nil {
		s.StorageKeys = map[string]string{}
	}
	for _, n := range p.Nodes {
		if n.Mount == nil {
			continue
		}
		if _, ok := s.StorageClientKeys[n.Name]; ok {
			continue
		}
		priv, pub, err := sshKey(p.Stack + "-" + n.Name)
		if err != nil {
			return changed, fmt.Errorf("generate storage key of %s: %w", n.Name, err)
		}
		s.StorageClientKeys[n.Name], s.StorageKeys[n.Name] = priv, pub
		changed = true
	}
	return changed, nil
}

// For returns the secrets to render p with: those of s, with storage keys
// limited to p's nodes, so that a removed node's key is no longer authorised.
func (s *Stack) For(p *plan.Plan) render.Secrets {
	out := s.Secrets
	out.StorageKeys = map[string]string{}
	for _, n := range p.Nodes {
		if k, ok := s.StorageKeys[n.Name]; ok {
			out.StorageKeys[n.Name] = k
		}
	}
	return out
}
