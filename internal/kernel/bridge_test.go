package kernel

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

// TestBridgeFiltered: the host's flow table filters bridged traffic only
// with br_netfilter loaded and its switch on.
func TestBridgeFiltered(t *testing.T) {
	if err := bridgeFiltered(fstest.MapFS{}); !errors.Is(err, ErrNoBridgeNetfilter) {
		t.Errorf("without br_netfilter: %v, want ErrNoBridgeNetfilter", err)
	}
	off := fstest.MapFS{bridgeNFCall: {Data: []byte("0\n")}}
	if err := bridgeFiltered(off); err == nil || !strings.Contains(err.Error(), "sysctl -w net.bridge.bridge-nf-call-iptables=1") {
		t.Errorf("with the switch off: %v, want how to turn it on", err)
	}
	if err := bridgeFiltered(fstest.MapFS{bridgeNFCall: {Data: []byte("1\n")}}); err != nil {
		t.Errorf("with the switch on: %v", err)
	}
}
