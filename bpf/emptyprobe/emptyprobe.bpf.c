//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// An empty program on the hook the sensor uses: the floor of what hooking
// every syscall exit costs, measured by bench/openclose.

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_tracing.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sys_exit")
int BPF_PROG(inuse_empty_exit, struct pt_regs *regs, long ret)
{
	return 0;
}
