/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The event ABI: the records the sensor writes to its ring buffer and the
 * values of their fields. bpf2go turns every enum and struct here into Go
 * (gen.go, -type), so user space decodes with what this file says, and
 * agreement_test.go checks the committed Go against the objects' BTF.
 * A field holding an enum has the enum's type, with the field's width as its
 * underlying type, so that BTF (and Go) carry the enum.
 * Layout: largest fields first, explicit padding (-Wpadded).
 */
#pragma once

#include "vmlinux.h"

enum event_kind : __u8 {
	EVENT_FILE = 1,
	EVENT_EXEC = 2,
	EVENT_NET = 3,
	EVENT_MKDIR = 4,
};

/* Access bits of a file event; part of the dedup key. */
enum access : __u16 {
	ACCESS_READ = 1,
	ACCESS_WRITE = 2,
	ACCESS_CREATE = 4,
	ACCESS_MAPPED = 8,  /* mapped executable (a shared library) */
	ACCESS_EXEC = 16,   /* executed (dedup key of exec binaries) */
	ACCESS_LOADER = 32, /* mapped by the kernel as PT_INTERP */
};

/* Where an opened file comes from (origin.h): a layer of the image, the
 * container's own writable layer, or another mount (a volume, tmpfs, /proc). */
enum file_origin : __u8 {
	ORIGIN_IMAGE = 1,
	ORIGIN_CONTAINER = 2,
	ORIGIN_VOLUME = 3,
};

enum exec_role : __u8 {
	EXEC_BINARY = 1, /* the file the kernel ran (the interpreter of a script) */
	EXEC_SCRIPT = 2, /* a #! script: path is the cwd when argv filename is relative */
	EXEC_LOADER = 3, /* the ELF interpreter named by PT_INTERP */
};

enum net_op : __u8 {
	NET_LISTEN = 1,
	NET_ACCEPT = 2,
	NET_CONNECT = 3,
	NET_BIND = 4,
	NET_SEND = 5,
};

enum net_direction : __u8 {
	DIR_IN = 1,
	DIR_OUT = 2,
};

/* Whose doing an event is (runtime.h): the workload's, or an exec
 * session's (docker exec, kubectl exec: a process a runtime started in
 * the running container from outside, and what it started). Part of the
 * dedup keys, so that the workload reports what a session reported first. */
enum event_source : __u8 {
	SOURCE_WORKLOAD = 0,
	SOURCE_EXEC_SESSION = 1,
};

struct event_header {
	__u64 cgroup_id;
	__u64 timestamp_ns; /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u32 pid;
	enum event_kind kind;
	enum event_source source;
	__u8 _pad[2];
};

/* Followed by path_len bytes of path (no NUL). */
struct file_event {
	struct event_header hdr;
	__u64 ino;
	__u32 dev;
	__u32 mode;
	enum access access;
	__u16 path_len;
	__u8 truncated;
	enum file_origin origin;
	__u8 _pad[2];
};

/* Followed by path_len bytes of path, then aux_len bytes: argv[0] for the
 * binary, the argv filename for a script. */
struct exec_event {
	struct event_header hdr;
	__u64 ino;
	__u32 dev;
	__u16 path_len;
	__u16 aux_len;
	enum exec_role role;
	__u8 truncated;
	enum file_origin origin; /* 0 for a script, whose file is closed */
	__u8 _pad[5];
};

struct net_event {
	struct event_header hdr;
	__u16 port;
	__u16 family;
	__u8 protocol;
	enum net_direction direction;
	enum net_op op;
	__u8 _pad;
};

/* A cgroup tracked from its creation (cgroup_mkdir under an early prefix).
 * Followed by path_len bytes of its path in the cgroup2 hierarchy. */
struct cgroup_event {
	struct event_header hdr;
	__u16 path_len;
	__u8 _pad[6];
};
