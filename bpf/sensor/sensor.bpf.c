//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The inuse sensor: what tracked containers open, map executable and
// execute, which ports they serve and reach, and which syscalls they make.
// tp_btf programs: sys_exit (syscall bitmap, opens, mmaps, socket
// calls), sched_process_exec (binary, script, ELF loader),
// sched_process_fork and sched_process_exit (exec sessions, exit and
// exit_group) and cgroup_mkdir and cgroup_rmdir (early tracking). Each first asks tracked_state (cgroup.h) for the state of the
// task's cgroup; an untracked task on cgroup2 costs a few loads, as the state
// lives in the cgroup's own storage. What a cgroup reports is deduplicated
// (a per-cgroup cache, then LRU maps), resolved to a path (path.h) and
// written to the ring buffer as the records of events.h.

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"
#include "bpf_tracing.h"
#include "bpf_endian.h"

#include "events.h"
#include "cgroup.h"
#include "origin.h"
#include "path.h"
#include "runtime.h"
#include "syscall.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115
#define PROT_EXEC 0x4
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define FMODE_CREATED 0x100000
#define SIGNAL_GROUP_EXIT 0x00000004
#define AT_BASE 7
#define AUXV_PAIRS 28

/* The bits FMODE_BACKING has had (a macro, so no CO-RE; user_path_of in
 * origin.h checks which one a file means); 0: never read backing files. */
const volatile __u32 fmode_backing = 0;

/* Never called, never loaded: its parameters put into BTF the enums that
 * no record carries, for bpf2go (gen.go) and agreement_test.go. */
void btf_anchor(enum syscall_nr nr, enum cgroup_limits limits, enum entrypoint_state entrypoint)
{
}

struct file_key {
	__u64 cgroup_id;
	__u64 ino;
	__u32 dev;
	__u32 access;
};

/* access: enum access | enum event_source << SOURCE_SHIFT */
#define SOURCE_SHIFT 8

struct net_key {
	__u64 cgroup_id;
	__u16 port;
	__u8 protocol;
	__u8 direction;
	enum event_source source;
	__u8 _pad[3];
};

/* What each cgroup already reported, so that it is reported once. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct file_key);
	__type(value, __u8);
} inuse_file_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct net_key);
	__type(value, __u8);
} inuse_net_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* the default; user space may resize it */
} inuse_events SEC(".maps");

static __always_inline void fill_header(struct event_header *hdr, __u64 cgroup_id, enum event_kind kind,
					enum event_source source)
{
	hdr->cgroup_id = cgroup_id;
	hdr->timestamp_ns = bpf_ktime_get_ns();
	hdr->pid = bpf_get_current_pid_tgid() >> 32;
	hdr->kind = kind;
	hdr->source = source;
}

/* Writes a record of st's cgroup within its fair share (cgroup.h); one
 * that does not fit, in the share or in the buffer, is the cgroup's loss. */
static __always_inline bool emit(struct cgroup_state *st, void *rec, __u64 size)
{
	if (!within_share(st, size) || bpf_ringbuf_output(&inuse_events, rec, size, 0)) {
		count_loss(st);
		return false;
	}
	return true;
}

#ifdef INUSE_NO_KFUNCS
/* Kernels before bpf_rdonly_cast (6.2): the fields of a file, and of what
 * it points to, are read with bpf_probe_read_kernel. */
#define FILE_READ(...) BPF_CORE_READ(__VA_ARGS__)

/* The file behind fd in the current task. */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}
#else
/* Turns a pointer read with bpf_probe_read_kernel back into a BTF pointer,
 * so that its fields are read with plain loads. The verifier inlines it. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* A field of a file from fd_file, or of what it points to: a plain load. */
#define FILE_READ(p, field) ((p)->field)

/* The file behind fd in the current task. On the hot path: one helper call
 * for the variable index, plain loads for the rest. */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	if (!file)
		return NULL;
	return bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
}
#endif

/* Reports an opened or mapped file once per (cgroup, device, inode,
 * access, source). */
