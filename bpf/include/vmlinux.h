/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Dispatches to the BTF dump of the target architecture (see update.sh). */
/* -Wpadded is for our own structs, not the kernel's. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#if defined(__TARGET_ARCH_x86)
#include "vmlinux_amd64.h"
#else
#error "no vmlinux header for this architecture: dump one with bpf/include/update.sh on such a machine"
#endif
#pragma clang diagnostic pop
