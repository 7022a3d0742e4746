#!/bin/sh
# /init of the test VMs of run.sh (busybox sh, as PID 1): mounts what a node
# has, loads the modules the tests need, runs each test binary of
# /inuse/packages as root with the privileged tests on, prints
# "INUSE-KERNELS: PASS" or "INUSE-KERNELS: FAIL" and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
/bin/busybox --install -s 2>/dev/null

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
# A hybrid cgroup layout, as on the CI machine: cgroup2 for the sensor, and
# the v1 memory controller for its v1 fallback.
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified /sys/fs/cgroup/memory
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
if ! err=$(mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory 2>&1); then
	export INUSE_NO_CGROUP_V1="mount: $err"
fi
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
ip link set lo up
# Before 5.11 BPF memory is charged to RLIMIT_MEMLOCK; the agent raises it
# at start (rlimit.RemoveMemlock), the test binaries do not.
ulimit -l unlimited

while read -r m; do
	[ -n "$m" ] && insmod "/inuse/modules/$m"
done </inuse/modules/order

echo "INUSE-KERNELS: kernel $(uname -r) $(uname -m)"
[ -e /sys/kernel/btf/vmlinux ] || echo "INUSE-KERNELS: no /sys/kernel/btf/vmlinux"

status=PASS
if [ -f /inuse/bench ]; then
	# Bench mode: the sensor's cost, measured against the untraced loop of
	# the same VM.
	echo "INUSE-KERNELS: bench/openclose $(cat /inuse/bench)"
	# shellcheck disable=SC2046 # the flags, word by word
	/inuse/openclose $(cat /inuse/bench) >/tmp/bench.out || status=FAIL
	sed 's/^/INUSE-BENCH: /' /tmp/bench.out
	echo "INUSE-KERNELS: $status"
	sync
	poweroff -f
fi

run=$(cat /inuse/run)
while read -r pkg; do
	[ -n "$pkg" ] || continue
	echo "INUSE-KERNELS: testing $pkg"
	start=$(date +%s)
	(
		# in a copy of the package's directory, as go test runs a test
		cp -a "/inuse/src/$pkg" "/tmp/$pkg" && cd "/tmp/$pkg" || exit 1
		INUSE_PRIVILEGED_TESTS=1 INUSE_GOFUNC_TARGET=/inuse/gofunc-target \
			"/inuse/$pkg.test" -test.v -test.count=1 -test.timeout=30m ${run:+-test.run "$run"}
	)
	rc=$?
	echo "INUSE-KERNELS: $pkg exit $rc after $(($(date +%s) - start))s"
	[ $rc = 0 ] || status=FAIL
done </inuse/packages

# A node whose agent cannot see the kernel's BTF: /sys/kernel/btf hidden
# under a tmpfs. The sensor must refuse to load, naming the kernel option,
# with --btf too (tp_btf attaches by the kernel's own BTF), and load with
# --btf once the kernel's BTF is at /boot/vmlinux-RELEASE.
if [ -x /inuse/sensor.test ] && [ -e /sys/kernel/btf/vmlinux ]; then
	echo "INUSE-KERNELS: hiding /sys/kernel/btf"
	cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
	mount -t tmpfs -o size=1m tmpfs /sys/kernel/btf
	(
		cd /tmp/sensor || exit 1
		INUSE_PRIVILEGED_TESTS=1 INUSE_KERNEL_BTF_HIDDEN=/tmp/vmlinux.btf \
			/inuse/sensor.test -test.v -test.count=1 -test.run '^TestSensorHiddenKernelBTF$'
	) || status=FAIL
	agent="/inuse/inuse-agent exec --btf /tmp/vmlinux.btf -o /tmp/agent.json --"
	if $agent /bin/true >/tmp/agent.log 2>&1; then
		echo "INUSE-KERNELS: FAIL: the agent loaded without the kernel's BTF"
		status=FAIL
	elif grep -q CONFIG_DEBUG_INFO_BTF /tmp/agent.log; then
		echo "INUSE-KERNELS: agent without the kernel's BTF: $(tail -1 /tmp/agent.log)"
	else
		echo "INUSE-KERNELS: FAIL: the agent's error names no kernel option: $(tail -1 /tmp/agent.log)"
		status=FAIL
	fi
	mkdir -p /boot
	cp /tmp/vmlinux.btf "/boot/vmlinux-$(uname -r)"
	if $agent /bin/cat /etc/hosts >/tmp/agent.log 2>&1 && grep -q '"path":"/etc/hosts"' /tmp/agent.json; then
		echo "INUSE-KERNELS: agent with --btf and the kernel's BTF at /boot: loaded, /etc/hosts reported"
	else
		echo "INUSE-KERNELS: FAIL: the agent with --btf: $(tail -3 /tmp/agent.log)"
		status=FAIL
	fi
	rm -f "/boot/vmlinux-$(uname -r)"
	umount /sys/kernel/btf
fi

echo "INUSE-KERNELS: $status"
sync
poweroff -f
