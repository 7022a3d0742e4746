//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The inuse sensor: what tracked containers open, map, execute, which ports
// they use and which syscalls they make. Every program first checks that the
// current cgroup is tracked and returns at once otherwise, so host processes
// pay one hash lookup per syscall.

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_core_read.h"
#include "bpf_tracing.h"
#include "bpf_endian.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PATH_MAX_LEN 4096
#define NAME_MAX_LEN 255
#define ARGV0_MAX_LEN 256
#define MAX_PATH_DEPTH 256
#define SYSCALL_WORDS 8 /* 512 syscall numbers */
#define MAX_SYSCALL (SYSCALL_WORDS * 64)

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
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

/* Syscall numbers this sensor decodes, and the syscall arguments as they
 * are still found in pt_regs at sys_exit. */
#if defined(__TARGET_ARCH_x86)
#define NR_OPEN 2
#define NR_OPENAT 257
#define NR_OPENAT2 437
#define NR_CREAT 85
#define NR_MMAP 9
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_ACCEPT4 288
#define NR_SENDTO 44
#define NR_SENDMSG 46
#define NR_SENDMMSG 307
#define NR_BIND 49
#define NR_LISTEN 50
#define NR_EXIT 60
#define NR_EXIT_GROUP 231
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#define SYSCALL_ARG1(regs) ((regs)->di)
#define SYSCALL_ARG2(regs) ((regs)->si)
#define SYSCALL_ARG3(regs) ((regs)->dx)
#define SYSCALL_ARG5(regs) ((regs)->r8)
#elif defined(__TARGET_ARCH_arm64)
#define NR_OPENAT 56
#define NR_OPENAT2 437
#define NR_MMAP 222
#define NR_CONNECT 203
#define NR_ACCEPT 202
#define NR_ACCEPT4 242
#define NR_SENDTO 206
#define NR_SENDMSG 211
#define NR_SENDMMSG 269
#define NR_BIND 200
#define NR_LISTEN 201
#define NR_EXIT 93
#define NR_EXIT_GROUP 94
#define SYSCALL_NR(regs) ((regs)->syscallno)
#define SYSCALL_ARG1(regs) ((regs)->orig_x0)
#define SYSCALL_ARG2(regs) ((regs)->regs[1])
#define SYSCALL_ARG3(regs) ((regs)->regs[2])
#define SYSCALL_ARG5(regs) ((regs)->regs[4])
#endif

enum event_kind {
	EVENT_FILE = 1,
	EVENT_EXEC = 2,
	EVENT_NET = 3,
	EVENT_MKDIR = 4,
};

/* Access bits of a file event; part of the dedup key. */
enum access {
	ACCESS_READ = 1,
	ACCESS_WRITE = 2,
	ACCESS_CREATE = 4,
	ACCESS_MAP_EXEC = 8,
	ACCESS_EXEC = 16,   /* executed (dedup key of exec binaries) */
	ACCESS_LOADER = 32, /* mapped by the kernel as PT_INTERP */
};

enum exec_role {
	EXEC_BINARY = 1, /* the file the kernel ran (the interpreter of a script) */
	EXEC_SCRIPT = 2, /* a #! script: path is the cwd when argv filename is relative */
	EXEC_LOADER = 3, /* the ELF interpreter named by PT_INTERP */
};

enum net_op {
	NET_LISTEN = 1,
	NET_ACCEPT = 2,
	NET_CONNECT = 3,
	NET_BIND = 4,
	NET_SEND = 5,
};

enum net_direction {
	DIR_IN = 1,
	DIR_OUT = 2,
};

struct event_header {
	__u64 cgroup_id;
	__u64 timestamp_ns; /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u32 pid;
	__u8 kind;
	__u8 _pad[3];
};

/* Followed by path_len bytes of path (no NUL). */
struct file_event {
	struct event_header hdr;
	__u64 ino;
	__u32 dev;
	__u32 mode;
	__u16 access;
	__u16 path_len;
	__u8 truncated;
	__u8 _pad[3];
};

/* Followed by path_len bytes of path, then aux_len bytes: argv[0] for the
 * binary, the argv filename for a script. */
