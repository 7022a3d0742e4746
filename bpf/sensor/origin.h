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
	if (BPF_CORE_READ(sb, s_magic) != OVERLAYFS_SUPER_MAGIC || !bpf_core_type_exists(struct ovl_inode))
		return ORIGIN_IMAGE;
	/* the overlay inode embeds the VFS inode (OVL_I) */
	struct ovl_inode *oi = (void *)inode - bpf_core_field_offset(struct ovl_inode, vfs_inode);
	struct ovl_entry *oe = BPF_CORE_READ(oi, oe);
	if (oe && BPF_CORE_READ(oe, __numlower) > 0)
		return ORIGIN_IMAGE;
	return ORIGIN_CONTAINER;
}
