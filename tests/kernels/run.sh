#!/usr/bin/env bash
# Runs the privileged tests of the sensor and the function probes on
# Debian's own kernels, each booted in a qemu VM: `make test-kernels`.
#
#   tests/kernels/run.sh [KERNEL...]     KERNEL as in kernels.txt (6.1/arm64)
#
# For each kernel it downloads the Debian package with apt, through a private
# sources list and state directory (the machine's apt set-up is untouched),
# builds an initramfs of busybox, Debian's coreutils and libc (a dynamically
# linked /bin/true for the ELF-loader tests), the overlay module and the
# statically linked Go test binaries, boots it (KVM when /dev/kvm exists,
# TCG emulation otherwise) and runs the tests inside as root (init.sh). It
# prints PASS or FAIL per kernel and exits non-zero when one failed. With
# INUSE_KERNELS_BENCH=1 (`make bench-kernels`) each VM runs bench/openclose
# instead of the tests, and its table is printed per kernel.
#
# Environment:
#   INUSE_KERNELS          kernels when none are given (default: the CI matrix)
#   INUSE_KERNELS_PKGS     Go packages to test (default: ./bpf/sensor ./bpf/funcprobe)
#   INUSE_KERNELS_RUN      -test.run pattern (default: all)
#   INUSE_KERNELS_TIMEOUT  wall-clock limit of one VM (default: 40m)
#   INUSE_KERNELS_MEM      VM memory in MiB (default: 2048)
#   INUSE_KERNELS_CPUS     VM CPUs (default: 2)
#   INUSE_KERNELS_LOCK     file to flock while a VM runs, so that heavy test
#                          runs of one machine never overlap (default:
#                          /tmp/inuse-heavy.lock; empty: no lock)
#   INUSE_KERNELS_MIRROR   Debian mirror (default: the machine's, else deb.debian.org)
#   INUSE_KERNELS_BENCH    1: run bench/openclose in each VM instead of the tests
#   INUSE_KERNELS_BENCH_ARGS  its flags (default: -ops 20000 -rounds 5 -events 0)
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/inuse/kernels
default_kernels="5.10/amd64 6.1/amd64 6.1/arm64 6.12/amd64"
pkgs=${INUSE_KERNELS_PKGS:-./bpf/sensor ./bpf/funcprobe}
vm_timeout=${INUSE_KERNELS_TIMEOUT:-40m}
vm_mem=${INUSE_KERNELS_MEM:-2048}
vm_cpus=${INUSE_KERNELS_CPUS:-2}
lock=${INUSE_KERNELS_LOCK-/tmp/inuse-heavy.lock}
bench=${INUSE_KERNELS_BENCH:-}
bench_args=${INUSE_KERNELS_BENCH_ARGS:--ops 20000 -rounds 5 -events 0}
# The userland of every VM (busybox, coreutils, libc) comes from one suite.
userland_suite=bookworm

log() { printf '%s\n' "tests/kernels: $*" >&2; }
die() {
	log "$*"
	exit 2
}

"$here/deps.sh"

mirror() {
	if [[ -n ${INUSE_KERNELS_MIRROR:-} ]]; then
		echo "$INUSE_KERNELS_MIRROR"
		return
	fi
	local m
	m=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 | tr -d ' ' || true)
	echo "${m:-http://deb.debian.org/debian}"
}

# apt_for SUITE: prints the apt options of a private apt set-up for SUITE
# (amd64 and arm64 indexes), updating its lists when older than a day.
apt_for() {
	local suite=$1 dir="$cache/apt/$1"
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $suite main" >"$dir/sources.list"
	: >"$dir/status"
	local opts=(
		-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=-
		-o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/status" -o "Dir::Cache=$dir/cache"
		-o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
	)
	if [[ -z $(find "$dir/lists" -maxdepth 1 -name '*_InRelease' -mmin -1440 2>/dev/null) ]]; then
		log "apt-get update ($suite)"
		apt-get -qq "${opts[@]}" update >&2 || die "apt-get update of $suite failed"
	fi
	printf '%s\n' "${opts[@]}"
}

