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
