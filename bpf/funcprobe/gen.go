package funcprobe

// The hit record of funcprobe.bpf.c is generated, so C is the single source
// of its layout.
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type func_hit funcprobe funcprobe.bpf.c -- -I../include -Wall -Wpadded -O2 -g

// The same program for kernels without cgroup storage (before 6.2), whose
// sensor keeps tracked cgroups in a hash map (bpf/sensor/variant.go).
//go:generate go tool bpf2go -tags linux -target amd64,arm64 funcprobecompat funcprobe.bpf.c -- -I../include -Wall -Wpadded -O2 -g -DINUSE_NO_KFUNCS
