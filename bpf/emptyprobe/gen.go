// Package emptyprobe attaches an empty program to sys_exit: the cost floor
// of the sensor's hook, for benchmarks.
package emptyprobe

//go:generate go tool bpf2go -tags linux -target amd64,arm64 emptyprobe emptyprobe.bpf.c -- -I../include -Wall -O2 -g