struct exec_event {
	struct event_header hdr;
	__u64 ino;
	__u32 dev;
	__u16 path_len;
	__u16 aux_len;
	__u8 role;
	__u8 truncated;
	__u8 _pad[6];
};

struct net_event {
	struct event_header hdr;
	__u16 port;
	__u16 family;
	__u8 protocol;
	__u8 direction;
	__u8 op;
	__u8 _pad;
};

/* A cgroup tracked from its creation (cgroup_mkdir under an early prefix).
 * Followed by path_len bytes of its path in the cgroup2 hierarchy. */
struct cgroup_event {
	struct event_header hdr;
	__u16 path_len;
	__u8 _pad[6];
};

struct file_key {
	__u64 cgroup_id;
	__u64 ino;
	__u32 dev;
	__u32 access;
};

struct net_key {
	__u64 cgroup_id;
	__u16 port;
	__u8 protocol;
	__u8 direction;
	__u32 _pad;
};

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

/* What the sensor keeps per tracked cgroup. */
struct cgroup_state {
	__u64 cgroup_id;
	__u64 losses; /* ring buffer reserves that failed */
	struct syscall_bits syscalls;
	struct recent_file recent[RECENT_FILES];
};

/* Per-CPU scratch: the path is built backwards in buf, then copied behind
 * the fixed part of the record that goes to the ring buffer. */
struct scratch {
	char buf[PATH_MAX_LEN + NAME_MAX_LEN + 1];
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

/* Set before load by user space: -1 keys containers by their cgroup v2 id,
 * otherwise by the id of their cgroup in this v1 controller hierarchy. */
const volatile __s32 cgroup_v1_subsys = -1;

/* cgroup2 path prefixes ("/docker/") under which a new cgroup is tracked
 * the moment it is created, before a runtime can name its container. */
#define EARLY_PREFIXES 4
#define EARLY_PREFIX_LEN 64
const volatile char early_prefix[EARLY_PREFIXES][EARLY_PREFIX_LEN] = {};
const volatile __u32 early_prefix_len[EARLY_PREFIXES] = {};

/* FMODE_BACKING of this kernel (a macro, so no CO-RE): set by user space
 * from the kernel version; 0 where overlayfs has no backing files. */
const volatile __u32 fmode_backing = 0;

/* Tracked cgroups on cgroup2: the state hangs off the cgroup itself, so an
 * untracked task costs three loads and a NULL check. */
struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cgroup_state);
} inuse_cgstate SEC(".maps");

/* Tracked cgroups on the v1 fallback: id -> slot -> state. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} inuse_v1_tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct cgroup_state);
} inuse_v1_state SEC(".maps");

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
	__uint(max_entries, 8 << 20);
} inuse_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} inuse_scratch SEC(".maps");

/* The state of the current task's cgroup, or NULL when it is not tracked. */
static __always_inline struct cgroup_state *tracked_state(void)
{
	if (cgroup_v1_subsys < 0) {
		struct task_struct *task = bpf_get_current_task_btf();
		struct cgroup *cgrp = task->cgroups->dfl_cgrp;
		/* No cgroup storage at all: untracked, without a helper call. */
		if (!cgrp->bpf_cgrp_storage)
			return NULL;
		return bpf_cgrp_storage_get(&inuse_cgstate, cgrp, 0, 0);
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

static __always_inline void count_loss(struct cgroup_state *st)
{
	__sync_fetch_and_add(&st->losses, 1);
}

static __always_inline void fill_header(struct event_header *hdr, __u64 cgroup_id, __u8 kind)
{
	hdr->cgroup_id = cgroup_id;
	hdr->timestamp_ns = bpf_ktime_get_ns();
	hdr->pid = bpf_get_current_pid_tgid() >> 32;
	hdr->kind = kind;
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&inuse_scratch, &zero);
}

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

/* One step of the walk, as a bpf_loop callback so that the verifier checks
 * it once instead of once per component and call site. */
static long path_walk_step(__u64 index, struct path_walk *w)
{
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
	struct scratch *s = get_scratch();
	if (!s)
		return 1;
	struct qstr name;
	BPF_CORE_READ_INTO(&name, dentry, d_name);
	__u32 len = name.len & NAME_MAX_LEN;
	__u32 off = w->off;
	if (len + 1 >= off)
		return 1;
	off -= len;
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
	struct path_walk w = {
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt),
		.root_dentry = root.dentry,
		.root_mnt = root.mnt,
		.off = PATH_MAX_LEN,
		.truncated = 1,
	};
	bpf_loop(MAX_PATH_DEPTH, path_walk_step, &w, 0);
	*truncated = w.truncated;
	__u32 off = w.off;
	if (off >= PATH_MAX_LEN) {
		off = PATH_MAX_LEN - 1;
		s->buf[off] = '/';
	}
	return off;
}

