/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Paths as the task sees them: a walk from a dentry up through its mounts to
 * the task's root, written backwards into per-CPU scratch memory, which also
 * holds the record the path is copied behind.
 */
#pragma once

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"

#include "events.h"

#define PATH_MAX_LEN 4096
#define NAME_MAX_LEN 255
#define ARGV0_MAX_LEN 256
#ifdef INUSE_NO_CALLBACKS
/* Without bpf_loop the verifier walks each step of each walk: fewer steps. */
#define MAX_PATH_DEPTH 64
#else
#define MAX_PATH_DEPTH 256
#endif

/* State of a path walk from a dentry up to the task's root. */
struct path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 off;
	__u8 truncated;
	__u8 _pad[3];
};

/* Per-CPU scratch: the path is built backwards in buf, then copied behind
 * the fixed part of the record that goes to the ring buffer. */
struct scratch {
	char buf[PATH_MAX_LEN + NAME_MAX_LEN + 1];
	/* The state of the path walk (a struct path_walk) lives here, not on
	 * the stack, so that the verifier tracks no bounds in it: each step
	 * converges at once, as a bpf_loop callback (6.8 and later verify one
	 * until its states repeat) or in a plain loop (before bpf_loop, 5.17).
	 * Bytes, for bpf2go, which has no Go type for a kernel pointer. */
	__u64 walk[sizeof(struct path_walk) / 8];
	union {
		struct {
			struct file_event ev;
			char path[PATH_MAX_LEN];
		} file;
		struct {
			struct exec_event ev;
			char data[PATH_MAX_LEN + ARGV0_MAX_LEN];
		} exec;
		struct net_event net;
		struct {
			struct cgroup_event ev;
			char path[PATH_MAX_LEN];
		} cgroup;
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} inuse_scratch SEC(".maps");

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&inuse_scratch, &zero);
}

/* One step of the walk, as a bpf_loop callback so that the verifier checks
 * it once instead of once per component and call site (a plain bounded
 * loop on kernels before bpf_loop, 5.17). */
static long path_walk_step(__u64 index, void *ctx)
{
	struct scratch *s = get_scratch();
	if (!s)
		return 1;
	struct path_walk *w = (struct path_walk *)s->walk;
	/* Locals, not w->x, inside BPF_CORE_READ: path_walk is not a kernel type. */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->truncated = 0;
		return 1;
	}
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root) || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (mnt == mnt_parent) {
			/* the top of the mount tree: the file is outside the task's root */
			w->truncated = 0;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = (void *)mnt_parent + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	struct qstr name;
	BPF_CORE_READ_INTO(&name, dentry, d_name);
	__u32 len = name.len & NAME_MAX_LEN;
	__u32 off = w->off;
	if (len + 1 >= off)
		return 1;
	off -= len;
	/* Bounded again at the call: 6.12's verifier links len to len + 1
	 * above and loses len's bounds when it syncs them (6.13 keeps them). */
	barrier_var(len);
	len &= NAME_MAX_LEN;
	bpf_probe_read_kernel(&s->buf[off & (PATH_MAX_LEN - 1)], len, name.name);
	off -= 1;
	s->buf[off & (PATH_MAX_LEN - 1)] = '/';
	w->off = off;
	w->dentry = parent;
	return 0;
}

/* Writes the path of (dentry, vfsmnt) as seen from the task's root into the
 * tail of s->buf and returns the offset where it starts (PATH_MAX_LEN - off
 * bytes long). Sets *truncated when the path was too deep or too long. */
static __always_inline __u32 resolve_path(struct scratch *s, struct task_struct *task, struct dentry *dentry,
					  struct vfsmount *vfsmnt, __u8 *truncated)
{
	struct path root;
	BPF_CORE_READ_INTO(&root, task, fs, root);
	struct path_walk *w = (struct path_walk *)s->walk;
	w->dentry = dentry;
	w->vfsmnt = vfsmnt;
	w->mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	w->root_dentry = root.dentry;
	w->root_mnt = root.mnt;
	w->off = PATH_MAX_LEN;
	w->truncated = 1;
#ifdef INUSE_NO_CALLBACKS
	for (__u32 i = 0; i < MAX_PATH_DEPTH; i++)
		if (path_walk_step(i, NULL))
			break;
#else
	bpf_loop(MAX_PATH_DEPTH, path_walk_step, NULL, 0);
#endif
	*truncated = w->truncated;
	__u32 off = w->off;
	if (off >= PATH_MAX_LEN) {
		off = PATH_MAX_LEN - 1;
		s->buf[off] = '/';
	}
	return off;
}
