// Package steer loads cloudsteer's eBPF classifier (bpf/steer.c), attaches it
// at ingress of each LAN interface (TCX, or a clsact cls_bpf filter in legacy
// mode: dataplane/tcx), and owns its maps: the IPv4 and IPv6 bypass LPM
// tries, the pause switch, the fast path switch, the owner lease and the
// per-verdict counters.
//
// In TCX mode every piece of kernel state it creates is an unpinned bpf_link
// or a map held by this process's file descriptors, so when the process exits
// (even by SIGKILL) the classifier is gone and the gateway routes plainly. In
// legacy mode the filters stay after a SIGKILL, with their programs and maps:
// they then only mark packets (inert without cloudsteer's nftables table,
// which goes with the process), because the fast path needs the owner lease
// the process renews; the next New replaces them and tcx.RemoveStale
// (`cloudsteer cleanup`) removes them.
package steer
