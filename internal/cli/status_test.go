package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/driver"
)

// TestStatusSupervisorDown: a stack whose supervisor, or its keeper, is
// gone says what that costs and what to run.
func TestStatusSupervisorDown(t *testing.T) {
	var out bytes.Buffer
	printStatus(stdio{out: &out, err: &out}, &driver.Status{Stack: "shop", Supervisor: false})
	if !strings.Contains(out.String(), "stack shop: supervisor NOT RUNNING") || !strings.Contains(out.String(), "run 'bulkhead up'") {
		t.Errorf("status without a supervisor:\n%s", out.String())
	}
	out.Reset()
	exp := time.Now().Add(100*24*time.Hour + time.Hour)
	printStatus(stdio{out: &out, err: &out}, &driver.Status{Stack: "shop", Supervisor: true, Keeper: true, CertExpires: exp})
	if !strings.HasPrefix(out.String(), "stack shop: supervisor running\n") {
		t.Errorf("status with a supervisor:\n%s", out.String())
	}
	if want := "edge certificate: valid until " + exp.Format(time.DateOnly) + " (100 days"; !strings.Contains(out.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, out.String())
	}
	out.Reset()
	printStatus(stdio{out: &out, err: &out}, &driver.Status{Stack: "shop", Supervisor: true})
	if !strings.Contains(out.String(), "stack shop: supervisor running, but NOT ITS KEEPER") || !strings.Contains(out.String(), "run 'bulkhead up'") {
		t.Errorf("status without a keeper:\n%s", out.String())
	}
}
