/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Dispatches to the BTF dump of the target architecture (see update.sh).
 *
 * arm64 without its own dump: the programs are CO-RE, so a kernel type here
 * only names the fields they read; cilium/ebpf (like libbpf) relocates each
 * access by name against the running kernel's BTF when the object loads.
 * The amd64 dump thus serves arm64 for the arch-neutral types (task_struct,
 * file, dentry, mount, cgroup, ...). The arch-specific bits, struct pt_regs
 * (an arm64 CO-RE flavour) and the syscall numbers, are in
 * bpf/sensor/syscall.h. A field the arm64 kernel lacks fails the load with
 * a CO-RE error, never silently. Running update.sh on an arm64 machine adds
 * vmlinux_arm64.h, which is then used instead. */
#pragma once
/* -Wpadded is for our own structs, not the kernel's. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#if defined(__TARGET_ARCH_x86)
#include "vmlinux_amd64.h"
#elif defined(__TARGET_ARCH_arm64) && __has_include("vmlinux_arm64.h")
#include "vmlinux_arm64.h"
#elif defined(__TARGET_ARCH_arm64)
#include "vmlinux_amd64.h"
#else
#error "no vmlinux header for this architecture: dump one with bpf/include/update.sh on such a machine"
#endif
#pragma clang diagnostic pop
