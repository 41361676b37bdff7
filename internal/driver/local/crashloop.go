package local

import (
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/bulkhead/bulkhead/internal/durable"
)

// Restart policy of the supervisor for a node whose container died: the
// first restart comes at once, and each death within restartStable of the
// last restart doubles the wait, up to restartMax. After crashLoopAfter
// such quick deaths in a row the node is in a crash loop: still retried
// every restartMax, and said so by status, so that a broken node neither
// spins the host's CPU nor hides.
const (
	restartMin     = time.Second
	restartMax     = time.Minute
	restartStable  = time.Minute
	crashLoopAfter = 5
)

// restarts is the supervisor's record of one node's restarts.
type restarts struct {
	Count     int       `json:"restarts"`   // restarts since the supervisor started
	Quick     int       `json:"quick"`      // deaths in a row within restartStable of a restart
	LastStart time.Time `json:"last_start"` // when the supervisor last restarted it
	DiedAt    time.Time `json:"died_at"`    // when it was last found dead
	Next      time.Time `json:"next_try"`   // not before then
	CrashLoop bool      `json:"crash_loop"`
}

// due reports whether a dead node may be restarted at now.
func (r *restarts) due(now time.Time) bool { return r == nil || !now.Before(r.Next) }

// died records that the node was found dead at now, once per death.
func (r *restarts) died(now time.Time) {
	if r != nil && !r.DiedAt.After(r.LastStart) {
		r.DiedAt = now
	}
}

// started records a restart at now and sets the next allowed one. A death
// within restartStable of the previous restart was a quick one.
func (r *restarts) started(now time.Time) {
	if r.Count > 0 && r.DiedAt.Sub(r.LastStart) < restartStable {
		r.Quick++
	} else {
		r.Quick = 0
	}
	r.Count++
	delay := restartMin
	for range r.Quick {
		delay = min(2*delay, restartMax)
	}
	r.LastStart, r.Next = now, now.Add(delay)
	r.CrashLoop = r.Quick >= crashLoopAfter
}

// supervisorState is what the supervisor tells status about restarts,
// by node, in the stack's directory.
type supervisorState struct {
	Nodes map[string]*restarts `json:"nodes"`
}

func loadSupervisorState(path string) (*supervisorState, error) {
	s := &supervisorState{Nodes: map[string]*restarts{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, err
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*restarts{}
	}
	return s, nil
}

func (s *supervisorState) save(path string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return durable.Write(path, data, 0o600)
}
