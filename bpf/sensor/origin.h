/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The origin of an opened file, decided from the file the kernel opened, not
 * from its path: only a file that came with the image can make a package of
 * the image in use, and only files the container made or a volume holds can
 * grow without bound, so user space keeps the first exactly and bounds the
 * rest.
 */
#pragma once

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"

#include "events.h"

#define OVERLAYFS_SUPER_MAGIC 0x794c7630

/* The lower layer of an overlay inode, as older kernels keep it: its path
 * (6.0 to 6.4), or its inode (up to 5.19). 6.5 and later keep an ovl_entry
 * (oe, __numlower). Kernel types: -Wpadded does not apply. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
struct ovl_path___v60 {
	void *layer;
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct ovl_inode___v60 {
	struct ovl_path___v60 lowerpath;
} __attribute__((preserve_access_index));

struct ovl_inode___v510 {
	struct inode *lower;
} __attribute__((preserve_access_index));
#pragma clang diagnostic pop

/* The origin of an overlay inode where the kernel has no BTF of overlayfs:
 * before 5.11 (CONFIG_DEBUG_INFO_BTF_MODULES) a module's types are not in
 * BTF. From 4.13 to 6.4, the word after the embedded VFS inode and
 * __upperdentry is the lower layer (its inode, then its layer), NULL for a
 * file only the upper layer holds. 6.5 keeps its ovl_entry there, but
 * kernels that new have the module's BTF unless built without it. */
static __always_inline enum file_origin origin_no_btf(struct inode *inode)
{
	void *lower = NULL;
	bpf_probe_read_kernel(&lower, sizeof(lower), (void *)inode + bpf_core_type_size(struct inode) + sizeof(void *));
	return lower ? ORIGIN_IMAGE : ORIGIN_CONTAINER;
}

/* A file on another filesystem than the task's root is on a volume, a tmpfs
 * or a pseudo filesystem. On the root's filesystem, a plain directory root
 * (inuse-agent exec) holds image files only; on an overlayfs root, a file
 * with a copy in a lower layer came with the image (even when the container
 * has since modified it in place), and one that exists only in the upper
 * layer was made by the container. */
static __always_inline enum file_origin origin_of(struct task_struct *task, struct inode *inode)
{
	struct super_block *sb = BPF_CORE_READ(inode, i_sb);
	if (sb != BPF_CORE_READ(task, fs, root.mnt, mnt_sb))
		return ORIGIN_VOLUME;
	if (BPF_CORE_READ(sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return ORIGIN_IMAGE;
	if (!bpf_core_type_exists(struct ovl_inode))
		return origin_no_btf(inode);
	/* the overlay inode embeds the VFS inode (OVL_I) */
	struct ovl_inode *oi = (void *)inode - bpf_core_field_offset(struct ovl_inode, vfs_inode);
	if (bpf_core_field_exists(struct ovl_inode, oe)) {
		struct ovl_entry *oe = BPF_CORE_READ(oi, oe);
		if (oe && BPF_CORE_READ(oe, __numlower) > 0)
			return ORIGIN_IMAGE;
		return ORIGIN_CONTAINER;
	}
	if (bpf_core_field_exists(struct ovl_inode___v60, lowerpath)) {
		if (BPF_CORE_READ((struct ovl_inode___v60 *)oi, lowerpath.dentry))
			return ORIGIN_IMAGE;
		return ORIGIN_CONTAINER;
	}
	if (bpf_core_field_exists(struct ovl_inode___v510, lower)) {
		if (BPF_CORE_READ((struct ovl_inode___v510 *)oi, lower))
			return ORIGIN_IMAGE;
		return ORIGIN_CONTAINER;
	}
	/* A layout none of the above knows: the file stays the image's, so that
	 * its package is never hidden. */
	return ORIGIN_IMAGE;
}

/* The path a task knows a file by, into p. A mapping of a file of a stacking
 * filesystem (overlayfs, FUSE passthrough; 6.5 and later) holds its backing
 * file, which embeds the user's path after its struct file. FMODE_BACKING is
 * a macro that moved (bit 25, then 24 in 6.14 and in 6.12's stable updates),
 * so fmode_bits holds each bit it has had, and the embedded path is taken
 * only when it is a real one: a mount's, on another filesystem than the
 * backing file's. */
static __always_inline void user_path_of(struct file *file, __u32 fmode_bits, struct path *p)
{
	BPF_CORE_READ_INTO(p, file, f_path);
	if (!fmode_bits || !bpf_core_type_exists(struct backing_file) || !(BPF_CORE_READ(file, f_mode) & fmode_bits))
		return;
	struct path up = {};
	if (BPF_CORE_READ_INTO(&up, (struct backing_file *)file, user_path) || !up.mnt || !up.dentry)
		return;
	struct super_block *sb = BPF_CORE_READ(up.dentry, d_sb);
	if (sb && sb == BPF_CORE_READ(up.mnt, mnt_sb) && sb != BPF_CORE_READ(p->dentry, d_sb))
		*p = up;
}
