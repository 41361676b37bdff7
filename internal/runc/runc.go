// Package runc writes OCI bundles and drives the runc command: run a
// container detached, ask its state, signal it, exec into it, delete it.
// Policy (which mounts, which capabilities) belongs to the caller.
package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Container is what a bundle needs.
type Container struct {
	ID       string
	Bundle   string // directory that receives config.json
	Rootfs   string // absolute; mounted read-only
	Hostname string
	Netns    string // path of the network namespace to join
	Args     []string
	Env      []string
	Cwd      string
	Mounts   []Mount
	Caps     []string // e.g. CAP_NET_BIND_SERVICE
	Memory   int64    // bytes; 0 = unlimited
	Pids     int64    // 0 = unlimited
	NoFile   uint64   // RLIMIT_NOFILE; at most the host's hard limit
	// MaskPaths and ReadonlyPaths follow runc's defaults when nil.
}

// Mount is a bind or special mount inside the container.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

// Bind returns a bind mount, read-only unless rw.
func Bind(src, dst string, rw bool) Mount {
	opts := []string{"rbind", "nosuid", "nodev"}
	if !rw {
		opts = append(opts, "ro")
	}
	return Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
}

type spec struct {
	OCIVersion string         `json:"ociVersion"`
	Process    map[string]any `json:"process"`
	Root       map[string]any `json:"root"`
	Hostname   string         `json:"hostname"`
	Mounts     []Mount        `json:"mounts"`
	Linux      map[string]any `json:"linux"`
}

// WriteSpec writes the bundle's config.json.
func WriteSpec(c Container) error {
	caps := c.Caps
	if caps == nil {
		caps = []string{}
	}
	nofile := c.NoFile
	if nofile == 0 {
		nofile = 16384
	}
	resources := map[string]any{
		"devices": []map[string]any{{"allow": false, "access": "rwm"}},
	}
	if c.Memory > 0 {
		resources["memory"] = map[string]any{"limit": c.Memory}
	}
	if c.Pids > 0 {
		resources["pids"] = map[string]any{"limit": c.Pids}
	}
	s := spec{
		OCIVersion: "1.0.2",
		Process: map[string]any{
			"terminal": false,
			"user":     map[string]any{"uid": 0, "gid": 0},
			"args":     c.Args,
			"env":      c.Env,
			"cwd":      orDefault(c.Cwd, "/"),
			"capabilities": map[string]any{
				"bounding": caps, "effective": caps, "permitted": caps,
			},
			"rlimits":         []map[string]any{{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}},
			"noNewPrivileges": true,
		},
		Root:     map[string]any{"path": c.Rootfs, "readonly": true},
		Hostname: c.Hostname,
		Mounts: append([]Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		}, c.Mounts...),
		Linux: map[string]any{
			"resources": resources,
			"namespaces": []map[string]any{
				{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
				{"type": "network", "path": c.Netns},
			},
			"maskedPaths": []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			"readonlyPaths": []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	data, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Bundle, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Bundle, "config.json"), data, 0o600)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func runc(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, "runc", args...)
	var errb bytes.Buffer
	cmd.Stdin, cmd.Stdout = stdin, stdout
	cmd.Stderr = &errb
	if stderr != nil {
		cmd.Stderr = io.MultiWriter(stderr, &errb)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// Run starts the container detached; its PID 1 keeps running after runc
// returns. out receives the container's stdout and stderr, and runc's own
// errors. It must be a file: the container inherits it, and a pipe would
// keep Run waiting for as long as the container lives.
func Run(ctx context.Context, c Container, out *os.File) error {
	before, _ := out.Seek(0, io.SeekEnd)
	cmd := exec.CommandContext(ctx, "runc", "run", "--detach", "--bundle", c.Bundle, c.ID)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		msg := make([]byte, 4096)
		n, _ := out.ReadAt(msg, before)
		return fmt.Errorf("runc run %s: %w: %s", c.ID, err, strings.TrimSpace(string(msg[:n])))
	}
	return nil
}

// Status is what runc knows of a container.
type Status struct {
	ID     string `json:"id"`
	Status string `json:"status"` // created, running, stopped, paused
	Pid    int    `json:"pid"`
}

// ErrNotExist says runc knows no such container.
var ErrNotExist = errors.New("container does not exist")

// State returns a container's status.
func State(ctx context.Context, id string) (Status, error) {
	var out bytes.Buffer
	if err := runc(ctx, nil, &out, nil, "state", id); err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return Status{}, ErrNotExist
		}
		return Status{}, err
	}
	var s Status
	err := json.Unmarshal(out.Bytes(), &s)
	return s, err
}

// List returns every container runc knows.
func List(ctx context.Context) ([]Status, error) {
	var out bytes.Buffer
	if err := runc(ctx, nil, &out, nil, "list", "--format", "json"); err != nil {
		return nil, err
	}
	var list []Status
	if s := strings.TrimSpace(out.String()); s == "" || s == "null" {
		return nil, nil
	}
	err := json.Unmarshal(out.Bytes(), &list)
	return list, err
}

// Kill sends sig (e.g. "TERM", "KILL") to the container's PID 1.
func Kill(ctx context.Context, id, sig string) error {
	return runc(ctx, nil, nil, nil, "kill", id, sig)
}

// Delete removes a container; force kills it first if it runs.
func Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	err := runc(ctx, nil, nil, nil, append(args, id)...)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	return err
}

// Exec runs a process inside a running container.
func Exec(ctx context.Context, id string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, "runc", append([]string{"exec", id}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}
