package sensor

// Every named enum and record of events.h and cgroup.h is generated, so C is
// the single source of the wire format (agreement_test.go checks it).
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event_kind -type event_source -type access -type exec_role -type file_origin -type net_op -type net_direction -type event_header -type file_event -type exec_event -type net_event -type cgroup_event -type cgroup_limits -type entrypoint_state -type syscall_bits -type cgroup_state sensor sensor.bpf.c -- -I../include -Wall -Wpadded -O2 -g

// The same programs for older kernels, chosen at load (variant.go): without
// kfuncs and cgroup storage (before 6.2), and also without bpf_loop and
// bpf_find_vma callbacks (before 5.17) and atomics other than add (5.12).
//go:generate go tool bpf2go -tags linux -target amd64,arm64 sensorcompat sensor.bpf.c -- -I../include -Wall -Wpadded -O2 -g -DINUSE_NO_KFUNCS
//go:generate go tool bpf2go -tags linux -target amd64,arm64 sensorlegacy sensor.bpf.c -- -I../include -Wall -Wpadded -O2 -g -DINUSE_NO_KFUNCS -DINUSE_NO_CALLBACKS -DINUSE_NO_ATOMIC_OR
