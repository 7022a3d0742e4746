package sensor

// Every named enum and record of events.h and cgroup.h is generated, so C is
// the single source of the wire format (agreement_test.go checks it).
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event_kind -type access -type exec_role -type file_origin -type net_op -type net_direction -type event_header -type file_event -type exec_event -type net_event -type cgroup_event -type cgroup_limits -type syscall_bits -type cgroup_state sensor sensor.bpf.c -- -I../include -Wall -Wpadded -O2 -g