# fetch_deb SUITE ARCH PACKAGE: downloads PACKAGE:ARCH of SUITE and prints
# the path of the .deb (cached).
fetch_deb() {
	local suite=$1 arch=$2 pkg=$3
	local -a opts
	mapfile -t opts < <(apt_for "$suite")
	local version
	version=$(apt-cache "${opts[@]}" show --no-all-versions "$pkg:$arch" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
	[[ -n $version ]] || die "no $pkg:$arch in $suite"
	local dir="$cache/debs/$suite/$pkg/${version//:/%3a}/$arch"
	if ! compgen -G "$dir/*.deb" >/dev/null; then
		log "apt-get download $pkg:$arch=$version ($suite)"
		mkdir -p "$dir"
		(cd "$dir" && apt-get -qq "${opts[@]}" download "$pkg:$arch=$version" >&2) || die "downloading $pkg:$arch of $suite failed"
	fi
	compgen -G "$dir/*.deb" | head -1
}

# kernel_pkg SUITE ARCH: the linux-image package that linux-image-ARCH of
# SUITE points to.
kernel_pkg() {
	local suite=$1 arch=$2
	local -a opts
	mapfile -t opts < <(apt_for "$suite")
	apt-cache "${opts[@]}" show "linux-image-$arch:$arch" |
		awk -F': ' '/^Depends:/ {print $2; exit}' | tr ',' '\n' |
		grep -oE "linux-image-[0-9][^ ]*-$arch" | head -1
}

# Modules the tests need when the kernel builds them as modules.
modules=(overlay)

# fetch_kernel SUITE ARCH: extracts vmlinuz and the wanted modules of the
# suite's kernel into the cache once; prints the directory.
fetch_kernel() {
	local suite=$1 arch=$2 pkg
	pkg=$(kernel_pkg "$suite" "$arch")
	[[ -n $pkg ]] || die "no kernel for $arch in $suite"
	local deb
	deb=$(fetch_deb "$suite" "$arch" "$pkg")
	local out
	out="$cache/images/$(basename "$deb" .deb)"
	if [[ -s $out/vmlinuz ]]; then
		echo "$out"
		return
	fi
	log "extracting $(basename "$deb")"
	local tmp
	tmp=$(mktemp -d)
	dpkg-deb -x "$deb" "$tmp"
	rm -rf "$out.new"
	mkdir -p "$out.new/modules"
	cp "$tmp"/boot/vmlinuz-* "$out.new/vmlinuz"
	local moddir
	moddir=$(echo "$tmp"/lib/modules/* "$tmp"/usr/lib/modules/* | tr ' ' '\n' | grep -v '\*' | head -1)
	# Wanted modules and what they depend on, in load order.
	local -a order=() todo=("${modules[@]}")
	while ((${#todo[@]})); do
		local m=${todo[0]}
		todo=("${todo[@]:1}")
		local file
		file=$(find "$moddir" -name "$m.ko" -o -name "$m.ko.*" | head -1)
		[[ -n $file ]] || continue # built in
		order=("${file#"$moddir"/}" "${order[@]}")
		local deps
		deps=$(modinfo -F depends "$file" | tr ',' ' ')
		for d in $deps; do
			todo+=("$d")
		done
	done
	local f
	for f in "${order[@]}"; do
		local base
		base=$(basename "$f")
		case $base in
		*.ko.xz) xz -dc "$moddir/$f" >"$out.new/modules/${base%.xz}" ;;
		*.ko.zst) zstd -qdc "$moddir/$f" >"$out.new/modules/${base%.zst}" ;;
		*.ko.gz) gzip -dc "$moddir/$f" >"$out.new/modules/${base%.gz}" ;;
		*) cp "$moddir/$f" "$out.new/modules/$base" ;;
		esac
		basename "${base%%.ko*}.ko" >>"$out.new/modules/order"
	done
	touch "$out.new/modules/order"
	echo "$pkg" >"$out.new/package"
	rm -rf "$tmp" "$out"
	mv "$out.new" "$out"
	echo "$out"
}

# userland ARCH: busybox, coreutils and libc of the userland suite for ARCH,
# extracted once; prints the directory.
userland() {
	local arch=$1 out="$cache/userland/$userland_suite-$1"
	if [[ -x $out/usr/bin/busybox ]]; then
		echo "$out"
		return
	fi
	rm -rf "$out.new"
	mkdir -p "$out.new"
	local p deb
	for p in busybox-static coreutils libc6 libselinux1 libpcre2-8-0 libacl1 libattr1 libgmp10; do
		deb=$(fetch_deb "$userland_suite" "$arch" "$p")
		dpkg-deb -x "$deb" "$out.new"
	done
	# merged /usr, as on Debian 12 and every current distribution
	local d
	for d in bin sbin lib; do
		if [[ -d $out.new/$d && ! -L $out.new/$d ]]; then
			mkdir -p "$out.new/usr/$d"
			cp -a "$out.new/$d/." "$out.new/usr/$d/"
			rm -rf "$out.new/${d:?}"
		fi
		ln -sfn "usr/$d" "$out.new/$d"
	done
	rm -rf "$out.new/usr/share" "$out.new/etc" "$out.new/var"
	rm -rf "$out"
	mv "$out.new" "$out"
	echo "$out"
}

# test_binaries ARCH DIR: the statically linked test binaries of the
# packages, the prebuilt Go program of the function probe tests and the
# agent (init.sh runs it with the kernel's BTF hidden); or, in bench mode,
# the benchmark alone.
test_binaries() {
	local arch=$1 dir=$2 p
	mkdir -p "$dir"
	if [[ -n $bench ]]; then
		(cd "$repo" && CGO_ENABLED=0 GOARCH=$arch go build -trimpath -o "$dir/openclose" ./bench/openclose) ||
			die "building bench/openclose for $arch failed"
		return
	fi
	(cd "$repo" && CGO_ENABLED=0 GOARCH=$arch go build -trimpath -ldflags='-s -w' -o "$dir/inuse-agent" ./cmd/inuse-agent) ||
		die "building the agent for $arch failed"
	for p in $pkgs; do
		local name
		name=$(basename "$p")
		(cd "$repo" && CGO_ENABLED=0 GOARCH=$arch go test -c -trimpath -o "$dir/$name.test" "$p") ||
			die "building the tests of $p for $arch failed"
	done
	(cd "$repo" && CGO_ENABLED=0 GOARCH=$arch go build -trimpath -ldflags='-s -w' -o "$dir/gofunc-target" ./bench/funcprobe/gofunc/target) ||
		die "building the function probe target for $arch failed"
}

# initramfs KERNELDIR USERLAND TESTS OUT: a gzipped newc cpio with init.sh
# as /init.
initramfs() {
	local kdir=$1 uland=$2 tests=$3 out=$4 root
	root=$(mktemp -d)
	cp -a "$uland/." "$root/"
	mkdir -p "$root"/{proc,sys,dev,tmp,root,run,etc,mnt,inuse/modules}
	cp "$kdir"/modules/* "$root/inuse/modules/"
	cp "$tests"/* "$root/inuse/"
	cp "$here/init.sh" "$root/init"
	[[ -e $root/usr/bin/sh ]] || ln -s busybox "$root/usr/bin/sh"
	chmod 0755 "$root/init"
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	echo "root:x:0:" >"$root/etc/group"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
	echo "$pkgs" | tr ' ' '\n' | xargs -n1 basename >"$root/inuse/packages"
	# the files of each package directory (committed objects, testdata)
	local p
	for p in $pkgs; do
		mkdir -p "$root/inuse/src/$(basename "$p")"
		cp -a "$repo/$p/." "$root/inuse/src/$(basename "$p")/"
	done
	echo "${INUSE_KERNELS_RUN:-}" >"$root/inuse/run"
	if [[ -n $bench ]]; then
		echo "$bench_args" >"$root/inuse/bench"
	fi
	(cd "$root" && find . -print0 | cpio --quiet -o -0 -H newc -R 0:0 | gzip -1 >"$out")
	rm -rf "$root"
}

# boot ARCH KERNELDIR INITRD LOG: runs the VM to its end; the console goes
# to LOG and to stderr.
boot() {
	local arch=$1 kdir=$2 initrd=$3 logf=$4
	local -a qemu accel
	if [[ -w /dev/kvm && $arch == "$(dpkg --print-architecture)" ]]; then
		accel=(-accel kvm -cpu host)
	else
		accel=(-accel tcg)
	fi
	case $arch in
	amd64)
		# One TCG thread for all vCPUs: x86 kernels patch their own text
		# (a static key: int3, then an IPI to every CPU), and under
		# QEMU 7.2's multi-threaded TCG another vCPU can still run the
		# int3 after that IPI: the guest oopses when a tracepoint such as
		# sys_exit is switched under load, with or without BPF (README).
		[[ ${accel[1]} == tcg ]] && accel=(-accel tcg,thread=single -cpu max)
		qemu=(qemu-system-x86_64 "${accel[@]}" -append "console=ttyS0 panic=-1 quiet")
		;;
	arm64)
		# pauth-impdef: QEMU's own pointer authentication, far cheaper to
		# emulate than the architected QARMA. One TCG thread here too:
		# under multi-threaded TCG, 6.12's guest missed every event of a
		# test's tracked process now and then (4 runs of 4, a different
		# test each time, right after the sensor attached); with one
		# thread, 3 runs of 3 passed (README).
		[[ ${accel[1]} == tcg ]] && accel=(-accel tcg,thread=single -cpu max,pauth-impdef=on)
		qemu=(qemu-system-aarch64 -M virt "${accel[@]}" -append "console=ttyAMA0 panic=-1 quiet")
		;;
	*) die "unknown architecture $arch" ;;
	esac
	qemu+=(-m "$vm_mem" -smp "$vm_cpus" -nographic -no-reboot -kernel "$kdir/vmlinuz" -initrd "$initrd")
	if [[ -n $bench && ${accel[1]} == tcg* ]]; then
		# The guest's clock counts its own instructions (one a
		# nanosecond), not the host's time: other work on the host
		# changes nothing, and a ratio is the work the sensor adds.
		qemu+=(-icount shift=0,sleep=off)
	fi
	local -a locked=()
	[[ -n $lock ]] && locked=(flock "$lock")
	"${locked[@]}" timeout --foreground "$vm_timeout" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r//g' | tee "$logf" >&2 || true
}

declare -A suite_of arch_of
while read -r name suite arch _; do
	[[ -z $name || $name == \#* ]] && continue
	suite_of[$name]=$suite
	arch_of[$name]=$arch
done <"$here/kernels.txt"

if (($#)); then
	kernels=("$@")
else
	read -ra kernels <<<"${INUSE_KERNELS:-$default_kernels}"
fi
for k in "${kernels[@]}"; do
	[[ -n ${suite_of[$k]:-} ]] || die "unknown kernel $k; known: ${!suite_of[*]}"
done

work="$cache/runs"
mkdir -p "$work"
declare -A built
results=()
failed=0
for k in "${kernels[@]}"; do
	suite=${suite_of[$k]} arch=${arch_of[$k]}
	kdir=$(fetch_kernel "$suite" "$arch")
	uland=$(userland "$arch")
	if [[ -z ${built[$arch]:-} ]]; then
		log "building the test binaries for $arch"
		rm -rf "$work/tests-$arch"
		test_binaries "$arch" "$work/tests-$arch"
		built[$arch]=1
	fi
	tag=${k//\//-}
	initramfs "$kdir" "$uland" "$work/tests-$arch" "$work/$tag.cpio.gz"
	logf="$work/$tag.log"
	log "booting $k: $(cat "$kdir/package") ($suite, $arch); console in $logf"
	start=$(date +%s)
	boot "$arch" "$kdir" "$work/$tag.cpio.gz" "$logf"
	secs=$(($(date +%s) - start))
	verdict=$(grep -aoE '^INUSE-KERNELS: (PASS|FAIL)' "$logf" | tail -1 | cut -d' ' -f2 || true)
	if [[ -z $verdict ]]; then
		verdict="FAIL (no result: VM crashed or timed out after $vm_timeout)"
	fi
	[[ $verdict == PASS ]] || failed=1
	results+=("$(printf '%-12s %-40s %5ss  %s' "$k" "$(cat "$kdir/package")" "$secs" "$verdict")")
	grep -aE '^(--- (PASS|FAIL|SKIP)|INUSE-KERNELS:)' "$logf" | sed "s|^|  $k  |" >&2 || true
	if [[ -n $bench ]]; then
		results+=("$(grep -a '^INUSE-BENCH: ' "$logf" | sed "s|^INUSE-BENCH: |  |")")
	fi
done

printf '\n%-12s %-40s %6s  %s\n' kernel package time result
printf '%s\n' "${results[@]}"
exit "$failed"
