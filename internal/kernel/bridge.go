package kernel

import (
	"errors"
	"io/fs"
	"os"
	"strings"
)

// bridgeNFCall is the switch that hands bridged IPv4 packets to the host's
// netfilter hooks; it is there only once br_netfilter is loaded.
const bridgeNFCall = "proc/sys/net/bridge/bridge-nf-call-iptables"

// ErrNoBridgeNetfilter says br_netfilter is not loaded.
var ErrNoBridgeNetfilter = errors.New("br_netfilter is not loaded, so traffic between nodes on a stack's bridge never meets the host's flow table")

// BridgeFiltered reports, as an error that says what to do, why traffic
// bridged between nodes would not pass the host's forward hook: the host
// table's flows are the second wall behind each node's own firewall, and
// without br_netfilter it would stand there and filter nothing.
func BridgeFiltered() error { return bridgeFiltered(os.DirFS("/")) }

func bridgeFiltered(fsys fs.FS) error {
	data, err := fs.ReadFile(fsys, bridgeNFCall)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoBridgeNetfilter
	}
	if err != nil {
		return err
	}
	if v := strings.TrimSpace(string(data)); v != "1" {
		return errors.New("net.bridge.bridge-nf-call-iptables is " + v + ", so traffic between nodes on a stack's bridge never meets the host's flow table; set it to 1 (sysctl -w net.bridge.bridge-nf-call-iptables=1, and in /etc/sysctl.d to keep it)")
	}
	return nil
}
