package cli

import (
	"log/slog"
	"path/filepath"

	"github.com/bulkhead/bulkhead/internal/driver/local"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// driverRoot is where the local driver keeps stacks; tests point it
// elsewhere.
var driverRoot = local.DefaultRoot

func newDriver(s stdio) *local.Driver {
	return &local.Driver{
		Root:     driverRoot,
		Log:      slog.New(slog.NewTextHandler(s.err, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Progress: s.err,
	}
}

// loadStack is loadPlan plus the site directory as an absolute path.
func loadStack(s stdio, file string) (*plan.Plan, string, error) {
	p, err := loadPlan(s, file, false)
	if err != nil {
		return nil, "", err
	}
	if file == "" {
		file = defaultFile
	}
	site := p.Site.Dir
	if !filepath.IsAbs(site) {
		site = filepath.Join(filepath.Dir(file), site)
	}
	site, err = filepath.Abs(site)
	return p, site, err
}

// stackName names the stack a verb acts on: --stack if given, else the name
// in the stack file (./bulkhead.yaml by default). Only the name is needed,
// so a file that no longer validates can still be taken down.
func stackName(file, stack string) (string, error) {
	if stack != "" {
		return stack, nil
	}
	file, data, err := readStackFile(file, "pass -f FILE or --stack NAME")
	if err != nil {
		return "", err
	}
	st, err := spec.Parse(file, data)
	if err != nil {
		return "", err
	}
	return st.Name, nil
}
