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

	specs "github.com/opencontainers/runtime-spec/specs-go"
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
	// NoSwap makes Memory bound memory and swap together, so that the
	// node cannot push its excess into the host's swap. It needs the
	// kernel's swap accounting (see SwapAccounted); runc fails without.
	NoSwap bool
	Pids   int64  // 0 = unlimited
	NoFile uint64 // RLIMIT_NOFILE; at most the host's hard limit
	// CPUShares is the cgroup v1 cpu.shares weight; 0 leaves the default.
	CPUShares uint64
	// IDs maps the container's uids and gids 0..IDs.Size-1 to the host's
	// IDs.Host.. in a user namespace of its own. A zero Size means no user
	// namespace: root inside is root outside.
	IDs IDMap
	// UserNS is the path of an existing user namespace to join, with the
	// mapping IDs (the one that owns Netns); empty makes a new one.
	UserNS string
	// Seccomp is the syscall filter; nil runs without one.
	Seccomp *specs.LinuxSeccomp
}

// IDMap is a contiguous range of host ids a container's ids map to.
type IDMap struct {
	Host uint32 `json:"host"`
	Size uint32 `json:"size"`
}

// Mount is a bind or special mount inside the container.
type Mount = specs.Mount

// Bind returns a bind mount, read-only unless rw.
func Bind(src, dst string, rw bool) Mount {
	opts := []string{"rbind", "nosuid", "nodev"}
	if !rw {
		opts = append(opts, "ro")
	}
	return Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
}

// Spec returns the container's OCI runtime configuration.
func Spec(c Container) *specs.Spec {
	caps := c.Caps
	if caps == nil {
		caps = []string{}
	}
	nofile := c.NoFile
	if nofile == 0 {
		nofile = 16384
	}
	res := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if c.Memory > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &c.Memory}
		if c.NoSwap {
			res.Memory.Swap = &c.Memory
		}
	}
	if c.Pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: &c.Pids}
	}
	if c.CPUShares > 0 {
		res.CPU = &specs.LinuxCPU{Shares: &c.CPUShares}
	}
	namespaces := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
		{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: c.Netns},
	}
	// A node in a user namespace gets an empty, read-only /sys: none of
	// its daemons needs one, and the host's devices are none of its
	// business.
	sys := Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
	var uidMap, gidMap []specs.LinuxIDMapping
	if c.IDs.Size > 0 {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: c.UserNS})
		uidMap = []specs.LinuxIDMapping{{ContainerID: 0, HostID: c.IDs.Host, Size: c.IDs.Size}}
		gidMap = uidMap
		sys = Mount{Destination: "/sys", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "noexec", "nodev", "ro", "size=4k"}}
	}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal: false,
			User:     specs.User{UID: 0, GID: 0},
			Args:     c.Args,
			Env:      c.Env,
			Cwd:      orDefault(c.Cwd, "/"),
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: c.Rootfs, Readonly: true},
		Hostname: c.Hostname,
		Mounts: append([]Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			sys,
		}, c.Mounts...),
		Linux: &specs.Linux{
			Resources:   res,
			Namespaces:  namespaces,
			UIDMappings: uidMap,
			GIDMappings: gidMap,
			Seccomp:     c.Seccomp,
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
}

// WriteSpec writes the bundle's config.json.
func WriteSpec(c Container) error {
	data, err := json.MarshalIndent(Spec(c), "", "\t")
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
	Bundle string `json:"bundle"`
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

// memswLimit is where cgroup v1 bounds memory and swap together; it is
// there only with the kernel's swap accounting.
const memswLimit = "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"

// SwapAccounted reports whether the host's cgroups bound swap, so that a
// container may be given NoSwap.
func SwapAccounted() bool {
	_, err := os.Stat(memswLimit)
	return err == nil
}
