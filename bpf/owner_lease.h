// The owner lease shared by cloudsteer's programs (steer.c, dnscache.c).
//
// lease holds the CLOCK_MONOTONIC time (ns) until which the process that
// loaded the program is known to be alive; it renews it every 250 ms to
// now + 1 s (dataplane/tcx, lease.go). In legacy attach mode a filter
// outlives a killed process: the lease running out is what keeps the
// program from acting on state nobody maintains any more.
#ifndef CLOUDSTEER_OWNER_LEASE_H
#define CLOUDSTEER_OWNER_LEASE_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lease SEC(".maps");

static __always_inline int owner_alive(void)
{
	__u32 zero = 0;
	__u64 *until = bpf_map_lookup_elem(&lease, &zero);

	return until && bpf_ktime_get_ns() < *until;
}

#endif