/* Turns a pointer read with bpf_probe_read_kernel back into a BTF pointer,
 * so that its fields are read with plain loads. The verifier inlines it. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

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

/* Reports an opened or mapped file once per (cgroup, device, inode, access). */
static __always_inline void report_file(struct cgroup_state *st, struct file *file, __u16 access)
{
	struct inode *inode = file->f_inode;
	struct file_key key = {
		.cgroup_id = st->cgroup_id,
		.ino = inode->i_ino,
		.dev = inode->i_sb->s_dev,
		.access = access,
	};
	struct recent_file *recent = &st->recent[(key.ino ^ key.dev ^ access) & (RECENT_FILES - 1)];
	if (recent->ino == key.ino && recent->dev == key.dev && recent->access == access)
		return;
	if (bpf_map_lookup_elem(&inuse_file_seen, &key)) {
		recent->ino = key.ino;
		recent->dev = key.dev;
		recent->access = access;
		return;
	}

	struct scratch *s = get_scratch();
	if (!s)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file_event *ev = &s->file.ev;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_FILE);
	ev->ino = key.ino;
	ev->dev = key.dev;
	ev->mode = inode->i_mode;
	ev->access = access;

	struct path fpath;
	BPF_CORE_READ_INTO(&fpath, file, f_path);
	__u32 off = resolve_path(s, task, fpath.dentry, fpath.mnt, &ev->truncated);
	__u32 len = (PATH_MAX_LEN - off) & (PATH_MAX_LEN - 1);
	ev->path_len = len;
	bpf_probe_read_kernel(s->file.path, len, &s->buf[off & (PATH_MAX_LEN - 1)]);

	if (bpf_ringbuf_output(&inuse_events, ev, sizeof(*ev) + len, 0)) {
		count_loss(st);
		return;
	}
	__u8 seen = 1;
	bpf_map_update_elem(&inuse_file_seen, &key, &seen, BPF_ANY);
	recent->ino = key.ino;
	recent->dev = key.dev;
	recent->access = access;
}

static __always_inline void handle_open(struct cgroup_state *st, long fd)
{
	struct file *file = fd_file(fd);
	if (!file)
		return;
	__u32 fmode = file->f_mode;
	__u16 access = 0;
	if (fmode & FMODE_READ)
		access |= ACCESS_READ;
	if (fmode & FMODE_WRITE)
		access |= ACCESS_WRITE;
	if (fmode & FMODE_CREATED)
		access |= ACCESS_CREATE;
	report_file(st, file, access);
}

static __always_inline void report_port(struct cgroup_state *st, __u16 family, __u8 protocol, __u8 direction,
					__u8 op, __u16 port)
{
	if (port == 0)
		return;
	struct net_key key = {
		.cgroup_id = st->cgroup_id,
		.port = port,
		.protocol = protocol,
		.direction = direction,
	};
	if (bpf_map_lookup_elem(&inuse_net_seen, &key))
		return;

	struct scratch *s = get_scratch();
	if (!s)
		return;
	struct net_event *ev = &s->net;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_NET);
	ev->port = port;
	ev->family = family;
	ev->protocol = protocol;
	ev->direction = direction;
	ev->op = op;
	if (bpf_ringbuf_output(&inuse_events, ev, sizeof(*ev), 0)) {
		count_loss(st);
		return;
	}
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

