// Package steer loads cloudsteer's eBPF classifier (bpf/steer.c), attaches it
// at TCX ingress of each LAN interface, and owns its maps: the IPv4 and IPv6
// bypass LPM tries, the pause switch and the per-verdict counters.
//
// Every piece of kernel state it creates is an unpinned bpf_link or a map
// held by this process's file descriptors, so when the process exits (even by
// SIGKILL) the classifier is gone and the gateway routes plainly.
package steer
