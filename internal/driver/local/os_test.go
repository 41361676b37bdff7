package local

import "testing"

// TestEstablished counts, from a /proc/net/tcp table as the kernel writes
// it, only established connections whose local port is served: not the
// listener, not the node's own connections out (to storage's 22), not
// TIME_WAIT.
func TestEstablished(t *testing.T) {
	const table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0700E40A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0700E40A:0050 0200E40A:A37A 01 00000000:00000000 00:00000000 00000000    33        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0700E40A:0050 0200E40A:A380 01 00000000:00000000 00:00000000 00000000    33        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0700E40A:84CC 0600E40A:0016 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 0700E40A:0050 0200E40A:A390 06 00000000:00000000 03:00000FA0 00000000     0        0 0 3 0000000000000000
`
	if got := established(table, []int{80}); got != 2 {
		t.Errorf("established on port 80 = %d, want 2", got)
	}
	if got := established(table, []int{443}); got != 0 {
		t.Errorf("established on port 443 = %d, want 0", got)
	}
	if got := established("  sl  local_address\n", []int{80}); got != 0 {
		t.Errorf("an empty table counts %d", got)
	}
}
