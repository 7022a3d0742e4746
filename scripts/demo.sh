#!/usr/bin/env bash
# The demo (`make demo`, after `make deps build`): Redis, the agent and
# `inuse serve` on this machine, real workloads in a Debian image, a scan,
# and the In Use report. Everything lives in a temporary directory and is
# stopped at the end unless DEMO_KEEP=1. The workload runs as a container
# of a private dockerd when dockerd is installed, else (or with
# DEMO_RUNTIME=exec) under `inuse-agent exec` chrooted into the image.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
die() { printf 'inuse demo: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) != 0 ]]; then
	die "the agent loads BPF programs and creates cgroups, so the demo needs root.
  What to do: sudo make demo"
fi
if [[ ! -r /sys/kernel/btf/vmlinux ]]; then
	die "this kernel has no BTF (/sys/kernel/btf/vmlinux): the agent's BPF programs need a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 6.2 or later).
  What to do: run the demo on a distribution kernel (Debian 12+, Ubuntu 22.04+, Fedora) or a VM with one."
fi
for cmd in redis-server debootstrap jq; do
	command -v "$cmd" >/dev/null || die "$cmd is missing: run make deps (scripts/deps.sh installs it)"
done

out=${INUSE_DEMO_DIR:-$(mktemp -d /tmp/inuse-demo.XXXXXX)}
mkdir -p "$out"
cache=$out/cache
pids=()
dockerd_pid=
cleanup() {
	local code=$?
	if [[ ${DEMO_KEEP:-} == 1 && $code == 0 ]]; then
		return
	fi
	say "stopping"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	if [[ -n $dockerd_pid ]]; then kill -TERM "$dockerd_pid" 2>/dev/null || true; fi
	for pid in "${pids[@]}" $dockerd_pid; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [[ -n $dockerd_pid ]]; then
		umount -R -l "$out/docker/root" "$out/docker/exec" 2>/dev/null || true
		rm -rf "$out/docker/root" # the image's layers
	fi
	echo "  stopped; logs and state kept in $out"
	exit "$code"
}
trap cleanup EXIT

# free_port prints a free loopback TCP port.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
	done
}
# wait_for runs its arguments until they succeed (30 s at most).
wait_for() {
	for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# The Debian image: a bookworm minbase root, debootstrapped once per
# machine (the same cache the tests use).
root=$HOME/.cache/inuse/testdata/bookworm-minbase-v1
if [[ ! -f $root/var/lib/dpkg/status ]]; then
	say "debootstrapping Debian bookworm into $root (once per machine, ~2 min)"
	rm -rf "$root.tmp"
	debootstrap --variant=minbase bookworm "$root.tmp" "${INUSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$out/debootstrap.log" 2>&1 ||
		die "debootstrap failed (no network to deb.debian.org? set INUSE_DEBIAN_MIRROR): see $out/debootstrap.log"
	mv "$root.tmp" "$root"
fi

# The vulnerability database: the user's when there is one, else the demo's.
if db_status=$(bin/inuse db status 2>/dev/null); then
	db_dir=$(bin/inuse db status --format json | jq -r '.path // empty' | xargs -r dirname | xargs -r dirname)
	db_dir=${db_dir:-$HOME/.cache/inuse/db}
	say "vulnerability database: yours"
	sed 's/^/  /' <<<"$db_status"
else
	db_dir=$cache/db
	say "vulnerability database: the DEMO database (4 made-up advisories CVE-2099-*, not real findings)"
	echo "  no grype database is installed (inuse db update downloads the real one; it cannot be downloaded here)"
	bin/inuse --log-level warn db import --db-dir "$db_dir" "$(go run ./scripts/demodb "$out/demodb")" 2>/dev/null | sed 's/^/  /'
fi

redis_port=$(free_port)
redis_url=redis://127.0.0.1:$redis_port
say "starting redis-server on 127.0.0.1:$redis_port"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$out" --save '' --appendonly no --logfile "$out/redis.log" &
pids+=($!)
wait_for redis-cli -p "$redis_port" ping || die "redis-server did not start: see $out/redis.log"

learning=(--min-observed 5s --stable-window 5s) # minutes in production
workload=(sh -c 'cat /etc/debian_version >/dev/null; fsck.cramfs -V >/dev/null')
image=inuse-demo/debian:bookworm

if [[ ${DEMO_RUNTIME:-docker} == docker ]] && command -v dockerd >/dev/null && command -v docker >/dev/null; then
	say "starting a private dockerd (state in $out/docker)"
	mkdir -p "$out/docker"
	export DOCKER_HOST=unix://$out/docker/docker.sock
	setsid dockerd --data-root "$out/docker/root" --exec-root "$out/docker/exec" -H "$DOCKER_HOST" \
		--pidfile "$out/docker/dockerd.pid" --bridge=none --iptables=false --ip-forward=false >"$out/docker/dockerd.log" 2>&1 &
	dockerd_pid=$!
	wait_for docker info || die "dockerd did not start: see $out/docker/dockerd.log"
	tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$image" >/dev/null
	digest=$(docker image inspect -f '{{.Id}}' "$image")
	echo "  image $image $digest"

	say "starting the agent: inuse-agent run (Docker events; NRI when containerd has it)"
	nri=/var/run/nri/nri.sock
	[[ -S $nri ]] || nri=""
	bin/inuse-agent --log-level info run --redis "$redis_url" --flush-interval 200ms --node-name demo \
		--nri-socket "$nri" >"$out/agent.log" 2>&1 &
	pids+=($!)
	wait_for grep -q "agent running" "$out/agent.log" || die "the agent did not start: see $out/agent.log"

	say "running a container: docker run $image ${workload[*]}"
	docker run --rm --network none --name inuse-demo-app "$image" "${workload[@]}"
else
	if [[ ${DEMO_RUNTIME:-docker} == docker ]]; then
		echo "  dockerd is not installed (scripts/runtimes.sh installs Debian's docker.io): profiling with inuse-agent exec instead"
	fi
	digest=""
	say "running in the Debian root: inuse-agent exec --root ... ${workload[*]}"
	bin/inuse-agent --log-level warn exec --redis "$redis_url" --image-name "$image" --root "$root" -- "${workload[@]}"
fi

say "scanning: inuse scan (syft + grype over the image, cached per digest)"
scan=(bin/inuse --log-level warn scan --rootfs "$root" --image-name "$image" --cache-dir "$cache" --db-dir "$db_dir" --redis "$redis_url" "${learning[@]}")
[[ -n $digest ]] && scan+=(--image-digest "$digest")
"${scan[@]}" --format json >"$out/report.json"
digest=$(jq -r .digest "$out/report.json")

admin=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$admin" >"$out/admin-token"
chmod 600 "$out/admin-token"
port=$(free_port)
say "starting inuse serve on 127.0.0.1:$port"
bin/inuse --log-level warn serve --redis "$redis_url" --listen "127.0.0.1:$port" --admin-token-file "$out/admin-token" \
	--cache-dir "$cache" --db-dir "$db_dir" --poll-interval 500ms "${learning[@]}" >"$out/serve.log" 2>&1 &
pids+=($!)
wait_for curl -fsS "http://127.0.0.1:$port/healthz" || die "inuse serve did not start: see $out/serve.log"

say "waiting for the profile to be done (learning windows of 5 s for the demo)"
for _ in $(seq 60); do
	state=$(curl -fsS -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/api/v1/images/$digest" | jq -r .learning_state) || true
	[[ $state == done ]] && break
	sleep 0.5
done
echo "  learning state: $state"

say "the In Use report (inuse scan --format table)"
"${scan[@]}" --image-digest "$digest" --format table

say "packages In Use (GET /api/v1/images/D/packages?in_use=true)"
curl -fsS -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/api/v1/images/$digest/packages?in_use=true&limit=1000" |
	jq -r '.items[] | "  \(.name) \(.version)\t\([.evidence[]?.path] | unique | join(" "))"'
printf '  of %s packages in the image\n' "$(jq '.packages | length' "$out/report.json")"

say "the web page and the API"
echo "  http://127.0.0.1:$port/"
echo "  admin credential: $admin   (also in $out/admin-token)"
echo "  curl -H 'Authorization: Bearer $admin' http://127.0.0.1:$port/api/v1/images/$digest/vulnerabilities?in_use=true"
echo "  an integration token: bin/inuse token create --redis $redis_url --name sysdig"
if [[ ${DEMO_KEEP:-} == 1 ]]; then
	echo
	echo "  DEMO_KEEP=1: redis-server, the agent, inuse serve${dockerd_pid:+ and dockerd} keep running (pids ${pids[*]} $dockerd_pid)"
	echo "  stop them with: kill ${pids[*]} $dockerd_pid"
else
	echo "  (stopping now: DEMO_KEEP=1 make demo leaves them running)"
fi
