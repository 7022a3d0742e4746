/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Tracked cgroups: what the sensor keeps per cgroup, where it keeps it
 * (cgroup storage on cgroup2, a hash map by cgroup id where the kernel has
 * no cgroup storage, a slot table on the v1 fallback), and the
 * prefixes under which a new cgroup2 directory is tracked at creation.
 * User space owns the set (Track, Untrack) except for early tracking.
 */
#pragma once

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"

/* Sizes user space shares (bpf2go -type cgroup_limits). */
enum cgroup_limits {
	EARLY_PREFIXES = 4,	/* cgroup2 path prefixes tracked from mkdir */
	EARLY_PREFIX_LEN = 64,	/* size of each, NUL included */
	MAX_TRACKED_V1 = 4096,	/* default size of the v1 slot table */
};

/* cgroup_state.entrypoint of a container that ran before it was tracked. */
enum entrypoint_state : __u32 {
	ENTRYPOINT_UNSEEN = 0xffffffff,
};

#define SYSCALL_WORDS 8 /* 512 syscall numbers */
#define MAX_SYSCALL (SYSCALL_WORDS * 64)

struct syscall_bits {
	__u64 words[SYSCALL_WORDS];
};

/* A file recently reported by a cgroup: a direct-mapped cache in front of
 * the LRU, so that a file opened in a loop costs one compare. */
struct recent_file {
	__u64 ino;
	__u32 dev;
	__u32 access;
};

#define RECENT_FILES 16

/* What the sensor keeps per tracked cgroup; user space polls syscalls and
 * losses. */
struct cgroup_state {
	__u64 cgroup_id;
	__u64 losses; /* ring buffer reserves that failed */
	/* The thread group id of the container's entrypoint once it ran;
	 * ENTRYPOINT_UNSEEN when it ran before the cgroup was tracked
	 * (runtime.h). */
	__u32 entrypoint;
	__u32 sessions; /* live processes of exec sessions (runtime.h) */
	/* Its fair share of the ring buffer (within_share): bytes it may
	 * still write, as of share_time. */
	__u64 share_bytes;
	__u64 share_time;
	struct syscall_bits syscalls;
	struct recent_file recent[RECENT_FILES];
};

/* Set before load by user space: -1 keys containers by their cgroup v2 id,
 * otherwise by the id of their cgroup in this v1 controller hierarchy. */
const volatile __s32 cgroup_v1_subsys = -1;

/* cgroup2 path prefixes ("/docker/") under which a new cgroup is tracked
 * the moment it is created, before a runtime can name its container. */
const volatile char early_prefix[EARLY_PREFIXES][EARLY_PREFIX_LEN] = {};
const volatile __u32 early_prefix_len[EARLY_PREFIXES] = {};

#ifndef INUSE_NO_KFUNCS
/* Tracked cgroups on cgroup2: the state hangs off the cgroup itself, so an
 * untracked task costs three loads and a NULL check. */
struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cgroup_state);
} inuse_cgstate SEC(".maps");
#else
/* Kernels before cgroup storage (6.2): the state of a tracked cgroup2
 * cgroup, by cgroup id. Entries go with the cgroup (inuse_cgroup_rmdir) or
 * when user space untracks it. User space sizes it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_TRACKED_V1);
	__type(key, __u64);
	__type(value, struct cgroup_state);
} inuse_cgstate SEC(".maps");
#endif

/* Tracked cgroups on the v1 fallback: id -> slot -> state. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TRACKED_V1);
	__type(key, __u64);
	__type(value, __u32);
} inuse_v1_tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_TRACKED_V1);
	__type(key, __u32);
	__type(value, struct cgroup_state);
} inuse_v1_state SEC(".maps");

/* The state of the current task's cgroup, or NULL when it is not tracked. */
static __always_inline struct cgroup_state *tracked_state(void)
{
	if (cgroup_v1_subsys < 0) {
#ifdef INUSE_NO_KFUNCS
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		__u64 cgid = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
		return bpf_map_lookup_elem(&inuse_cgstate, &cgid);
#else
		struct task_struct *task = bpf_get_current_task_btf();
		struct cgroup *cgrp = task->cgroups->dfl_cgrp;
		/* No cgroup storage at all: untracked, without a helper call. */
		if (!cgrp->bpf_cgrp_storage)
			return NULL;
		return bpf_cgrp_storage_get(&inuse_cgstate, cgrp, 0, 0);
#endif
	}

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct css_set *cgroups = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;
	bpf_probe_read_kernel(&css, sizeof(css), &cgroups->subsys[cgroup_v1_subsys & 15]);
	__u64 id = BPF_CORE_READ(css, cgroup, kn, id);
	__u32 *slot = bpf_map_lookup_elem(&inuse_v1_tracked, &id);
	if (!slot)
		return NULL;
	return bpf_map_lookup_elem(&inuse_v1_state, slot);
}

/* Sets bits of a word of a cgroup's state. BPF atomics other than add came
 * in Linux 5.12: before, a plain or, where two CPUs setting bits of one
 * word at once may lose one; its syscall sets it again at its next call. */
#ifdef INUSE_NO_ATOMIC_OR
#define set_bits(word, bits) (*(word) |= (bits))
#else
#define set_bits(word, bits) __sync_fetch_and_or(word, bits)
#endif

static __always_inline void count_loss(struct cgroup_state *st)
{
	__sync_fetch_and_add(&st->losses, 1);
}

/* Fair shares: a cgroup writes at most share_rate bytes a second to the
 * ring buffer on average, in bursts of share_burst, or loses its own
 * events (a token bucket, as Tetragon's per-cgroup rate). A container that
 * floods the buffer with new files fills its share, not the buffer, and
 * its neighbours' events still fit. Set by user space; 0: no bound. */
const volatile __u64 share_rate = 0;
const volatile __u64 share_burst = 0;

#define NSEC_PER_SEC 1000000000ULL

/* Whether the cgroup may write size more bytes now; it takes them. Two
 * CPUs of one cgroup may race on the bucket: the share is approximate. */
static __always_inline bool within_share(struct cgroup_state *st, __u64 size)
{
	if (!share_rate)
		return true;
	__u64 now = bpf_ktime_get_ns();
	__u64 elapsed = now - st->share_time;
	__u64 bytes = share_burst;
	if (elapsed < NSEC_PER_SEC) /* else a full bucket; the product stays in 64 bits */
		bytes = st->share_bytes + elapsed * share_rate / NSEC_PER_SEC;
	if (bytes > share_burst)
		bytes = share_burst;
	st->share_time = now;
	if (bytes < size) {
		st->share_bytes = bytes;
		return false;
	}
	st->share_bytes = bytes - size;
	return true;
}

/* Whether the first n bytes of a cgroup2 path start with an early prefix. */
static __always_inline bool early_match(const char *path, long n)
{
	for (int i = 0; i < EARLY_PREFIXES; i++) {
		__u32 len = early_prefix_len[i];
		if (len == 0 || len > EARLY_PREFIX_LEN || len > n)
			continue;
		bool eq = true;
		for (int j = 0; j < EARLY_PREFIX_LEN && j < len; j++) {
			if (path[j] != early_prefix[i][j]) {
				eq = false;
				break;
			}
		}
		if (eq)
			return true;
	}
	return false;
}
