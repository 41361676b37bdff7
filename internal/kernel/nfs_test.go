package kernel

import (
	"testing"
	"testing/fstest"
)

func TestCanMountNFS(t *testing.T) {
	const rel = "6.1.0-18-amd64"
	filesystems := "nodev\tsysfs\nnodev\tproc\n\text4\nnodev\tfuse\n"
	tests := []struct {
		name  string
		files fstest.MapFS
		want  bool
	}{
		{"none", fstest.MapFS{"proc/filesystems": {Data: []byte(filesystems)}}, false},
		{"no proc", fstest.MapFS{}, false},
		{"nfs4 loaded", fstest.MapFS{"proc/filesystems": {Data: []byte(filesystems + "nodev\tnfs4\n")}}, true},
		{"nfs built in", fstest.MapFS{"proc/filesystems": {Data: []byte("nodev\tnfs\n")}}, true},
		{"nfsd is not a client", fstest.MapFS{"proc/filesystems": {Data: []byte("nodev\tnfsd\n")}}, false},
		{"module", fstest.MapFS{
			"proc/filesystems": {Data: []byte(filesystems)},
			"lib/modules/" + rel + "/kernel/fs/nfs/nfs.ko.xz": {Data: nil},
		}, true},
		{"module of another kernel", fstest.MapFS{
			"proc/filesystems": {Data: []byte(filesystems)},
			"lib/modules/5.10.0-1-amd64/kernel/fs/nfs/nfs.ko": {Data: nil},
		}, false},
		{"only the server module", fstest.MapFS{
			"proc/filesystems": {Data: []byte(filesystems)},
			"lib/modules/" + rel + "/kernel/fs/nfsd/nfsd.ko": {Data: nil},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := canMountNFS(tt.files, rel)
			if got != tt.want || why == "" {
				t.Errorf("canMountNFS = %v, %q; want %v with a reason", got, why, tt.want)
			}
		})
	}
}

// TestCanMountNFSHere runs the real check: whatever this kernel is, the
// answer comes with a reason.
func TestCanMountNFSHere(t *testing.T) {
	ok, why := CanMountNFS()
	t.Logf("CanMountNFS() = %v, %q", ok, why)
	if why == "" {
		t.Error("no reason given")
	}
}
