package local

import (
	"path/filepath"
	"testing"
	"time"
)

// TestRestartBackoff: a node that dies soon after every restart waits
// twice as long each time, up to a minute, and is called a crash loop
// after five quick deaths; one that ran for a minute starts afresh.
func TestRestartBackoff(t *testing.T) {
	var r *restarts
	now := time.Unix(1_000_000, 0)
	if !r.due(now) {
		t.Fatal("a node never restarted is not due")
	}
	r = &restarts{}
	var waits []time.Duration
	for range 9 {
		if !r.due(now) {
			t.Fatalf("not due at its next try %v", r.Next)
		}
		r.started(now)
		waits = append(waits, r.Next.Sub(now))
		if r.due(now.Add(r.Next.Sub(now) - time.Millisecond)) {
			t.Fatal("due before its next try")
		}
		r.died(now.Add(time.Second)) // it dies at once
		r.died(r.Next)               // and is still dead at its next try
		now = r.Next
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if waits[i] != w*time.Second {
			t.Errorf("wait %d = %v, want %v", i, waits[i], w*time.Second)
		}
	}
	if !r.CrashLoop || r.Count != 9 {
		t.Errorf("after 9 quick deaths: crash loop %v, count %d", r.CrashLoop, r.Count)
	}
	// It then ran for a minute: the next death starts the backoff over.
	r.started(now)
	now = now.Add(restartStable)
	r.died(now)
	r.started(now)
	if r.CrashLoop || r.Next.Sub(now) != restartMin {
		t.Errorf("after a stable minute: crash loop %v, wait %v", r.CrashLoop, r.Next.Sub(now))
	}
}

// TestSupervisorStateRoundTrip: what the supervisor saves is what status
// reads; no file reads as no restarts.
func TestSupervisorStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "supervisor.json")
	s, err := loadSupervisorState(path)
	if err != nil || len(s.Nodes) != 0 {
		t.Fatalf("no file: %+v, %v", s, err)
	}
	s.Nodes["app-1"] = &restarts{Count: 3, Quick: 5, CrashLoop: true}
	if err := s.save(path); err != nil {
		t.Fatal(err)
	}
	got, err := loadSupervisorState(path)
	if err != nil || got.Nodes["app-1"] == nil || !got.Nodes["app-1"].CrashLoop || got.Nodes["app-1"].Count != 3 {
		t.Errorf("read back %+v, %v", got.Nodes["app-1"], err)
	}
}
