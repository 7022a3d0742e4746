package testutil

import "github.com/cilium/ebpf/link"

// UprobePaths lists the files of the uprobe links the kernel holds, as
// the kernel names them (uprobe_multi links and perf-event uprobes).
func UprobePaths() ([]string, error) {
	var paths []string
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue // gone meanwhile, or a type this library cannot read
		}
		if m := info.UprobeMulti(); m != nil {
			paths = append(paths, m.File)
		}
		if pe := info.PerfEvent(); pe != nil {
			if u := pe.Uprobe(); u != nil {
				paths = append(paths, u.File)
			}
		}
	}
	return paths, it.Err()
}
