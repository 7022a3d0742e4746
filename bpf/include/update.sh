#!/usr/bin/env bash
# Refreshes the vendored headers: the kernel's BTF dump for this machine's
# architecture and libbpf's BPF-side headers (BSD-2-Clause, see LICENSE.BSD-2-Clause).
# Only vmlinux_amd64.h is vendored: the arm64 objects are built against it,
# which CO-RE allows (vmlinux.h says why). Run this on an arm64 machine to add
# vmlinux_arm64.h, which vmlinux.h then prefers.
set -euo pipefail
cd "$(dirname "$0")"
case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "vmlinux_${arch}.h"
for f in bpf_helpers.h bpf_helper_defs.h bpf_core_read.h bpf_tracing.h bpf_endian.h; do
	cp "/usr/include/bpf/$f" .
done
