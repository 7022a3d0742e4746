//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Function probes: an entry uprobe at each planned instruction of a Go
// binary. The program sees only the sensor's tracked cgroups (cgroup.h, whose
// maps user space replaces with the sensor's) and reports the first call
// per probe and cgroup; user space then detaches the probe, so a hot
// function traps a handful of times, never per call. A probe is done once
// its owner's cgroup called it: the traps until the detach return at once.

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_tracing.h"
#include "../sensor/cgroup.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A planned instruction ran in a tracked cgroup (bpf2go -type func_hit). */
struct func_hit {
	__u64 cgroup_id;
	__u64 cookie;	 /* the probe, as user space numbered it at attach */
	__u64 monotonic; /* CLOCK_MONOTONIC, ns */
	__u32 pid;
	__u32 _pad;
};

/* Only the pointer's type matters: it puts func_hit into the BTF bpf2go reads. */
const struct func_hit *unused_func_hit __attribute__((unused));

/* (probe, cgroup) pairs reported already: the calls made before user space
 * detaches the probe cost a trap, not a record each. */
struct hit_key {
	__u64 cookie;
	__u64 cgroup_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hit_key);
	__type(value, __u8);
} inuse_func_seen SEC(".maps");

/* Probes done: the cookie at slot cookie % FUNC_DONE_SLOTS. A slot holds one
 * cookie at a time; a probe that lost its slot to another is only slower,
 * as if not done. User space never reuses a cookie, and never gives out
 * cookie 0, which every empty slot holds. */
enum { FUNC_DONE_SLOTS = 16384 };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FUNC_DONE_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} inuse_func_done SEC(".maps");

/* The owner of each cgroup user space named, by cgroup id: the high 32 bits
 * of the cookies of the probes its calls may mark done. A probe on a file
 * that other images share stays armed for its own. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} inuse_func_own SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} inuse_func_hits SEC(".maps");

/* Every time a probe fired, tracked or not: what the probes cost. */
__u64 traps = 0;

/* One body for both attach types. */
static __always_inline int func_entry(struct pt_regs *ctx)
{
	__sync_fetch_and_add(&traps, 1);
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 slot = cookie % FUNC_DONE_SLOTS;
	__u64 *done = bpf_map_lookup_elem(&inuse_func_done, &slot);
	if (!done || *done == cookie)
		return 0;
	struct cgroup_state *st = tracked_state();
	if (!st)
		return 0;
	struct hit_key key = {.cookie = cookie, .cgroup_id = st->cgroup_id};
	if (bpf_map_lookup_elem(&inuse_func_seen, &key))
		return 0;
	struct func_hit *hit = bpf_ringbuf_reserve(&inuse_func_hits, sizeof(*hit), 0);
	if (!hit) {
		/* Not marked seen: the next call tries again. */
		count_loss(st);
		return 0;
	}
	hit->cgroup_id = key.cgroup_id;
	hit->cookie = key.cookie;
	hit->monotonic = bpf_ktime_get_ns();
	hit->pid = bpf_get_current_pid_tgid() >> 32;
	hit->_pad = 0;
	/* Woken now, not when the reader next polls: each call until user
	 * space detaches the probe is a trap. */
	bpf_ringbuf_submit(hit, BPF_RB_FORCE_WAKEUP);
	__u8 one = 1;
	bpf_map_update_elem(&inuse_func_seen, &key, &one, BPF_ANY);
	__u32 *owner = bpf_map_lookup_elem(&inuse_func_own, &key.cgroup_id);
	if (owner && *owner == cookie >> 32)
		*done = cookie;
	return 0;
}

/* A uprobe_multi link (Linux 6.6) puts every instruction of a function in
 * one link, and closing it removes the breakpoints before it detaches the
 * program: no call between the two goes unseen or uncounted. */
SEC("uprobe.multi")
int inuse_func_multi(struct pt_regs *ctx)
{
	return func_entry(ctx);
}

/* Older kernels: one perf event uprobe per instruction. */
SEC("uprobe")
int inuse_func_entry(struct pt_regs *ctx)
{
	return func_entry(ctx);
}