static __always_inline void report_file(struct cgroup_state *st, struct file *file, enum access access)
{
	struct inode *inode = FILE_READ(file, f_inode);
	struct super_block *sb = FILE_READ(inode, i_sb);
	enum event_source source = event_source(st);
	struct file_key key = {
		.cgroup_id = st->cgroup_id,
		.ino = FILE_READ(inode, i_ino),
		.dev = FILE_READ(sb, s_dev),
		.access = access | source << SOURCE_SHIFT,
	};
	struct recent_file *recent = &st->recent[(key.ino ^ key.dev ^ key.access) & (RECENT_FILES - 1)];
	if (recent->ino == key.ino && recent->dev == key.dev && recent->access == key.access)
		return;
	if (bpf_map_lookup_elem(&inuse_file_seen, &key)) {
		recent->ino = key.ino;
		recent->dev = key.dev;
		recent->access = key.access;
		return;
	}

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (!counts_for_image(task, FILE_READ(file, f_path.mnt)))
		return;
	struct scratch *s = get_scratch();
	if (!s)
		return;
	struct file_event *ev = &s->file.ev;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_FILE, source);
	ev->ino = key.ino;
	ev->dev = key.dev;
	ev->mode = FILE_READ(inode, i_mode);
	ev->access = access;
	ev->origin = origin_of(task, inode);

	struct path fpath;
	BPF_CORE_READ_INTO(&fpath, file, f_path);
	__u32 off = resolve_path(s, task, fpath.dentry, fpath.mnt, &ev->truncated);
	__u32 len = (PATH_MAX_LEN - off) & (PATH_MAX_LEN - 1);
	ev->path_len = len;
	bpf_probe_read_kernel(s->file.path, len, &s->buf[off & (PATH_MAX_LEN - 1)]);

	if (!emit(st, ev, sizeof(*ev) + len))
		return;
	__u8 seen = 1;
	bpf_map_update_elem(&inuse_file_seen, &key, &seen, BPF_ANY);
	recent->ino = key.ino;
	recent->dev = key.dev;
	recent->access = key.access;
}

static __always_inline void handle_open(struct cgroup_state *st, long fd)
{
	struct file *file = fd_file(fd);
	if (!file)
		return;
	__u32 fmode = FILE_READ(file, f_mode);
	enum access access = 0;
	if (fmode & FMODE_READ)
		access |= ACCESS_READ;
	if (fmode & FMODE_WRITE)
		access |= ACCESS_WRITE;
	if (fmode & FMODE_CREATED)
		access |= ACCESS_CREATE;
	report_file(st, file, access);
}

static __always_inline void report_port(struct cgroup_state *st, __u16 family, __u8 protocol,
					enum net_direction direction, enum net_op op, __u16 port)
{
	if (port == 0)
		return;
	struct net_key key = {
		.cgroup_id = st->cgroup_id,
		.port = port,
		.protocol = protocol,
		.direction = direction,
		.source = event_source(st),
	};
	if (bpf_map_lookup_elem(&inuse_net_seen, &key))
		return;
	if (!runs_container_code((struct task_struct *)bpf_get_current_task()))
		return;

	struct scratch *s = get_scratch();
	if (!s)
		return;
	struct net_event *ev = &s->net;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_NET, key.source);
	ev->port = port;
	ev->family = family;
	ev->protocol = protocol;
	ev->direction = direction;
	ev->op = op;
	if (!emit(st, ev, sizeof(*ev)))
		return;
	__u8 seen = 1;
	bpf_map_update_elem(&inuse_net_seen, &key, &seen, BPF_ANY);
}

/* Reads the destination port of a user sockaddr; 0 when there is none. */
static __always_inline __u16 user_sockaddr_port(const void *addr)
{
	__u16 sa[2] = {}; /* family, port (network order) at the same place for in and in6 */
	if (!addr || bpf_probe_read_user(sa, sizeof(sa), addr))
		return 0;
	if (sa[0] != AF_INET && sa[0] != AF_INET6)
		return 0;
	return bpf_ntohs(sa[1]);
}

static __always_inline void handle_socket(struct cgroup_state *st, long fd, enum net_op op, const void *user_addr)
{
	struct file *file = fd_file(fd);
	if (!file)
		return;
	struct inode *inode = FILE_READ(file, f_inode);
	umode_t mode = FILE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	__u8 protocol = BPF_CORE_READ(sk, sk_protocol);
	__u16 local = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 remote = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

	switch (op) {
	case NET_LISTEN:
	case NET_ACCEPT:
		if (protocol == IPPROTO_TCP)
			report_port(st, family, protocol, DIR_IN, op, local);
		break;
	case NET_BIND:
		if (protocol == IPPROTO_UDP)
			report_port(st, family, protocol, DIR_IN, op, local);
		break;
	case NET_CONNECT:
		report_port(st, family, protocol, DIR_OUT, op, remote);
		break;
	case NET_SEND:
		if (protocol != IPPROTO_UDP)
			break;
		__u16 port = user_sockaddr_port(user_addr);
		report_port(st, family, protocol, DIR_OUT, op, port ? port : remote);
		break;
	}
}