static __always_inline void handle_socket(struct cgroup_state *st, long fd, __u8 op, const void *user_addr)
{
	struct file *file = fd_file(fd);
	if (!file)
		return;
	umode_t mode = file->f_inode->i_mode;
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

static __always_inline void mark_syscall(struct cgroup_state *st, long nr)
{
	if (nr < 0 || nr >= MAX_SYSCALL)
		return;
	__u64 bit = 1ULL << (nr & 63);
	__u64 *word = &st->syscalls.words[(nr >> 6) & (SYSCALL_WORDS - 1)];
	if (!(*word & bit))
		__sync_fetch_and_or(word, bit);
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
	mark_syscall(st, nr);

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
				report_file(st, file, ACCESS_MAP_EXEC);
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
	unsigned int flags = BPF_CORE_READ(task, signal, flags);
	mark_syscall(st, (flags & SIGNAL_GROUP_EXIT) ? NR_EXIT_GROUP : NR_EXIT);
	return 0;
}

struct vma_file {
	struct file *file;
};

static long vma_file_cb(struct task_struct *task, struct vm_area_struct *vma, struct vma_file *out)
{
	out->file = BPF_CORE_READ(vma, vm_file);
	return 0;
}

/* Emits one exec record, once per (cgroup, file, role) when it names a file.
 * The path comes from the file, else from dir;
 * aux is a user string (argv[0]) or a kernel string (the argv filename). */
static __always_inline void report_exec(struct cgroup_state *st, __u8 role, struct file *file, struct path *dir,
					const char *aux, bool aux_user)
{
	struct scratch *s = get_scratch();
	if (!s)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_event *ev = &s->exec.ev;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_EXEC);
	ev->role = role;
	ev->ino = 0;
	ev->dev = 0;
	ev->path_len = 0;
	ev->truncated = 0;

	struct path p;
	struct file_key key = {.cgroup_id = st->cgroup_id, .access = role == EXEC_LOADER ? ACCESS_LOADER : ACCESS_EXEC};
	if (file) {
		/* A mapping of an overlayfs file holds the lower layer's file
		 * (a backing file): the path the task knows is its user_path. */
		if (fmode_backing && (BPF_CORE_READ(file, f_mode) & fmode_backing) && bpf_core_type_exists(struct backing_file))
			BPF_CORE_READ_INTO(&p, (struct backing_file *)file, user_path);
		else
			BPF_CORE_READ_INTO(&p, file, f_path);
		struct inode *inode = BPF_CORE_READ(p.dentry, d_inode);
		key.ino = BPF_CORE_READ(inode, i_ino);
		key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
		if (bpf_map_lookup_elem(&inuse_file_seen, &key))
			return;
		ev->ino = key.ino;
		ev->dev = key.dev;
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
	if (bpf_ringbuf_output(&inuse_events, ev, size, 0)) {
		count_loss(st);
		return;
	}
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

	struct task_struct *task = bpf_get_current_task_btf();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	const char *argv0 = (const char *)BPF_CORE_READ(mm, arg_start);
	report_exec(st, EXEC_BINARY, BPF_CORE_READ(bprm, file), NULL, argv0, true);

	const char *filename = BPF_CORE_READ(bprm, filename);
	if (filename != BPF_CORE_READ(bprm, interp)) {
		/* binfmt_script replaced interp; the script's file is closed by now,
		 * so report its name and, when relative, the cwd it is relative to. */
		char first = 0;
		bpf_probe_read_kernel(&first, 1, filename);
		struct path pwd;
		BPF_CORE_READ_INTO(&pwd, task, fs, pwd);
		report_exec(st, EXEC_SCRIPT, NULL, first == '/' ? NULL : &pwd, filename, false);
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
		struct vma_file loader = {};
		bpf_find_vma(task, base, vma_file_cb, &loader, 0);
		if (loader.file)
			report_exec(st, EXEC_LOADER, loader.file, NULL, NULL, false);
	}
	return 0;
}

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
	struct cgroup_state *st = bpf_cgrp_storage_get(&inuse_cgstate, cgrp, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->cgroup_id = cgrp->kn->id;

	struct cgroup_event *ev = &s->cgroup.ev;
	fill_header(&ev->hdr, st->cgroup_id, EVENT_MKDIR);
	__u32 len = (n - 1) & (PATH_MAX_LEN - 1);
	ev->path_len = len;
	if (bpf_ringbuf_output(&inuse_events, ev, sizeof(*ev) + len, 0))
		count_loss(st);
	return 0;
}
