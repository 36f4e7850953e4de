package boottest

import (
	"net/netip"
	"testing"
)

// Lines as Linux 6.12 writes /proc/net/nf_conntrack; the first, an
// offloaded flow (no timeout or state columns), has the form the boot
// test read on the image (2026-12-03).
const conntrackSample = `ipv4     2 tcp      6 src=192.168.77.100 dst=203.0.113.30 sport=40312 dport=443 src=203.0.113.30 dst=10.20.0.1 sport=443 dport=40312 [OFFLOAD] mark=0 zone=0 use=3
ipv4     2 tcp      6 431998 ESTABLISHED src=192.168.77.100 dst=203.0.113.10 sport=40314 dport=443 src=192.168.77.1 dst=192.168.77.100 sport=15443 dport=40314 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 28 src=10.20.0.1 dst=198.51.100.53 sport=53211 dport=53 src=198.51.100.53 dst=10.20.0.1 sport=53 dport=53211 mark=0 zone=0 use=2
ipv4     2 tcp      6 118 SYN_SENT src=192.168.77.100 dst=203.0.113.10 sport=40316 dport=7301 [UNREPLIED] src=203.0.113.10 dst=10.20.0.1 sport=7301 dport=40316 mark=0 zone=0 use=2
garbage
`

func TestParseConntrack(t *testing.T) {
	es := ParseConntrack(conntrackSample)
	if len(es) != 4 {
		t.Fatalf("%d entries, want 4: %+v", len(es), es)
	}
	client := netip.MustParseAddr("192.168.77.100")
	off, ok := FindConntrack(es, "tcp", ConntrackTuple{client, netip.MustParseAddr("203.0.113.30"), 40312, 443})
	if !ok || !off.Offloaded() || off.Reply.Dst != netip.MustParseAddr("10.20.0.1") {
		t.Fatalf("offloaded NATed flow: %+v %v", off, ok)
	}
	steered, ok := FindConntrack(es, "tcp", ConntrackTuple{client, netip.MustParseAddr("203.0.113.10"), 40314, 443})
	if !ok || steered.Offloaded() || !steered.HasFlag("ASSURED") || steered.Reply.Sport != 15443 {
		t.Fatalf("redirected flow: %+v %v", steered, ok)
	}
	unreplied, ok := FindConntrack(es, "tcp", ConntrackTuple{client, netip.MustParseAddr("203.0.113.10"), 40316, 7301})
	if !ok || unreplied.Offloaded() || !unreplied.HasFlag("UNREPLIED") || unreplied.Reply.Dst != netip.MustParseAddr("10.20.0.1") {
		t.Fatalf("unreplied flow (flag between the tuples): %+v %v", unreplied, ok)
	}
	if _, ok := FindConntrack(es, "udp", ConntrackTuple{client, netip.MustParseAddr("203.0.113.30"), 40312, 443}); ok {
		t.Fatal("found a tcp flow as udp")
	}
}
