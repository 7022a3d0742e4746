package sensor

//go:generate go tool bpf2go -tags linux -target amd64 -type event_header -type file_event -type exec_event -type net_event -type syscall_bits -type cgroup_state -type cgroup_event sensor sensor.bpf.c -- -I../include -Wall -Wpadded -O2 -g
