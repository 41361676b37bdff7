package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/driver"
)

// TestStatusSupervisorDown: a stack whose supervisor is gone says what
// that costs and what to run.
func TestStatusSupervisorDown(t *testing.T) {
	var out bytes.Buffer
	printStatus(stdio{out: &out, err: &out}, &driver.Status{Stack: "shop", Supervisor: false})
	if !strings.Contains(out.String(), "stack shop: supervisor NOT RUNNING") || !strings.Contains(out.String(), "run 'bulkhead up'") {
		t.Errorf("status without a supervisor:\n%s", out.String())
	}
	out.Reset()
	printStatus(stdio{out: &out, err: &out}, &driver.Status{Stack: "shop", Supervisor: true})
	if !strings.HasPrefix(out.String(), "stack shop: supervisor running\n") {
		t.Errorf("status with a supervisor:\n%s", out.String())
	}
}
