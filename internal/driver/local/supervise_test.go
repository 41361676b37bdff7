package local

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flaky is a listener whose first accepts fail as under a connection flood
// (EMFILE), before it hands out the real listener's connections.
type flaky struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (f *flaky) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

// TestForwardSurvivesAcceptErrors: accept errors other than a closed
// listener are reported and retried, connections after them are still
// forwarded, and forward returns once its context is done.
func TestForwardSurvivesAcceptErrors(t *testing.T) {
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	go func() {
		for {
			c, err := upstream.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flaky{Listener: l, fails: 5}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var reported []error
	done := make(chan error, 1)
	go func() {
		done <- forward(ctx, fl, upstream.Addr().String(), func(err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		})
	}()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the forwarder after 5 failed accepts: %q, %v", buf, err)
	}
	c.Close()
	mu.Lock()
	if len(reported) != 5 || !errors.Is(reported[0], syscall.EMFILE) {
		t.Errorf("reported %v, want 5 EMFILE errors", reported)
	}
	mu.Unlock()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("forward returned %v after its context was done", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forward did not return after its context was done")
	}
}
