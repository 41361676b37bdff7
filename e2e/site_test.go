package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// TestSite drives the default stack's sample site only through the
// published ports, as a visitor would, and checks that every tier does its
// part (issue #4).
func TestSite(t *testing.T) {
	s := newStack(t, "e2es", 234, 18380, unwatched)
	s.run("up")
	base := "http://" + s.http
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	get := func(t *testing.T, path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	t.Run("pages come from the app pool", func(t *testing.T) {
		resp, body := get(t, "/")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("X-Served-By"), "app-") || !strings.Contains(body, "<title>") {
			t.Fatalf("GET / = %d from %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	})

	t.Run("assets come from the static node", func(t *testing.T) {
		resp, body := get(t, "/assets/style.css")
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "static" || len(body) == 0 {
			t.Fatalf("GET /assets/style.css = %d from %q", resp.StatusCode, resp.Header.Get("X-Served-By"))
		}
	})

	t.Run("requests are balanced across app nodes", func(t *testing.T) {
		seen := map[string]bool{}
		for range 6 {
			resp, _ := get(t, "/")
			seen[resp.Header.Get("X-Served-By")] = true
		}
		if !seen["app-1"] || !seen["app-2"] {
			t.Errorf("six requests reached only %v", seen)
		}
	})

	img := pngBytes(t)
	var upload string
	t.Run("a post with an image", func(t *testing.T) {
		_, page := get(t, "/")
		token := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page)
		if token == nil {
			t.Fatalf("no CSRF token in the form:\n%s", page)
		}
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		w.WriteField("csrf", token[1])
		w.WriteField("title", "Bulkheads hold")
		w.WriteField("body", "posted by the e2e test")
		fw, _ := w.CreateFormFile("image", "dot.png")
		fw.Write(img)
		w.Close()
		resp, err := c.Post(base+"/posts", w.FormDataContentType(), &buf)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("POST /posts = %d", resp.StatusCode)
		}
		_, page = get(t, "/")
		if !strings.Contains(page, "Bulkheads hold") {
			t.Fatal("the new post is not listed")
		}
		m := regexp.MustCompile(`/uploads/[0-9a-f]+\.png`).FindString(page)
		if m == "" {
			t.Fatal("the listed post has no image")
		}
		upload = m
		resp, body := get(t, upload)
		if resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "static" || body != string(img) {
			t.Fatalf("GET %s = %d from %q, %d bytes (want %d identical)", upload, resp.StatusCode, resp.Header.Get("X-Served-By"), len(body), len(img))
		}
	})

	t.Run("reads hit memcached", func(t *testing.T) {
		before := getHits(t, s)
		for range 4 {
			get(t, "/")
		}
		if after := getHits(t, s); after <= before {
			t.Errorf("get_hits went from %d to %d over four reads", before, after)
		}
	})

	t.Run("healthz follows the db", func(t *testing.T) {
		if resp, _ := get(t, "/healthz"); resp.StatusCode != 200 {
			t.Fatalf("/healthz = %d", resp.StatusCode)
		}
		pid, _ := service(t, s, "db", "mariadb")
		if out, err := s.in("db", "kill", "-9", strconv.Itoa(pid)); err != nil {
			t.Fatal(err, out)
		}
		// While the agent brings mariadb back, /healthz must say 503,
		// promptly: a dead db must not hang visitors.
		saw503 := false
		hosttest.Eventually(t, 30*time.Second, "/healthz turns 503", func() bool {
			began := time.Now()
			resp, _ := get(t, "/healthz")
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("/healthz took %v with the db down", took)
			}
			saw503 = resp.StatusCode == 503
			return saw503 || dbRestarted(t, s, pid)
		})
		if !saw503 {
			t.Fatal("/healthz never said 503 while the db was down")
		}
		hosttest.Eventually(t, 60*time.Second, "/healthz recovers", func() bool {
			resp, _ := get(t, "/healthz")
			return resp.StatusCode == 200
		})
	})

	t.Run("one app node down, the site stays up", func(t *testing.T) {
		// The db test above made both app nodes answer 503, which the edge
		// counts as failures for 10 s: start from a whole pool.
		hosttest.Eventually(t, 30*time.Second, "both app nodes serving", func() bool {
			seen := map[string]bool{}
			for range 6 {
				resp, _ := get(t, "/")
				seen[resp.Header.Get("X-Served-By")] = resp.StatusCode == 200
			}
			return seen["app-1"] && seen["app-2"]
		})
		id := "bh-" + s.name + "-app-1"
		if out, err := exec.Command("runc", "kill", id, "KILL").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		hosttest.Eventually(t, 5*time.Second, "app-1 stopped", func() bool {
			out, _ := exec.Command("runc", "state", id).Output()
			return !strings.Contains(string(out), `"running"`)
		})
		// The supervisor brings app-1 back within seconds; these requests
		// go out before it can.
		served := map[string]int{}
		for i := range 20 {
			resp, _ := get(t, "/")
			if resp.StatusCode != 200 {
				t.Fatalf("request %d with app-1 down: %d", i, resp.StatusCode)
			}
			served[resp.Header.Get("X-Served-By")]++
		}
		if served["app-2"] < 10 {
			t.Errorf("with app-1 down, requests were served by %v", served)
		}
	})

	t.Run("https with the stack's CA", func(t *testing.T) {
		caPEM, err := os.ReadFile(filepath.Join("/var/lib/bulkhead", s.name, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatal("ca.crt holds no certificate")
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
		resp, err := hc.Get("https://" + s.https + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("https /healthz = %d", resp.StatusCode)
		}
	})

	t.Run("a certificate of the user's own", func(t *testing.T) {
		certPEM, keyPEM := selfSigned(t, "localhost")
		os.WriteFile(filepath.Join(s.dir, "site.crt"), certPEM, 0o644)
		os.WriteFile(filepath.Join(s.dir, "site.key"), keyPEM, 0o600)
		file := filepath.Join(s.dir, "bulkhead.yaml")
		data, _ := os.ReadFile(file)
		data = []byte(strings.Replace(string(data), "publish:\n", "publish:\n  certificate: site.crt\n  key: site.key\n", 1))
		os.WriteFile(file, data, 0o644)
		out := s.run("up")
		if strings.Contains(out, "nothing changed") {
			t.Fatalf("up did not apply the new certificate:\n%s", out)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(certPEM)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
		resp, err := hc.Get("https://" + s.https + "/healthz")
		if err != nil {
			t.Fatalf("https with the user's certificate: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("https /healthz = %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Served-By"), body)
		}
	})

	t.Run("down and up keep posts and uploads", func(t *testing.T) {
		s.run("down")
		s.run("up")
		_, page := get(t, "/")
		if !strings.Contains(page, "Bulkheads hold") {
			t.Error("the post is gone after down and up")
		}
		if resp, body := get(t, upload); resp.StatusCode != 200 || body != string(img) {
			t.Errorf("the upload is gone after down and up: %d", resp.StatusCode)
		}
	})
}

func dbRestarted(t *testing.T, s *stack, oldPID int) bool {
	pid, _, _ := serviceRunning(t, s, "db", "mariadb")
	return pid != 0 && pid != oldPID
}

// getHits reads memcached's get_hits from inside the cache node, over its
// loopback, never from outside.
func getHits(t *testing.T, s *stack) int {
	t.Helper()
	addr := s.privateNet + ".4"
	out, err := s.in("cache", "bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/11211; printf 'stats\r\nquit\r\n' >&3; cat <&3`, addr))
	if err != nil {
		t.Fatalf("stats: %v %s", err, out)
	}
	m := regexp.MustCompile(`STAT get_hits (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no get_hits in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func pngBytes(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for x := range 4 {
		img.Set(x, x, color.RGBA{200, 30, 30, 255})
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// selfSigned makes a throwaway certificate and key for name.
func selfSigned(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
