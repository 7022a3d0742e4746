/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What differs between architectures: the numbers of the syscalls the sensor
 * decodes and where sys_exit finds their arguments.
 */
#pragma once

#include "vmlinux.h"

/* Syscall numbers this sensor decodes; agreement_test.go checks them against
 * internal/syscalls. */
#if defined(__TARGET_ARCH_x86)
enum syscall_nr {
	NR_OPEN = 2,
	NR_OPENAT = 257,
	NR_OPENAT2 = 437,
	NR_CREAT = 85,
	NR_MMAP = 9,
	NR_CONNECT = 42,
	NR_ACCEPT = 43,
	NR_ACCEPT4 = 288,
	NR_SENDTO = 44,
	NR_SENDMSG = 46,
	NR_SENDMMSG = 307,
	NR_BIND = 49,
	NR_LISTEN = 50,
	NR_EXIT = 60,
	NR_EXIT_GROUP = 231,
};
/* The syscall number and arguments, still in pt_regs at sys_exit. */
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#define SYSCALL_ARG1(regs) ((regs)->di)
#define SYSCALL_ARG2(regs) ((regs)->si)
#define SYSCALL_ARG3(regs) ((regs)->dx)
#define SYSCALL_ARG5(regs) ((regs)->r8)
#elif defined(__TARGET_ARCH_arm64)
enum syscall_nr {
	NR_OPENAT = 56,
	NR_OPENAT2 = 437,
	NR_MMAP = 222,
	NR_CONNECT = 203,
	NR_ACCEPT = 202,
	NR_ACCEPT4 = 242,
	NR_SENDTO = 206,
	NR_SENDMSG = 211,
	NR_SENDMMSG = 269,
	NR_BIND = 200,
	NR_LISTEN = 201,
	NR_EXIT = 93,
	NR_EXIT_GROUP = 94,
};
/* The arm64 registers of struct pt_regs, named so that CO-RE finds them in
 * the running kernel whichever dump vmlinux.h holds (see vmlinux.h). A
 * kernel type: -Wpadded does not apply. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
struct pt_regs___inuse_arm64 {
	__u64 regs[31];
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));
#pragma clang diagnostic pop
/* The syscall number and arguments, still in pt_regs at sys_exit. */
#define ARM64_REGS(regs) ((struct pt_regs___inuse_arm64 *)(regs))
#define SYSCALL_NR(regs) (ARM64_REGS(regs)->syscallno)
#define SYSCALL_ARG1(regs) (ARM64_REGS(regs)->orig_x0)
#define SYSCALL_ARG2(regs) (ARM64_REGS(regs)->regs[1])
#define SYSCALL_ARG3(regs) (ARM64_REGS(regs)->regs[2])
#define SYSCALL_ARG5(regs) (ARM64_REGS(regs)->regs[4])
#endif