/* The word of the cgroup's syscall bitmap that holds nr, when its bit is
 * not set yet (bit). */
static __always_inline __u64 *unmarked_syscall(struct cgroup_state *st, long nr, __u64 *bit)
{
	if (nr < 0 || nr >= MAX_SYSCALL)
		return NULL;
	*bit = 1ULL << (nr & 63);
	__u64 *word = &st->syscalls.words[(nr >> 6) & (SYSCALL_WORDS - 1)];
	return (*word & *bit) ? NULL : word;
}

/* A syscall counts once a task running the container's code (runtime.h)
 * makes it; the check costs only a cgroup's first call of each. */
static __always_inline void report_syscall(struct cgroup_state *st, long nr)
{
	__u64 bit;
	__u64 *word = unmarked_syscall(st, nr, &bit);
	if (word && runs_container_code((struct task_struct *)bpf_get_current_task()))
		set_bits(word, bit);
}

/* One hook for every syscall of a tracked cgroup: the syscall bitmap, and
 * the results of opens, mmaps and socket calls (the returned fd or the fd
 * argument, which pt_regs still hold at exit). Only successful calls count. */
SEC("tp_btf/sys_exit")
int BPF_PROG(inuse_sys_exit, struct pt_regs *regs, long ret)
{
	struct cgroup_state *st = tracked_state();
	if (!st)
		return 0;
	long nr = SYSCALL_NR(regs);
	report_syscall(st, nr);

	switch (nr) {
#if defined(__TARGET_ARCH_x86)
	case NR_OPEN:
	case NR_CREAT:
#endif
	case NR_OPENAT:
	case NR_OPENAT2:
		if (ret >= 0)
			handle_open(st, ret);
		break;
	case NR_MMAP: {
		long fd = (long)(int)SYSCALL_ARG5(regs);
		if (ret >= 0 && (SYSCALL_ARG3(regs) & PROT_EXEC) && fd >= 0) {
			struct file *file = fd_file(fd);
			if (file)
				report_file(st, file, ACCESS_MAPPED);
		}
		break;
	}
	case NR_LISTEN:
		if (ret == 0)
			handle_socket(st, SYSCALL_ARG1(regs), NET_LISTEN, NULL);
		break;
	case NR_ACCEPT:
	case NR_ACCEPT4:
		if (ret >= 0)
			handle_socket(st, ret, NET_ACCEPT, NULL);
		break;
	case NR_BIND:
		if (ret == 0)
			handle_socket(st, SYSCALL_ARG1(regs), NET_BIND, NULL);
		break;
	case NR_CONNECT:
		if (ret == 0 || ret == -EINPROGRESS)
			handle_socket(st, SYSCALL_ARG1(regs), NET_CONNECT, NULL);
		break;
	case NR_SENDTO:
		if (ret >= 0)
			handle_socket(st, SYSCALL_ARG1(regs), NET_SEND, (void *)SYSCALL_ARG5(regs));
		break;
	case NR_SENDMSG:
	case NR_SENDMMSG: {
		/* msg_name is the first field of both user_msghdr and mmsghdr */
		void *name = NULL;
		if (ret >= 0) {
			bpf_probe_read_user(&name, sizeof(name), (void *)SYSCALL_ARG2(regs));
			handle_socket(st, SYSCALL_ARG1(regs), NET_SEND, name);
		}
		break;
	}
	}
	return 0;
}

/* exit and exit_group never reach sys_exit. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(inuse_proc_exit, struct task_struct *task)
{
	struct cgroup_state *st = tracked_state();
	if (!st)
		return 0;
	/* The task's mm is gone by now, so its executable cannot be asked:
	 * a runtime's init leaves by exec, not by exit. */
	session_exit(st, task);
	unsigned int flags = BPF_CORE_READ(task, signal, flags);
	__u64 bit;
	__u64 *word = unmarked_syscall(st, (flags & SIGNAL_GROUP_EXIT) ? NR_EXIT_GROUP : NR_EXIT, &bit);
	if (word)
		set_bits(word, bit);
	return 0;
}

