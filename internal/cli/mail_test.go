package cli

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// floodBackend is a mail node whose postqueue never stops answering, as
// root in the node can make it (a showq of its own): it writes a valid
// line after another, and as much to stderr, until a write fails.
type floodBackend struct {
	driver.Backend
	wrote int64
}

func (b *floodBackend) Exec(ctx context.Context, stack, node string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	line := `{"queue_name":"hold","queue_id":"4XyZ1a2B3c","arrival_time":1,"message_size":1,"sender":"a@b","recipients":[]}` + "\n"
	for b.wrote < 1<<30 {
		if _, err := io.WriteString(stderr, line); err != nil {
			return err
		}
		if _, err := io.WriteString(stdout, line); err != nil {
			return err
		}
		b.wrote += int64(len(line))
	}
	return nil
}

// TestMailListBounded: mail list reads the mail node's answer into the
// operator's memory; a node that never stops answering gets an error once
// past maxQueueListing, not the host's memory.
func TestMailListBounded(t *testing.T) {
	b := &floodBackend{}
	q := mailQueue{d: b, stack: "shop", p: &plan.Plan{Mail: &plan.Mail{Node: "mail"}}, l: render.DefaultLayout()}
	_, err := q.list(context.Background())
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an endless queue listing: %v; want an error that says it is too large", err)
	}
	if b.wrote > maxQueueListing+1<<20 {
		t.Errorf("the node wrote %d bytes before mail list stopped reading; want no more than about %d", b.wrote, maxQueueListing)
	}
}
