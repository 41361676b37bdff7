package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/durable"
)

// hostRecord is what up changed on the host outside its root, for the
// last down --purge to put back: the host's own service units it
// disabled, and whether it installed the boot unit.
type hostRecord struct {
	Disabled []string `json:"disabled_units,omitempty"`
	BootUnit bool     `json:"boot_unit,omitempty"`
}

func (p paths) hostRecord() string { return filepath.Join(p.root, "host.json") }

func (d *Driver) loadHostRecord() (hostRecord, error) {
	var r hostRecord
	data, err := os.ReadFile(d.paths("").hostRecord())
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%s: %w; remove it, and enable the host's units it names by hand", d.paths("").hostRecord(), err)
	}
	return r, nil
}

// disableHostUnits disables the host's own service units of packages up
// just installed, and records them. Units of packages that were there
// before are the operator's and stay as they are.
func (d *Driver) disableHostUnits(ctx context.Context, units []string) error {
	if len(units) == 0 {
		return nil
	}
	if err := os.MkdirAll(d.root(), 0o711); err != nil {
		return err
	}
	r, err := d.loadHostRecord()
	if err != nil {
		return err
	}
	for _, u := range units {
		if slices.Contains(r.Disabled, u) {
			continue
		}
		// Recorded first: an interrupted up still puts it back.
		r.Disabled = append(r.Disabled, u)
		if err := writeJSON(d.paths("").hostRecord(), r, 0o600); err != nil {
			return err
		}
		d.progress("host: disabling the host's own %s; the stack's nodes run it", u)
		if err := d.sys().setUnit(ctx, u, false); err != nil {
			return err
		}
	}
	return nil
}

// installBootUnit makes the host run `bulkhead boot` at startup, and
// records that it did.
func (d *Driver) installBootUnit(ctx context.Context) error {
	r, err := d.loadHostRecord()
	if err != nil {
		return err
	}
	if !r.BootUnit {
		r.BootUnit = true
		if err := writeJSON(d.paths("").hostRecord(), r, 0o600); err != nil {
			return err
		}
	}
	bin := d.paths("").hostBinary()
	if err := installBinary(bin); err != nil {
		return err
	}
	return d.sys().installBootUnit(ctx, bin, d.root())
}

// restoreHost undoes what hostRecord lists: the last purge on the host
// calls it.
func (d *Driver) restoreHost(ctx context.Context) error {
	r, err := d.loadHostRecord()
	if err != nil {
		return err
	}
	var errs []error
	if r.BootUnit {
		errs = append(errs, d.sys().removeBootUnit(ctx))
	}
	for _, u := range r.Disabled {
		errs = append(errs, d.sys().setUnit(ctx, u, true))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(d.paths("").hostRecord()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// systemdDir is where the boot unit goes. A host without it has no
// systemd: README says to run `bulkhead boot` from its init instead.
const systemdDir = "/etc/systemd/system"

// bootUnitName is the unit that runs `bulkhead boot` at startup.
const bootUnitName = "bulkhead-boot.service"

// bootUnit is its text, for bin, the installed binary, and root, the
// driver's root.
func bootUnit(bin, root string) string {
	return `# Written by bulkhead up; the last bulkhead down --purge removes it.
[Unit]
Description=bulkhead: bring every stack on this host back
After=local-fs.target network.target nftables.service
ConditionPathExists=` + bin + `

[Service]
Type=oneshot
ExecStart=` + bin + ` boot --root ` + root + `
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`
}

func (realSystem) installBootUnit(ctx context.Context, bin, root string) error {
	if _, err := os.Stat(systemdDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	path := filepath.Join(systemdDir, bootUnitName)
	if err := durable.Write(path, []byte(bootUnit(bin, root)), 0o644); err != nil {
		return err
	}
	return systemctl(ctx, "enable", bootUnitName)
}

func (realSystem) removeBootUnit(ctx context.Context) error {
	path := filepath.Join(systemdDir, bootUnitName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := systemctl(ctx, "disable", bootUnitName); err != nil {
		return err
	}
	return os.Remove(path)
}

func (realSystem) setUnit(ctx context.Context, unit string, enable bool) error {
	verb := "disable"
	if enable {
		verb = "enable"
	}
	return systemctl(ctx, verb, unit)
}

// systemctl runs systemctl verb unit, offline when systemd does not run
// (it then edits the unit links only).
func systemctl(ctx context.Context, verb, unit string) error {
	if _, err := exec.LookPath("systemctl"); err != nil {
		return nil // no systemd on this host: nothing enables units
	}
	out, err := exec.CommandContext(ctx, "systemctl", "--no-reload", verb, unit).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		return fmt.Errorf("systemctl %s %s: %w: %s", verb, unit, err, strings.TrimSpace(string(out)))
	}
	return nil
}