#ifdef INUSE_NO_CALLBACKS
/* Kernels before bpf_find_vma (5.17) keep a task's VMAs in a list sorted by
 * address (mm->mmap, vm_next; a maple tree since 6.1). */
struct mm_struct___list {
	struct vm_area_struct___list *mmap;
} __attribute__((preserve_access_index));

struct vm_area_struct___list {
	unsigned long vm_start;
	unsigned long vm_end;
	struct vm_area_struct___list *vm_next;
	struct file *vm_file;
} __attribute__((preserve_access_index));

/* A fresh exec maps its binary, the loader, the stack and the vDSO: the
 * loader is among the first VMAs. */
#define MAX_EXEC_VMAS 32

/* The file mapped at addr in the task's memory, or NULL. */
static __always_inline struct file *vma_file_at(struct task_struct *task, struct mm_struct *mm, unsigned long addr)
{
	struct vm_area_struct___list *vma = BPF_CORE_READ((struct mm_struct___list *)mm, mmap);
	for (int i = 0; i < MAX_EXEC_VMAS && vma; i++) {
		if (addr < BPF_CORE_READ(vma, vm_start))
			return NULL;
		if (addr < BPF_CORE_READ(vma, vm_end))
			return BPF_CORE_READ(vma, vm_file);
		vma = BPF_CORE_READ(vma, vm_next);
	}
	return NULL;
}
#else
struct vma_file {
	struct file *file;
};

static long vma_file_cb(struct task_struct *task, struct vm_area_struct *vma, struct vma_file *out)
{
	out->file = BPF_CORE_READ(vma, vm_file);
	return 0;
}

/* The file mapped at addr in the task's memory, or NULL. */
static __always_inline struct file *vma_file_at(struct task_struct *task, struct mm_struct *mm, unsigned long addr)
{
	struct vma_file out = {};
	/* bpf_find_vma takes a BTF pointer to the task. */
	bpf_find_vma(bpf_get_current_task_btf(), addr, vma_file_cb, &out, 0);
	return out.file;
}
#endif

/* Emits one exec record, once per (cgroup, file, role) when it names a file.
 * The path comes from the file, else from dir;
 * aux is a user string (argv[0]) or a kernel string (the argv filename). */
static __always_inline void report_exec(struct cgroup_state *st, enum event_source source, enum exec_role role,
					struct file *file, struct path *dir, const char *aux, bool aux_user)
{
	struct scratch *s = get_scratch();
	if (!s)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_event *ev = &s->exec.ev;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_EXEC, source);
	ev->role = role;
	ev->ino = 0;
	ev->dev = 0;
	ev->path_len = 0;
	ev->truncated = 0;
	ev->origin = 0;

	struct path p;
	struct file_key key = {
		.cgroup_id = st->cgroup_id,
		.access = (role == EXEC_LOADER ? ACCESS_LOADER : ACCESS_EXEC) | source << SOURCE_SHIFT,
	};
	if (file) {
		/* A mapping of an overlayfs file holds the lower layer's file
		 * (a backing file): the path the task knows is its user_path. */
		user_path_of(file, fmode_backing, &p);
		struct inode *inode = BPF_CORE_READ(p.dentry, d_inode);
		key.ino = BPF_CORE_READ(inode, i_ino);
		key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
		if (bpf_map_lookup_elem(&inuse_file_seen, &key))
			return;
		ev->ino = key.ino;
		ev->dev = key.dev;
		ev->origin = origin_of(task, inode);
		dir = &p;
	}
	__u32 len = 0;
	if (dir) {
		__u32 off = resolve_path(s, task, dir->dentry, dir->mnt, &ev->truncated);
		len = (PATH_MAX_LEN - off) & (PATH_MAX_LEN - 1);
		bpf_probe_read_kernel(s->exec.data, len, &s->buf[off & (PATH_MAX_LEN - 1)]);
	}
	ev->path_len = len;

	long aux_len = 0;
	if (aux) {
		char *dst = &s->exec.data[len & (PATH_MAX_LEN - 1)];
		if (aux_user)
			aux_len = bpf_probe_read_user_str(dst, ARGV0_MAX_LEN, aux);
		else
			aux_len = bpf_probe_read_kernel_str(dst, ARGV0_MAX_LEN, aux);
		aux_len = aux_len > 0 ? aux_len - 1 : 0; /* without the NUL */
	}
	ev->aux_len = aux_len;

	__u64 size = sizeof(*ev) + len + (aux_len & (ARGV0_MAX_LEN - 1));
	if (!emit(st, ev, size))
		return;
	if (file) {
		__u8 seen = 1;
		bpf_map_update_elem(&inuse_file_seen, &key, &seen, BPF_ANY);
	}
}

