#!/usr/bin/env bash
# Installs what inuse needs on a Debian machine and is missing: the BPF
# toolchain (only for `make generate`), redis-server and busybox-static
# (tests and the demo). Idempotent: installs nothing when all is present.
set -euo pipefail

# command or file -> Debian package
declare -A need=(
	[clang-19]=clang-19
	[llvm-strip-19]=llvm-19
	[/usr/include/bpf/bpf_helpers.h]=libbpf-dev
	[bpftool]=bpftool
	[redis-server]=redis-server
	[busybox]=busybox-static
	[jq]=jq
	[debootstrap]=debootstrap
	[/usr/include/x86_64-linux-gnu/asm/unistd_64.h]=linux-libc-dev
	[/usr/include/asm-generic/unistd.h]=linux-libc-dev
	[rpmbuild]=rpm # scanner ownership tests build and install an rpm
	[chromium]=chromium # api web page tests drive headless Chromium (chromedp)
	[systemd-analyze]=systemd # packaging tests verify the systemd units
	[setpriv]=util-linux # packaging tests run the agent with the chart's capabilities only; unshare for the agent's seeding test
	[javac]=openjdk-17-jdk-headless # tests/dayone builds the jars of its JVM container
	[jar]=openjdk-17-jdk-headless
)
missing=()
for what in "${!need[@]}"; do
	if [[ $what == /* ]]; then
		[[ -e $what ]] && continue
	else
		command -v "$what" >/dev/null 2>&1 && continue
	fi
	missing+=("${need[$what]}")
done
if ((${#missing[@]} == 0)); then
	exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) != 0 ]]; then
	echo "missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
