package sensor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelFS lists the pseudo file systems BPF tooling expects: tracefs for
// tracepoint ids, bpffs for pinned objects. Nodes and minimal containers
// often come up without them.
var kernelFS = []struct{ dir, fstype string }{
	{"/sys/kernel/tracing", "tracefs"},
	{"/sys/fs/bpf", "bpf"},
}

// MountKernelFS mounts tracefs and bpffs where they are missing and
// returns the mount points it mounted.
func MountKernelFS() ([]string, error) {
	mounted, err := mountedTypes()
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for _, m := range kernelFS {
		if mounted[m.dir] == m.fstype {
			continue
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil {
			errs = append(errs, fmt.Errorf("mounting %s at %s: %w", m.fstype, m.dir, err))
			continue
		}
		done = append(done, m.dir)
	}
	return done, errors.Join(errs...)
}

// mountedTypes maps mount points to file system types.
func mountedTypes() (map[string]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 {
			out[fields[1]] = fields[2]
		}
	}
	return out, sc.Err()
}