/* Execs: the binary (deduplicated like any file), the script of a #! exec,
 * and the ELF interpreter the kernel mapped (found through AT_BASE). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(inuse_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct cgroup_state *st = tracked_state();
	if (!st)
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	/* after the exec: the new program is the container's, or the
	 * runtime's own init (re-executing itself) is not reported */
	if (!runs_container_code(task))
		return 0;
	enum event_source source = exec_source(st, task);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	const char *argv0 = (const char *)BPF_CORE_READ(mm, arg_start);
	report_exec(st, source, EXEC_BINARY, BPF_CORE_READ(bprm, file), NULL, argv0, true);

	const char *filename = BPF_CORE_READ(bprm, filename);
	if (filename != BPF_CORE_READ(bprm, interp)) {
		/* binfmt_script replaced interp; the script's file is closed by now,
		 * so report its name and, when relative, the cwd it is relative to. */
		char first = 0;
		bpf_probe_read_kernel(&first, 1, filename);
		struct path pwd;
		BPF_CORE_READ_INTO(&pwd, task, fs, pwd);
		report_exec(st, source, EXEC_SCRIPT, NULL, first == '/' ? NULL : &pwd, filename, false);
	}

	unsigned long base = 0;
	for (int i = 0; i < AUXV_PAIRS; i++) {
		unsigned long kv[2];
		if (bpf_probe_read_kernel(kv, sizeof(kv), &mm->saved_auxv[i * 2]))
			break;
		if (kv[0] == 0)
			break;
		if (kv[0] == AT_BASE) {
			base = kv[1];
			break;
		}
	}
	if (base) {
		struct file *loader = vma_file_at(task, mm, base);
		if (loader)
			report_exec(st, source, EXEC_LOADER, loader, NULL, NULL, false);
	}
	return 0;
}

/* Forks of an exec session's processes are in the session. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(inuse_fork, struct task_struct *parent, struct task_struct *child)
{
	struct cgroup_state *st = tracked_state();
	if (st)
		session_fork(st, parent, child);
	return 0;
}

/* New cgroup2 directories under an early prefix are tracked at once, so a
 * container is observed from its first instruction even when its runtime
 * (dockerd) tells who it is only after it started. */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(inuse_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (cgroup_v1_subsys >= 0 || early_prefix_len[0] == 0)
		return 0;
	if (cgrp->root->hierarchy_id != 0) /* a v1 hierarchy of a hybrid host */
		return 0;
	struct scratch *s = get_scratch();
	if (!s)
		return 0;
	long n = bpf_probe_read_kernel_str(s->cgroup.path, PATH_MAX_LEN, path);
	if (n <= 1 || !early_match(s->cgroup.path, n - 1))
		return 0;
	__u64 id = cgrp->kn->id;
#ifdef INUSE_NO_KFUNCS
	struct cgroup_state fresh = {.cgroup_id = id};
	bpf_map_update_elem(&inuse_cgstate, &id, &fresh, BPF_NOEXIST);
	struct cgroup_state *st = bpf_map_lookup_elem(&inuse_cgstate, &id);
#else
	struct cgroup_state *st = bpf_cgrp_storage_get(&inuse_cgstate, cgrp, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
#endif
	if (!st)
		return 0;
	st->cgroup_id = id;

	struct cgroup_event *ev = &s->cgroup.ev;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_MKDIR, SOURCE_WORKLOAD);
	__u32 len = (n - 1) & (PATH_MAX_LEN - 1);
	ev->path_len = len;
	if (bpf_ringbuf_output(&inuse_events, ev, sizeof(*ev) + len, 0))
		count_loss(st);
	return 0;
}

/* Where the state of a cgroup2 cgroup is in a hash map (kernels before
 * cgroup storage), it goes with the cgroup, as cgroup storage would. */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(inuse_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
#ifdef INUSE_NO_KFUNCS
	if (cgroup_v1_subsys >= 0 || cgrp->root->hierarchy_id != 0)
		return 0;
	__u64 id = cgrp->kn->id;
	bpf_map_delete_elem(&inuse_cgstate, &id);
#endif
	return 0;
}
