#!/usr/bin/env bash
# With CI=true, `make test` must run every privileged test: fail at once,
# saying what is missing, rather than let them skip (or fail one by one).
set -euo pipefail
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (euid is $(id -u))")
[ -r /sys/kernel/btf/vmlinux ] || missing+=("kernel BTF (/sys/kernel/btf/vmlinux)")
command -v redis-server >/dev/null || missing+=("redis-server (make deps)")
if [ ${#missing[@]} -gt 0 ]; then
	echo "CI=true but the privileged tests cannot run here; missing:" >&2
	printf '  - %s\n' "${missing[@]}" >&2
	echo "CI must run them: use a root runner on a kernel with BTF, after make deps" >&2
	exit 1
fi
