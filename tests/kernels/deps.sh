#!/usr/bin/env bash
# Installs what tests/kernels/run.sh needs and is missing on a Debian
# machine: qemu for both architectures, cpio and the decompressors of
# Debian's kernel modules. Idempotent, like scripts/deps.sh.
set -euo pipefail

declare -A need=(
	[qemu-system-x86_64]=qemu-system-x86
	[qemu-system-aarch64]=qemu-system-arm
	[cpio]=cpio
	[xz]=xz-utils
	[zstd]=zstd
	[flock]=util-linux
	[modinfo]=kmod
)
missing=()
for what in "${!need[@]}"; do
	command -v "$what" >/dev/null 2>&1 || missing+=("${need[$what]}")
done
((${#missing[@]} == 0)) && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) != 0 ]]; then
	echo "missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
