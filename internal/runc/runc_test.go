package runc

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestSpecSandbox checks what Spec makes of a sandboxed container and of
// one without a sandbox.
func TestSpecSandbox(t *testing.T) {
	filter := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	s := Spec(Container{ID: "x", Rootfs: "/r", Netns: "/n", IDs: IDMap{Host: 1 << 28, Size: 1 << 16},
		UserNS: "/u", Seccomp: filter, CPUShares: 2048, Memory: 1 << 30, Pids: 512})
	var user *specs.LinuxNamespace
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			user = &s.Linux.Namespaces[i]
		}
		if ns.Type == specs.NetworkNamespace && ns.Path != "/n" {
			t.Errorf("network namespace path %q", ns.Path)
		}
	}
	if user == nil || user.Path != "/u" {
		t.Fatalf("user namespace %+v, want one joined at /u", user)
	}
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1 << 28, Size: 1 << 16}}
	for name, m := range map[string][]specs.LinuxIDMapping{"uid": s.Linux.UIDMappings, "gid": s.Linux.GIDMappings} {
		if len(m) != 1 || m[0] != want[0] {
			t.Errorf("%s map %+v, want %+v", name, m, want)
		}
	}
	if s.Linux.Seccomp != filter {
		t.Error("the seccomp filter is not in the spec")
	}
	if r := s.Linux.Resources; r.CPU == nil || *r.CPU.Shares != 2048 || *r.Memory.Limit != 1<<30 || *r.Pids.Limit != 512 {
		t.Errorf("resources %+v", r)
	}
	if sw := s.Linux.Resources.Memory.Swap; sw != nil {
		t.Errorf("swap bounded at %d without NoSwap, which a kernel without swap accounting refuses", *sw)
	}
	// With NoSwap, memory and swap together are the memory limit: none
	// of it goes to the host's swap.
	noSwap := Spec(Container{ID: "x", Rootfs: "/r", Netns: "/n", Memory: 1 << 30, NoSwap: true})
	if m := noSwap.Linux.Resources.Memory; m == nil || m.Swap == nil || *m.Swap != 1<<30 || *m.Limit != 1<<30 {
		t.Errorf("memory with NoSwap: %+v, want the limit and swap both 1 GiB", m)
	}
	if !s.Process.NoNewPrivileges || !s.Root.Readonly {
		t.Error("no_new_privs or a read-only root is off")
	}
	for _, m := range s.Mounts {
		if m.Destination == "/sys" && m.Type != "tmpfs" {
			t.Errorf("/sys is %s in a user namespace, want an empty tmpfs", m.Type)
		}
	}

	plain := Spec(Container{ID: "y", Rootfs: "/r", Netns: "/n"})
	if plain.Linux.UIDMappings != nil || plain.Linux.Seccomp != nil || plain.Linux.Resources.CPU != nil {
		t.Errorf("a container without a sandbox got %+v", plain.Linux)
	}
	for _, ns := range plain.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			t.Error("a container without IDs got a user namespace")
		}
	}
}
