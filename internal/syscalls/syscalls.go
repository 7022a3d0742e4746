// Package syscalls names syscall numbers of the architectures inuse runs on.
package syscalls

import (
	"runtime"
	"strconv"
)

// Name returns the name of syscall nr on the architecture arch (GOARCH
// spelling), or "syscall_<nr>" when it is not in the table.
func Name(arch string, nr int) string {
	var table map[int]string
	switch arch {
	case "amd64":
		table = amd64Names
	case "arm64":
		table = arm64Names
	}
	if n, ok := table[nr]; ok {
		return n
	}
	return "syscall_" + strconv.Itoa(nr)
}

// Native names a syscall number of the running architecture.
func Native(nr int) string { return Name(runtime.GOARCH, nr) }
