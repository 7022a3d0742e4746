#!/usr/bin/env bash
# The demo: profile a real command with the kernel sensor and show what it
# loaded. Run by `make demo` after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
	echo "inuse demo: the sensor loads BPF programs and creates cgroups, so it needs root: sudo make demo" >&2
	exit 1
fi
if [[ ! -r /sys/kernel/btf/vmlinux ]]; then
	echo "inuse demo: this kernel has no BTF (/sys/kernel/btf/vmlinux): the sensor needs CONFIG_DEBUG_INFO_BTF=y" >&2
	exit 1
fi

out=${INUSE_DEMO_DIR:-$(mktemp -d /tmp/inuse-demo.XXXXXX)}
events=$out/events.jsonl
workload=(sh -c 'ls /etc | sort | head -n 3 >/dev/null; cat /etc/os-release >/dev/null; getent hosts localhost >/dev/null || true')

echo "== profiling: ${workload[*]}"
bin/inuse-agent --log-level warn exec --output "$events" -- "${workload[@]}"

section() { printf '\n== %s\n' "$1"; }
section "executed (binary, script, ELF loader)"
jq -r 'select(.kind=="exec") | "  \(.role)\t\(.path)"' "$events" | sort -u
section "shared libraries mapped executable"
jq -r 'select(.kind=="file" and (.access|index("map_exec"))) | "  \(.path)"' "$events" | sort -u
section "files read (first 15)"
jq -r 'select(.kind=="file" and (.access|index("read")) and (.dir|not)) | "  \(.path)"' "$events" | sort -u | head -n 15
section "files written"
jq -r 'select(.kind=="file" and (.access|index("write"))) | "  \(.path)"' "$events" | sort -u
section "ports"
jq -r 'select(.kind=="net") | "  \(.protocol) \(.direction) \(.port) (\(.op))"' "$events" | sort -u
section "syscalls"
jq -r 'select(.kind=="syscalls") | .names[]' "$events" | sort -u | tr '\n' ' ' | fold -s -w 76 | sed 's/^/  /'
echo
section "summary"
printf '  %s events, %s distinct syscalls, lost: %s\n' \
	"$(wc -l <"$events")" \
	"$(jq -r 'select(.kind=="syscalls") | .names[]' "$events" | sort -u | wc -l)" \
	"$(jq -s '[.[] | select(.kind=="loss") | .lost] | add // 0' "$events")"
echo "  all events, one JSON object per line: $events"
