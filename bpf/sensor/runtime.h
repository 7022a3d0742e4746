/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the runtime does is not what the image does. An OCI runtime's init
 * (runc init, crun's child) runs inside the container's cgroup before it
 * executes the entrypoint, and a helper that joins a running container
 * (runc exec's init, nsenter) does the same before it executes the
 * command: the host's loader maps the host's libseccomp and libc there,
 * and runc reads the container's /etc/passwd for the user. Their paths can
 * match files of the image; none of it is the image's use.
 *
 * A task runs the container's own code once its executable is a file of a
 * mount in the task's own mount namespace, and that namespace is not the
 * host's: the entrypoint's execve (or any
 * later one) in the container's namespace. The runtime runs the host's
 * binary (a mount of the host's namespace), a memfd copy of it (runc 1.1;
 * a kernel-internal mount) or a sealed overlay of it (runc 1.2; a detached
 * mount), all outside it. An opened file counts only when it too was
 * reached in the task's namespace, not through another namespace's root
 * (/proc/PID/root). Both are asked only for what passed the dedup, so a
 * repeated open costs nothing more.
 */
#pragma once

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"

#include "cgroup.h"
#include "events.h"

/* The inode number of the host's mount namespace (/proc/1/ns/mnt), set by
 * user space before load; 0 when unknown: then the host's namespace is
 * not told apart. */
const volatile __u32 host_mnt_ns = 0;

static __always_inline struct mnt_namespace *mount_ns(struct vfsmount *mnt)
{
	struct mount *m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
	return BPF_CORE_READ(m, mnt_ns);
}

/* Whether the current task's executable is on a mount of its own mount
 * namespace, other than the host's: the container's code, not its
 * runtime's. */
static __always_inline bool runs_container_code(struct task_struct *task)
{
	struct mnt_namespace *ns = BPF_CORE_READ(task, nsproxy, mnt_ns);
	if (!ns || (host_mnt_ns && BPF_CORE_READ(ns, ns.inum) == host_mnt_ns))
		return false;
	struct vfsmount *exe = BPF_CORE_READ(task, mm, exe_file, f_path.mnt);
	return exe && mount_ns(exe) == ns;
}

/* Whether a file the current task opened or mapped counts for the image:
 * the task runs the container's code and reached the file in its own
 * mount namespace. */
static __always_inline bool counts_for_image(struct task_struct *task, struct vfsmount *file_mnt)
{
	if (!runs_container_code(task))
		return false;
	return mount_ns(file_mnt) == BPF_CORE_READ(task, nsproxy, mnt_ns);
}

/*
 * Exec sessions. A runtime starts a process in a running container from
 * outside it for docker exec, kubectl exec (CRI Exec, ExecSync) and
 * nsenter: it joins the container's namespaces and cgroup and executes
 * the command, so its parent is in an outer pid namespace, as the
 * entrypoint's is. What such a process and its descendants load is real
 * use, but a person's shell is not the workload's code path: its events
 * carry SOURCE_EXEC_SESSION, and user space decides whether they count.
 *
 * The first task of a cgroup to run the container's code with a parent
 * in an outer pid namespace is the entrypoint; so is the first process of
 * its pid namespace (the init of a container tracked after it started,
 * whose entrypoint the sensor did not see). Any other one starts an exec
 * session, whose thread group is kept here until it exits; its forks are
 * added (sched_process_fork). A cgroup counts its live ones, so that a
 * cgroup without any (nearly all, nearly always) never looks here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);   /* thread group id */
	__type(value, __u64); /* the cgroup id of its container */
} inuse_exec_sessions SEC(".maps");

#define PID_NS_MAX_LEVEL 32
#define EEXIST 17

static __always_inline __u32 pid_ns_level(struct task_struct *task)
{
	return BPF_CORE_READ(task, thread_pid, level);
}

/* The task's pid in its own pid namespace. */
static __always_inline __u32 pid_in_own_ns(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	__u32 level = BPF_CORE_READ(pid, level);
	int nr = 0;
	if (level >= PID_NS_MAX_LEVEL)
		return 0;
	bpf_probe_read_kernel(&nr, sizeof(nr),
			      (void *)pid + bpf_core_field_offset(struct pid, numbers) +
				      level * bpf_core_type_size(struct upid) + bpf_core_field_offset(struct upid, nr));
	return nr;
}

/* Whose doing the current task's events are. */
static __always_inline enum event_source event_source(struct cgroup_state *st)
{
	if (!st->sessions)
		return SOURCE_WORKLOAD;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 *cgroup_id = bpf_map_lookup_elem(&inuse_exec_sessions, &tgid);
	return cgroup_id && *cgroup_id == st->cgroup_id ? SOURCE_EXEC_SESSION : SOURCE_WORKLOAD;
}

/* Whose doing the current task is, as it starts running the container's
 * code (an exec): a task whose parent is in an outer pid namespace came
 * from outside, and is the entrypoint or starts an exec session. */
static __always_inline enum event_source exec_source(struct cgroup_state *st, struct task_struct *task)
{
	if (pid_ns_level(BPF_CORE_READ(task, real_parent)) >= pid_ns_level(task))
		return event_source(st);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!st->entrypoint)
		st->entrypoint = tgid;
	if (st->entrypoint == tgid || pid_in_own_ns(task) == 1)
		return SOURCE_WORKLOAD;
	__u64 cgroup_id = st->cgroup_id;
	long err = bpf_map_update_elem(&inuse_exec_sessions, &tgid, &cgroup_id, BPF_NOEXIST);
	if (!err)
		__sync_fetch_and_add(&st->sessions, 1);
	else if (err != -EEXIST)
		return SOURCE_WORKLOAD; /* the table is full: it counts as the workload's */
	return SOURCE_EXEC_SESSION;
}

/* A fork of a session's process is in the session. */
static __always_inline void session_fork(struct cgroup_state *st, struct task_struct *parent, struct task_struct *child)
{
	__u32 tgid = BPF_CORE_READ(parent, tgid), child_tgid = BPF_CORE_READ(child, tgid);
	if (!st->sessions || tgid == child_tgid) /* a thread */
		return;
	__u64 *cgroup_id = bpf_map_lookup_elem(&inuse_exec_sessions, &tgid);
	if (!cgroup_id || *cgroup_id != st->cgroup_id)
		return;
	__u64 id = *cgroup_id;
	if (!bpf_map_update_elem(&inuse_exec_sessions, &child_tgid, &id, BPF_NOEXIST))
		__sync_fetch_and_add(&st->sessions, 1);
}

/* A session's process leaves the session when its last thread exits. */
static __always_inline void session_exit(struct cgroup_state *st, struct task_struct *task)
{
	if (!st->sessions || BPF_CORE_READ(task, signal, live.counter) != 0)
		return;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u64 *cgroup_id = bpf_map_lookup_elem(&inuse_exec_sessions, &tgid);
	if (cgroup_id && *cgroup_id == st->cgroup_id && !bpf_map_delete_elem(&inuse_exec_sessions, &tgid))
		__sync_fetch_and_add(&st->sessions, -1);
}
